"""Issue 14, round 12: PHAE and the residue's shape.

- the gamma residues of any transit-time shape (``gamma<k>``) the checks use for shapes nothing was trained on;
- the decoder's optional box mixture (``residue="lorentzian+box"``): its binned kernel, its areas, infer() against
  forward(), and a card round trip;
- ``phae_world.residue_check`` and the sweep by residue shape.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc.phae import PHAEModel, physics  # noqa: E402
from BBBAnomalyLib.dsc.phae.network import PHAE  # noqa: E402
from BBBAnomalyLib.dsc.phae.training import save_weights  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_curves as dc  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_physics as phys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import phae_world  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: torch on one thread


def t(x):
    return torch.as_tensor(np.asarray(x, np.float64))


# --- gamma residues of any shape --------------------------------------------------------------
def test_gamma_shape_names():
    assert phys.gamma_shape("gamma") == phys.GAMMA_RESIDUE_SHAPE == 3.0
    assert phys.gamma_shape("gamma1.5") == 1.5 and phys.gamma_shape("gamma8") == 8.0
    for bad in ("gamma0.5", "gammax", "gamma-2", "gammainf", "exponential", "box"):
        assert phys.gamma_shape(bad) is None
    assert phys.is_residue("gamma8") and phys.is_residue("box") and not phys.is_residue("gamma0.5")
    with pytest.raises(ValueError, match="gamma<k>"):
        phys.residue("gamma0.5", [1.0], 4.0)


def test_gamma_of_shape_one_is_the_exponential_and_every_shape_integrates_to_mtt():
    tt = np.linspace(0.0, 30.0, 301)
    np.testing.assert_allclose(phys.residue("gamma1", tt, 4.0), phys.residue("exponential", tt, 4.0), rtol=0, atol=1e-12)
    for kind in ("gamma1.5", "gamma", "gamma8"):
        r = phys.residue(kind, tt, 4.0)
        assert r[0] == 1.0 and np.all(np.diff(r) <= 1e-15)  # R(0) = 1, non-increasing
        assert phys.residue_integral(kind, 1e3, 4.0) == pytest.approx(4.0, rel=1e-12)
        # the closed-form integral is the integral of R (trapezoid on a fine grid)
        fine = np.linspace(0.0, 7.0, 70001)
        assert phys.residue_integral(kind, 7.0, 4.0) == pytest.approx(np.trapezoid(phys.residue(kind, fine, 4.0), fine),
                                                                      rel=1e-8)


def test_a_shape_nothing_draws_reaches_the_tissue_curves():
    rng = np.random.default_rng(0)
    cc = dc.simulate_curve_case(rng, 4, dc.HELD_APART, frame_interval=1.5, n_frames=60, snr=1e5, tissue_gain=4.0,
                                mtt=4.0, cbv=0.04, delay=0.0, residue="gamma8", concentration_input=False)
    assert list(cc.truth["residue"]) == ["gamma8"] * 4
    assert np.isfinite(cc.curves).all() and cc.curves.max() > 0


# --- the box-mixture decoder --------------------------------------------------------------------
def test_box_kernel_is_the_exact_bin_integral_of_the_box():
    mtt, delay = t([5.0, 2.0, 0.3]), t([0.0, 1.3, 4.7])
    kern = physics.box_kernel(30, mtt, delay).numpy()
    edges = np.arange(31) - 0.5
    for row, (m, d) in enumerate(zip(mtt.numpy(), delay.numpy())):
        cumulative = np.clip(edges - d, 0.0, m)  # ∫_Td^e R = clamp(e - Td, 0, MTT)
        np.testing.assert_allclose(kern[row], np.diff(cumulative), rtol=0, atol=1e-15)
        assert kern[row].sum() == pytest.approx(m, rel=1e-12)  # the whole box lies in the window
    # nothing before the delay: bin 0 = [-0.5, 0.5] is empty, bin 1 = [0.5, 1.5] holds 1.5 - 1.3
    assert kern[1, 0] == 0.0 and kern[1, 1] == pytest.approx(0.2, abs=1e-15)


def test_residue_kernel_is_the_lorentzian_without_a_weight_and_keeps_the_area_with_one():
    n, lead = 4000, 3
    mtt, delay = t([3.0, 8.0, 8.0]), t([0.0, -1.5, 2.2])
    lor = physics.lorentzian_kernel(n, mtt, delay, lead)
    assert torch.equal(physics.residue_kernel(n, mtt, delay, lead), lor)
    assert torch.equal(physics.residue_kernel(n, mtt, delay, lead, t([0.0, 0.0, 0.0])), lor)
    w = t([0.0, 0.4, 1.0])
    mix = physics.residue_kernel(n, mtt, delay, lead, w)
    box = physics.box_kernel(n, mtt, delay, lead)
    torch.testing.assert_close(mix, lor * (1 - w[:, None]) + box * w[:, None], rtol=0, atol=1e-15)
    # the window's area: (1 - w)·(2 MTT/π)·arctan(π(n - ½ - Td)/(2 MTT)) + w·MTT, i.e. MTT for every weight but for
    # the Lorentzian's tail beyond the window (~4 MTT²/(π² n) = 0.02 % here)
    m, d = mtt.numpy(), delay.numpy()
    lor_area = (2 * m / np.pi) * np.arctan(np.pi * (n - 0.5 - d) / (2 * m))
    np.testing.assert_allclose(mix.sum(dim=1).numpy(), (1 - w.numpy()) * lor_area + w.numpy() * m, rtol=1e-12)
    np.testing.assert_allclose(mix.sum(dim=1).numpy(), m, rtol=1e-3)


def test_the_mixture_decoder_fits_a_box_curve_at_its_own_mtt():
    """Grid search of (MTT, delay) by the decoder's MAE on a noiseless box-residue curve: with w = 1 the minimum lies
    at the truth and so does the flow; the Lorentzian alone fits it best at a shorter MTT and a flow far too high
    (why the decoder got the mixture; the trained network did not use it, docs/validation.md round 12)."""
    dt, times = 1.0, np.arange(90) * 1.0
    aif_fn = lambda tt: phys.gamma_variate_aif(tt, arrival=12.0)  # noqa: E731
    aif = aif_fn(times)
    mtt_s, cbv = 4.5, 0.04
    c = phys.tissue_concentration(times, aif_fn, cbv, mtt_s, 0.0, residue="box", fine_dt=0.01)
    mtts = np.linspace(0.5, 12.0, 231) / dt
    delays = np.linspace(0.0, 4.0, 81) / dt
    mm, dd = (v.ravel() for v in np.meshgrid(mtts, delays, indexing="ij"))
    curves = t(np.repeat(c, mm.size, axis=0))
    op = physics.convolution_matrix(t(aif), 0)
    w = torch.ones(90, dtype=torch.float64)
    w[0] = w[-1] = 0.5
    flows = {}
    for weight in (1.0, 0.0):
        kernel = physics.residue_kernel(90, t(mm), t(dd), 0, t(np.full(mm.size, weight)))
        unit = kernel @ op.T
        flow = physics.area(curves) / (unit @ w)
        best = int(torch.argmin((flow[:, None] * unit - curves).abs().mean(dim=1)))
        flows[weight] = (float(flow[best]) / dt, mm[best] * dt)
    truth = cbv / mtt_s
    # 6 %: the AIF sampled every second limits any discrete forward model (as for the Lorentzian's own test)
    assert flows[1.0][0] == pytest.approx(truth, rel=0.06) and flows[1.0][1] == pytest.approx(mtt_s, rel=0.06)
    # the Lorentzian's best fit: a short MTT and a delay, several times the flow (here MTT 0.5 s, ~9x)
    assert flows[0.0][0] > 2 * truth and flows[0.0][1] < 0.5 * mtt_s


def test_a_mixture_network_infers_what_it_trains_on_and_loads_from_its_card(tmp_path):
    torch.manual_seed(0)
    net = PHAE(encoder="grid", deconv=[0.2, 0.07], residue="lorentzian+box").double().eval()
    assert net.config["residue"] == "lorentzian+box" and net.encoder.head.out_features == 4
    assert "residue" not in PHAE(encoder="grid").config  # the default writes nothing: older cards unchanged
    with pytest.raises(ValueError, match="residue"):
        PHAE(encoder="grid", residue="gamma")
    cc = dc.simulate_curve_case(np.random.default_rng(3), 64, dc.TRAINING_WIDE, frame_interval=1.3, n_frames=70,
                                concentration_input=False)
    curves, aif = t(cc.curves), t(cc.aif[None])
    with torch.no_grad():
        ref = net(curves, aif, 1.3)
        case = net.case_terms(aif, 1.3)
        fast = net.infer(curves, case)
    assert ((ref["box_weight"] > 0) & (ref["box_weight"] < 1)).all()
    for key in ("mtt", "delay", "flow", "log_cbf_sd", "box_weight", "fitted"):
        # infer() folds the same float64 linear maps in another order: rounding of sums over ~70 frames
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-9, atol=1e-12)
    path = save_weights(net.float(), tmp_path, "mix-test", {"trained_on": "a test: untrained", "cbf_estimate": "median"})
    model = PHAEModel(cc.aif, 1.3, weights=path)
    assert model.network.encoder.box_mix
    fit = model.fit(cc.curves, keep_curves=False)
    with torch.no_grad():
        expected = net(curves.float(), aif.float(), 1.3)["flow"].double().numpy() / 1.3
    np.testing.assert_allclose(fit.cbf, expected, rtol=1e-4, atol=1e-7)


# --- the checks by residue shape ------------------------------------------------------------------
def test_residue_check_gives_every_shape_the_same_cases():
    """One row per residue, SNR and method; the shapes share their AIFs (same seeds), so oSVD and PHAE see
    the same cases and only the residue differs."""
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    rows = phae_world.residue_check(factory, residues=("exponential", "gamma8"), snrs=(None,), frame_intervals=(1.6,),
                                    cases=1, n_per_tissue=12)
    methods = {r["method"] for r in rows}
    assert {"PHAE", "oSVD 0.095", "trivial CBV/4.5 s"} <= methods
    assert len(rows) == 2 * len(methods)
    for r in rows:
        biases = [r[f"bias_{k}"] for k in phae_world.SWEEP_TISSUES]
        assert r["mean_abs_bias"] == pytest.approx(np.mean(np.abs(biases)))
    # the same seeds for every shape: run again, the same numbers; another shape, other curves
    again = phae_world.residue_check(factory, residues=("exponential",), snrs=(None,), frame_intervals=(1.6,),
                                     cases=1, n_per_tissue=12)
    assert again == rows[:len(again)]
    phae = [r for r in rows if r["method"] == "PHAE"]
    assert phae[0]["residue"] == "exponential" and phae[1]["residue"] == "gamma8" and phae[0] != phae[1]
    assert "gamma8" in phae_world.residue_table(rows)


def test_the_sweep_takes_one_residue_shape():
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    rows = phae_world.sweep(factory, snrs=(50,), gains=(4.0,), frame_intervals=(1.6,), n_per_tissue=10, cases=1,
                            residue="box", log=lambda s: None)
    assert {r["method"] for r in rows} >= {"PHAE", "oSVD 0.095"}
    with pytest.raises(ValueError, match="unknown residue"):
        phae_world.sweep(factory, snrs=(50,), gains=(4.0,), frame_intervals=(1.6,), n_per_tissue=10, cases=1,
                         residue="gamma0.5", log=lambda s: None)


def test_the_sweep_by_residue_counts_rows_as_the_sweep_reads_them():
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    res = phae_world.sweep_by_residue(factory, residues=(None, "box"), snrs=(50,), gains=(4.0,), frame_intervals=(1.6,),
                                      n_per_tissue=10, cases=1, seed_bases=(10_000,))
    assert list(res) == ["mix", "box"]
    for v in res.values():
        row = next(r for r in v["rows"] if r["method"] == "PHAE")
        s = v["summary"]["gain 4 PHAE"]
        within = all(abs(row[f"bias_{k}"]) <= 15 for k in phae_world.SWEEP_TISSUES)
        assert s["rows_within_15"] == f"{int(within)}/1" == s["rows_within_15_per_seed_base"]["10000"]
        assert s["bias_range_pct"] == [min(row[f"bias_{k}"] for k in phae_world.SWEEP_TISSUES),
                                       max(row[f"bias_{k}"] for k in phae_world.SWEEP_TISSUES)]
    assert "| box | 4 | PHAE |" in phae_world.sweep_by_residue_table(res)


def _train_script():
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("train_phae_world", root / "scripts" / "train_phae_world.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_script_records_the_residue_model_and_the_dispersion_range(tmp_path):
    import json

    rc = _train_script().main(["--cases", "2", "--curves", "32", "--epochs", "1", "--repeats", "1", "--bias-weight", "0",
                               "--settings", "wide", "--residue", "lorentzian+box", "--tissue-dispersion", "0", "0",
                               "--residues", "exponential", "gamma1.5", "--seed", "1", "--name", "w", "--out", str(tmp_path)])
    assert rc == 0
    card = json.loads((tmp_path / "w.json").read_text())
    assert card["config"]["residue"] == "lorentzian+box" and "box of the same MTT" in card["encoder"]
    assert card["training_distribution"]["tissue_dispersion"] == [0.0, 0.0]
    assert "tissue dispersion 0-0 s" in card["trained_on"]
    # round 13: the training curves' residue shapes (here without the box: plug flow)
    assert card["training_distribution"]["residues"] == ["exponential", "gamma1.5"]
    assert "residues exponential, gamma1.5" in card["trained_on"]


@pytest.mark.parametrize("args, word", [(["--tissue-dispersion", "2", "1"], "--tissue-dispersion"),
                                        (["--encoder", "conv", "--residue", "lorentzian+box"], "--residue"),
                                        (["--residues", "exponential", "plug"], "--residues")])
def test_train_script_refuses_bad_round12_options_with_one_line(tmp_path, args, word, capsys):
    rc = _train_script().main(["--cases", "2", "--out", str(tmp_path), *args])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]
    assert not list(tmp_path.iterdir())


def test_residue_check_with_vascular_dispersion_reads_the_dispersed_curves_lower():
    """β = 2 s of transport dispersion lowers what any deconvolution recovers (the residue's peak falls): oSVD and
    PHAE both read the dispersed curves lower than the same curves' shape without it."""
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    kw = dict(residues=("exponential",), snrs=(None,), frame_intervals=(1.0,), cases=1, n_per_tissue=20)
    plain = {r["method"]: r for r in phae_world.residue_check(factory, **kw)}
    dispersed = {r["method"]: r for r in phae_world.residue_check(factory, vascular_dispersion=2.0, **kw)}
    for m in ("PHAE", "oSVD 0.095"):
        assert dispersed[m]["vascular_dispersion_s"] == 2.0
        assert dispersed[m]["bias_GM"] < plain[m]["bias_GM"] - 5


def test_the_sweep_by_residue_redraws_the_rows_from_other_seeds():
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    kw = dict(residues=("exponential",), snrs=(50,), gains=(4.0,), frame_intervals=(1.6,), n_per_tissue=10, cases=1)
    two = phae_world.sweep_by_residue(factory, seed_bases=(10_000, 20_000), **kw)["exponential"]
    assert two["summary"]["gain 4 PHAE"]["rows_within_15"].endswith("/2")
    first = [r for r in two["rows"] if r["method"] == "PHAE"]
    assert [r["seed_base"] for r in first] == [10_000, 20_000] and first[0]["bias_GM"] != first[1]["bias_GM"]
    # the first seed set is the world part's draws: the same numbers as the sweep alone
    alone = next(r for r in phae_world.sweep(factory, snrs=(50,), gains=(4.0,), frame_intervals=(1.6,), n_per_tissue=10,
                                             cases=1, residue="exponential", log=lambda s: None) if r["method"] == "PHAE")
    assert first[0]["bias_GM"] == alone["bias_GM"]


def test_the_sweep_draws_each_curve_from_a_mix_of_shapes(monkeypatch, capsys):
    """Round 13: the held-apart sweep with each curve's residue drawn from a given mix (e.g. without plug flow)."""
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    drawn, original = [], dc.simulate_curve_case

    def recording(rng, n, settings=dc.TRAINING, **kw):
        case = original(rng, n, settings, **kw)
        drawn.append((settings, set(case.truth["residue"])))
        return case

    monkeypatch.setattr(dc, "simulate_curve_case", recording)
    res = phae_world.sweep_by_residue(factory, residues=(("exponential", "gamma1.5"),), snrs=(50,), gains=(4.0,),
                                      frame_intervals=(1.6,), n_per_tissue=20, cases=1, seed_bases=(10_000,))
    assert list(res) == ["mix of exponential+gamma1.5"]
    (settings, shapes), = drawn
    assert shapes == {"exponential", "gamma1.5"}  # every curve one of the two, both drawn
    # the rest of the held-apart generator is unchanged: its AIF family and dispersion kernel
    assert settings.aif_families == dc.HELD_APART.aif_families and settings.residues == ("exponential", "gamma1.5")
    assert settings.aif_dispersion_kernel == dc.HELD_APART.aif_dispersion_kernel
    monkeypatch.setattr(dc, "simulate_curve_case", original)
    capsys.readouterr()
    assert phae_world.main(["residues", "--weights", "dsc-phae-wide", "--mix", "exponential,plug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plug" in err[0]


# --- round 14: the object under other transit shapes; one shape per training case -------------------------------


def test_the_reference_object_takes_a_residue_shape_and_keeps_its_blood_volumes():
    """The object's tissues with a box residue: other curves, the same CBV (area ratio) and the same noise draws."""
    exp_curves, aif, dt, cbf, cbv, labels = phae_world.reference_object(None, dt=1.0, n_frames=120, voxels=2)
    box_curves, aif_b, *_ = phae_world.reference_object(None, dt=1.0, n_frames=120, voxels=2, residue="box")
    np.testing.assert_array_equal(aif, aif_b)
    assert np.abs(box_curves - exp_curves).max() > 0.05 * exp_curves.max()
    area = lambda c: 100.0 * np.trapezoid(c, dx=dt, axis=1) / np.trapezoid(aif, dx=dt)  # noqa: E731
    # the window ends before the exponential's tail (and the AIF's recirculation) does: a few per cent short, and
    # the box, whose residue ends at its MTT, loses less of its area
    np.testing.assert_allclose(area(box_curves), cbv, rtol=0.04)
    assert np.all(area(box_curves) >= area(exp_curves))
    # the same noise draws whatever the shape: the difference is the noiseless difference
    noisy_exp = phae_world.reference_object(20, voxels=2)[0]
    noisy_box = phae_world.reference_object(20, voxels=2, residue="box")[0]
    np.testing.assert_allclose(noisy_box - noisy_exp, box_curves - exp_curves, atol=1e-5)


def test_object_by_residue_scores_each_shape_like_the_world_part():
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    res = phae_world.object_by_residue(factory, residues=("exponential", "box"), timings=((1.0, 120),), snrs=(None,),
                                       log=lambda s: None)
    assert list(res) == ["exponential", "box"]
    exp = res["exponential"]["dt 1 s, 120 frames, SNR none"]
    box = res["box"]["dt 1 s, 120 frames, SNR none"]
    # plug flow: oSVD's flat-topped residue keeps its peak, PHAE's Lorentzian decoder reads it high (round 12)
    assert box["PHAE"]["cbf_median_error_pct"] > exp["PHAE"]["cbf_median_error_pct"] + 30
    assert box["oSVD 0.095"]["cbf_median_error_pct"] > exp["oSVD 0.095"]["cbf_median_error_pct"]
    again = phae_world._score_object_timing(factory, None, 1.0, 120, lambda *a, **k: phae_world.reference_object(
        *a, residue="box", **k))
    assert again["PHAE"]["within"] == box["PHAE"]["within"]
    table = phae_world.object_by_residue_table(res)
    assert "| box | PHAE |" in table and f"{box['PHAE']['within']}–{box['PHAE']['within']}/14" in table


def test_the_object_part_refuses_an_unknown_shape_with_one_line(capsys):
    assert phae_world.main(["object", "--weights", "dsc-phae-wide", "--residues", "exponential", "plug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plug" in err[0]


def test_one_residue_shape_per_case_leaves_the_presets_draws_alone():
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    plain = dc.simulate_curve_case(rng(), 400, dc.TRAINING)
    same = dc.simulate_curve_case(rng(), 400, dc.replace(dc.TRAINING, case_residue_fraction=0.0))
    np.testing.assert_array_equal(plain.curves, same.curves)
    shared = dc.simulate_curve_case(rng(), 400, dc.replace(dc.TRAINING, case_residue_fraction=0.8))
    names, counts = np.unique(shared.truth["residue"], return_counts=True)
    # 80 % of the curves take the case's shape, the rest any of the four (so the case's shape holds >= 80 %)
    assert counts.max() / 400 > 0.75 and set(names) <= set(dc.TRAINING.residues)
    assert np.unique(plain.truth["residue"], return_counts=True)[1].max() / 400 < 0.4
    whole = dc.simulate_curve_case(rng(), 50, dc.replace(dc.TRAINING, case_residue_fraction=1.0))
    assert len(set(whole.truth["residue"])) == 1
    with pytest.raises(ValueError, match="case_residue_fraction"):
        dc.replace(dc.TRAINING, case_residue_fraction=1.5)


def test_train_script_records_one_shape_per_case_and_refuses_a_bad_share(tmp_path, capsys):
    import json

    rc = _train_script().main(["--cases", "2", "--curves", "32", "--epochs", "1", "--repeats", "1", "--bias-weight", "0",
                               "--settings", "wide", "--case-residue", "0.8", "--seed", "1", "--name", "w",
                               "--out", str(tmp_path / "ok")])
    assert rc == 0
    card = json.loads((tmp_path / "ok" / "w.json").read_text())
    assert card["training_distribution"]["case_residue_fraction"] == 0.8
    assert "80% of each case's curves of one residue shape" in card["trained_on"]
    capsys.readouterr()
    assert _train_script().main(["--cases", "2", "--case-residue", "1.2", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--case-residue" in err[0]
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_the_round14_object_figure_is_what_the_object_part_computes():
    """docs/figures/phae_round14_object_by_residue.json (the numbers in docs/validation.md and the README) is
    reproduced for the default weights' noiseless settings of plug flow and gamma k 3 (float32 network: a relative
    tolerance well above its rounding, far below the per-shape differences the docs report)."""
    import json

    fig = json.loads((Path(__file__).resolve().parents[1] / "docs" / "figures" /
                      "phae_round14_object_by_residue.json").read_text(encoding="utf-8"))
    kept = fig["default dsc-phae-wide, six shapes"]
    factory = {"dsc-phae-wide": lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")}
    res = phae_world.object_by_residue(factory, residues=("gamma", "box"), timings=((1.0, 120),), snrs=(None,),
                                       log=lambda s: None)
    for shape in ("gamma", "box"):
        key = "dt 1 s, 120 frames, SNR none"
        for m in ("PHAE dsc-phae-wide", "oSVD 0.095"):
            np.testing.assert_allclose(res[shape][key][m]["cbf_estimates"], kept[shape][key][m]["cbf_estimates"],
                                       rtol=2e-3, atol=0.1)  # estimates are kept rounded to 0.1 ml/100 g/min
    # what the README states: plug flow fails the tolerance with PHAE, passes with oSVD
    assert res["box"][key]["PHAE dsc-phae-wide"]["within"] <= 8 <= 13 <= res["box"][key]["oSVD 0.095"]["within"]


# --- round 15: normal tissue of another transit shape than the tumour ---------------------------------------------


def test_the_sweep_by_residue_gives_each_tissues_ratio_to_wm_range():
    """A tissue per shape (normal tissue plug flow, the tumour exponential): its ratio to WM per row, as read."""
    factory = lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")  # noqa: E731
    shapes = {k: ("exponential" if k == "tumor" else "box") for k in phae_world.SWEEP_TISSUES}
    res = phae_world.sweep_by_residue(factory, residues=(shapes,), snrs=(50,), gains=(4.0,), frame_intervals=(1.6,),
                                      n_per_tissue=10, cases=1, seed_bases=(10_000, 20_000))
    (key, v), = res.items()
    assert key.startswith("GM box") and "tumor exponential" in key
    rows = [r for r in v["rows"] if r["method"] == "PHAE"]
    got = v["summary"]["gain 4 PHAE"]["ratio_range_by_tissue_pct"]
    assert set(got) == set(phae_world.SWEEP_TISSUES) - {phae_world.RATIO_REFERENCE}
    assert got["tumor"] == [min(r["ratio_bias_tumor"] for r in rows), max(r["ratio_bias_tumor"] for r in rows)]
    # the ratio is the tissues' two biases combined, as a reader divides ROI means
    for r in rows:
        assert r["ratio_bias_tumor"] == pytest.approx(100 * ((1 + r["bias_tumor"] / 100) / (1 + r["bias_WM"] / 100) - 1),
                                                      rel=1e-6, abs=1e-6)


def test_the_background_shape_is_checked_with_one_line(capsys):
    assert phae_world.main(["residues", "--weights", "dsc-phae-wide", "--tumour-shape", "box",
                            "--background-shape", "plug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plug" in err[0]


def test_every_pair_of_shapes_runs_and_draws_the_ratio_grid(tmp_path, monkeypatch, capsys):
    """--background-shape with several shapes: each (normal tissue, tumour) pair once, the ratio table per pair, a
    nested JSON and the heat map; one background keeps round 14's JSON layout."""
    import functools
    import json

    small = functools.partial(phae_world.sweep_by_residue, snrs=(50,), frame_intervals=(1.6,), n_per_tissue=10,
                              cases=1, seed_bases=(10_000,))
    monkeypatch.setattr(phae_world, "sweep_by_residue", small)
    out = tmp_path / "pairs.json"
    assert phae_world.main(["residues", "--weights", "dsc-phae-wide", "--tumour-shape", "exponential", "box",
                            "--background-shape", "exponential", "box", "--out", str(out)]) == 0
    pairs = json.loads(out.read_text())
    assert list(pairs) == ["exponential", "box"] and all(list(v) == ["exponential", "box"] for v in pairs.values())
    assert out.with_suffix(".png").stat().st_size > 10_000
    ratios = phae_world.shape_pair_ratios(pairs, "PHAE dsc-phae-wide")
    row = next(r for r in pairs["box"]["exponential"]["rows"] if r["method"] == "PHAE dsc-phae-wide")
    assert ratios[("box", "exponential")]["mean_pct"] == pytest.approx(row["ratio_bias_tumor"])
    # the tumour really is exponential and the rest plug flow in that pair: the tumour reads lower than the rest
    assert row["bias_tumor"] < min(row[f"bias_{k}"] for k in ("GM", "WM"))
    text = capsys.readouterr().out
    assert "| box | exponential | " in text and text.count("every tissue") == 2
    one = tmp_path / "one.json"
    assert phae_world.main(["residues", "--weights", "dsc-phae-wide", "--tumour-shape", "box", "--out", str(one)]) == 0
    assert list(json.loads(one.read_text())) == ["GM exponential, WM exponential, tumor box, hypoperfused exponential, "
                                                 "early exponential"]
    assert not one.with_suffix(".png").exists()


def test_the_round15_shape_pairs_are_what_the_sweep_computes():
    """docs/figures/phae_round15_shape_pairs.json (docs/validation.md, round 15): one row of one pair is reproduced
    (ratios kept to 1e-3 %-points; the float32 network moves them far less), and the counts the docs state hold."""
    import json

    kept = json.loads((Path(__file__).resolve().parents[1] / "docs" / "figures" /
                       "phae_round15_shape_pairs.json").read_text(encoding="utf-8"))
    shapes = {k: ("exponential" if k == "tumor" else "box") for k in phae_world.SWEEP_TISSUES}
    factory = {"dsc-phae-wide": lambda aif, dt: PHAEModel(aif, dt, weights="dsc-phae-wide")}
    rows = phae_world.sweep(factory, snrs=(50,), gains=(4.0,), frame_intervals=(1.6,), n_per_tissue=200, cases=2,
                            residue=shapes, log=lambda s: None, seed_base=10_000)
    for m in ("PHAE dsc-phae-wide", "oSVD 0.095"):
        now = next(r for r in rows if r["method"] == m)
        then = next(r for r in kept["box"]["exponential"]["rows"]
                    if r["method"] == m and r["snr"] == 50 and r["dt"] == 1.6 and r["seed_base"] == 10_000)
        assert now["ratio_bias_tumor"] == pytest.approx(then["ratio_bias_tumor"], abs=0.01)
    ratios = {m: phae_world.shape_pair_ratios(kept, m) for m in ("PHAE dsc-phae-wide", "oSVD 0.095")}
    closer = sum(ratios["PHAE dsc-phae-wide"][p]["mean_abs_pct"] < ratios["oSVD 0.095"][p]["mean_abs_pct"]
                 for p in ratios["oSVD 0.095"])
    within = {m: sum(int(v["within_15"].split("/")[0]) for v in r.values()) for m, r in ratios.items()}
    assert (len(ratios["oSVD 0.095"]), closer, within["PHAE dsc-phae-wide"], within["oSVD 0.095"]) == (16, 13, 154, 59)


def test_card_update_from_pairs_needs_several_shapes_and_says_so_before_running(capsys, monkeypatch):
    def never(*a, **k):
        raise AssertionError("the pairs ran before the options were checked")

    monkeypatch.setattr(phae_world, "shape_pairs", never)
    assert phae_world.main(["residues", "--weights", "dsc-phae-wide", "--tumour-shape", "box", "exponential",
                            "--update-cards"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--background-shape" in err[0]


def test_the_ratio_card_metric_groups_pairs_by_which_side_is_more_homogeneous():
    rows = lambda v: {"rows": [{"method": "m", "ratio_bias_tumor": v}]}  # noqa: E731
    pairs = {"exponential": {"exponential": rows(1.0), "box": rows(50.0)},
             "box": {"exponential": rows(-40.0), "box": rows(-20.0)}}
    got = phae_world.shape_pair_card_metric(pairs, "m")["mean_ratio_bias_pct"]
    assert got == {"same_shape": [-20, 1], "tumour_more_homogeneous": [50, 50], "tumour_less_homogeneous": [-40, -40]}


@pytest.mark.parametrize("bad", [["0", "100"], ["200", "100"]])
def test_train_script_takes_an_snr_range_and_refuses_a_bad_one(tmp_path, capsys, bad):
    """Round 15: --snr LO HI sets the generator's log-uniform SNR range (the card says so, and the curves drawn
    follow it); a range that is not 0 < LO <= HI is refused with one line before anything is simulated."""
    import json

    rc = _train_script().main(["--cases", "2", "--curves", "32", "--epochs", "1", "--repeats", "1", "--bias-weight", "0",
                               "--settings", "wide", "--snr", "300", "1000", "--seed", "1", "--name", "w",
                               "--out", str(tmp_path / "ok")])
    assert rc == 0
    card = json.loads((tmp_path / "ok" / "w.json").read_text())
    assert card["training_distribution"]["snr"] == [300.0, 1000.0] and "with SNR 300-1000" in card["trained_on"]
    settings = dc.replace(dc.TRAINING_WIDE, snr=(300.0, 1000.0))
    drawn = dc.simulate_curve_case(np.random.default_rng(0), 64, settings).truth["snr"]
    assert drawn.min() >= 300.0 and drawn.max() <= 1000.0
    capsys.readouterr()
    assert _train_script().main(["--cases", "2", "--snr", *bad, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--snr" in err[0]
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_groups_can_share_their_residue_shape_and_the_default_draws_as_before():
    """Round 15: simulate_curve_cases(group_residue=True) gives each group of K curves one transit shape (so the
    conditional-bias term sees the bias per shape); without it the groups' curves mix shapes exactly as before."""
    kw = dict(n_cases=2, curves_per_case=64, seed=3, settings=dc.TRAINING_WIDE, repeats=8)
    before = dc.simulate_curve_cases(**kw)
    again = dc.simulate_curve_cases(**kw, group_residue=False)
    for a, b in zip(before, again):
        np.testing.assert_array_equal(a.curves, b.curves)
    mixed = [len(set(c.truth["residue"][c.truth["group"] == g])) for c in before for g in range(8)]
    assert max(mixed) > 1  # the old groups mix shapes
    shared = dc.simulate_curve_cases(**kw, group_residue=True)
    for c in shared:
        for g in range(8):
            names = set(c.truth["residue"][c.truth["group"] == g])
            assert len(names) == 1 and names <= set(dc.TRAINING_WIDE.residues)
        # the rest of the group's truth is still shared
        assert all(len(set(c.truth["mtt"][c.truth["group"] == g].round(9))) == 1 for g in range(8))
    assert len({str(n) for c in shared for n in c.truth["residue"]}) > 1  # groups differ from one another


def test_train_script_records_shape_sharing_groups_and_needs_groups_for_them(tmp_path, capsys):
    import json

    rc = _train_script().main(["--cases", "2", "--curves", "64", "--epochs", "1", "--repeats", "8", "--bias-weight", "1",
                               "--group-shape", "--settings", "wide", "--seed", "1", "--name", "w",
                               "--out", str(tmp_path / "ok")])
    assert rc == 0
    card = json.loads((tmp_path / "ok" / "w.json").read_text())
    assert "each group of curves sharing its residue shape" in card["trained_on"]
    capsys.readouterr()
    assert _train_script().main(["--cases", "2", "--repeats", "1", "--group-shape", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--group-shape" in err[0]
