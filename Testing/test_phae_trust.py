"""Issue 14, round 11: what a reader relies on beside PHAE's CBF -- the uncertainty map's calibration, the
report's account of it, and CBF ratios to NAWM -- measured by scripts/phae_world.py trust and
scripts/phae_own_phantom.py (docs/validation.md)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.dsc import phae_step  # noqa: E402
from BBBAnomalyLib.dsc.phae import PHAEModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


def run(phantom, **params):
    m = phantom.masks
    return run_dsc(phantom.signal, DSCParameters(method="phae", kh=1.0, density=1.0, device="cpu", **params),
                   aif_mask=m["aif"], brain_mask=m["brain"], nawm_mask=m["nawm"], tumor_mask=m["tumor"])


def test_uncertainty_summary_counts_uninformative_voxels_and_warns_only_when_they_are_many():
    cbf = np.r_[np.full(75, 0.01), np.full(20, 0.005), np.zeros(5)]
    sd = np.r_[np.full(75, 0.3), np.full(20, 1.2), np.full(5, 2.0)]  # 25 % at or above 100 %
    warnings = []
    out = phae_step._uncertainty_summary(cbf, sd, warnings)
    assert out["uninformative_fraction"] == 0.25 and out["nonpositive_cbf_fraction"] == 0.05
    assert out["percent"]["median"] == pytest.approx(30.0) and out["uninformative_sd_percent"] == 100.0
    assert len(warnings) == 1 and "25 % of the brain" in warnings[0] and "unknown, not as low flow" in warnings[0]
    quiet = []
    sd[75:90] = 0.5  # 10 % left uninformative: below the 20 % warning share
    assert phae_step._uncertainty_summary(cbf, sd, quiet)["uninformative_fraction"] == pytest.approx(0.10)
    assert quiet == []


def test_run_dsc_reports_the_uncertainty_map_it_writes(dsc_phantom):
    res = run(dsc_phantom)
    rep = res.report["phae"]["cbf_uncertainty"]
    brain = res.brain_mask
    sd_map = res.maps["phae_cbf_uncertainty"].data[brain]
    assert rep["uninformative_fraction"] == pytest.approx(float(np.mean(sd_map >= 100.0)), abs=1e-12)
    assert rep["nonpositive_cbf_fraction"] == pytest.approx(float(np.mean(res.maps["cbf"].data[brain] <= 0)), abs=1e-12)
    assert rep["percent"]["n"] == int(brain.sum())
    assert rep["percent"]["median"] == pytest.approx(float(np.median(sd_map)), rel=1e-5)


def test_uncertainty_map_holds_the_truth_on_held_apart_curves_and_flags_every_nonpositive_cbf():
    """Held-apart generator (Georgiou AIF, gamma-dispersed measured AIF), low contrast (gain 1) at SNR 20, where
    PHAE returns CBF <= 0 for part of the curves. Measured (docs/validation.md, round 11): 95 % intervals hold the truth
    in 97-99 % of the informative curves, and every CBF <= 0 is marked uninformative (SD >= 100 %)."""
    pw = _script("phae_world")
    rows = pw.sweep(lambda aif, dt: PHAEModel(aif, dt), snrs=(20,), gains=(1.0,), frame_intervals=(1.6,),
                    n_per_tissue=100, cases=1, log=lambda s: None)
    row = next(r for r in rows if r["method"] == "PHAE")
    assert row["uncertainty_coverage"] >= 0.9, row
    assert row["uncertainty_nonpositive"] > 0.0 and row["uncertainty_nonpositive_flagged"] == 1.0, row
    assert 0.0 < row["uncertainty_informative"] < 1.0
    # the ratio columns are ROI ratios to the case's WM: equal to the metric computed by hand from the ROI biases
    b = {k: row["bias_" + k] / 100.0 + 1.0 for k in pw.SWEEP_TISSUES}
    for k in ("GM", "tumor", "hypoperfused", "early"):
        # float32 ROI means summed in another order: a few float32 epsilons (1.2e-7) apart
        assert row["ratio_bias_" + k] == pytest.approx(100.0 * (b[k] / b["WM"] - 1.0), rel=1e-5)
    classic = next(r for r in rows if r["method"] == "oSVD 0.095")
    assert "uncertainty_coverage" not in classic and "ratio_bias_GM" in classic
    text = pw.trust_tables(rows, "test")
    assert "| 1 | 1.6 | 20 | PHAE |" in text and "Summary (test" in text


def test_own_phantom_ratio_bias_is_what_the_rcbf_map_reads(dsc_phantom):
    mod = _script("phae_own_phantom")
    res = run(dsc_phantom)
    rec = mod.trust_record(dsc_phantom, res)
    m, truth = dsc_phantom.masks, dsc_phantom.truth["cbf"].data
    rim, nawm = m["enhancing"] & ~m["aif"], m["nawm"] & ~m["aif"]
    # the pipeline's rCBF divides by the NAWM mean: its rim mean over the true ratio is the ratio bias
    true_ratio = truth[rim].mean() / truth[nawm].mean()
    assert rec["rim_nawm"] == pytest.approx(100.0 * (res.maps["rcbf"].data[rim].mean() / true_ratio - 1.0), rel=1e-4)
    assert 0.9 <= rec["uncertainty_coverage"] <= 1.0 and "uncertainty_informative" in rec
    osvd = run_dsc(dsc_phantom.signal, DSCParameters(method="osvd", kh=1.0, density=1.0), aif_mask=m["aif"],
                   brain_mask=m["brain"], nawm_mask=m["nawm"], tumor_mask=m["tumor"])
    assert "uncertainty_coverage" not in mod.trust_record(dsc_phantom, osvd)
    line = next(ln for ln in mod.trust_table([{"snr": 50, "method": "w", **rec}]).splitlines() if ln.startswith("| w |"))
    assert line.count("%") >= 5


def test_the_undispersed_aif_oracle_changes_the_measured_aif_and_nothing_else():
    """phae_world.undispersed_measured_aif: the same draws, so the same tissue curves and noise; only the AIF
    differs (the oracle that splits the held-apart miss into the AIF's dispersion and the rest)."""
    pw = _script("phae_world")
    dc = pw.dc

    def case():
        return dc.simulate_curve_case(np.random.default_rng(10_123), 40, dc.HELD_APART, frame_interval=1.6,
                                      n_frames=56, snr=50.0, tissue_gain=4.0)

    dispersed = case()
    with pw.undispersed_measured_aif():
        plain = case()
    again = case()  # restored on leaving the block
    assert dispersed.info["aif_dispersion"] == plain.info["aif_dispersion"] > 0.0
    np.testing.assert_array_equal(dispersed.curves, plain.curves)
    np.testing.assert_array_equal(again.aif, dispersed.aif)
    assert not np.array_equal(plain.aif, dispersed.aif)
    # the baseline frames (before the bolus) carry the same noise draws: only the bolus differs
    np.testing.assert_array_equal(plain.aif[:3], dispersed.aif[:3])


def test_deshrunk_check_undoes_gaussian_shrinkage_and_caps_the_factor():
    """phae_world.Deshrunk (round 11's check): x = mu0 + (m - mu0) / (1 - s^2/s0^2), capped at 2, CBF <= 0 kept."""
    pw = _script("phae_world")
    from types import SimpleNamespace

    mu0, s0 = np.log(0.007), 1.3
    m = np.log(np.array([0.004, 0.012, 0.012, 0.012]))
    s = np.array([0.0, 0.65, 1.2, 0.5])
    check = pw.Deshrunk.__new__(pw.Deshrunk)
    check.prior, check.max_factor = (mu0, s0), 2.0
    check.model = SimpleNamespace(fit=lambda curves, keep_curves=False: SimpleNamespace(
        cbf=np.r_[np.exp(m[:3]), -0.001], cbf_uncertainty=s, tmax=None))
    out = check.fit(None).cbf
    assert out[0] == pytest.approx(0.004, rel=1e-12)  # s = 0: nothing to undo
    assert np.log(out[1]) == pytest.approx(mu0 + (m[1] - mu0) / (1 - 0.25), rel=1e-12)  # s/s0 = 0.5: factor 4/3
    assert np.log(out[2]) == pytest.approx(mu0 + 2.0 * (m[2] - mu0), rel=1e-12)  # (1.2/1.3)^2 = 0.85: capped at 2
    assert out[3] == -0.001
