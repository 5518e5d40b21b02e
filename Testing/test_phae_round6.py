"""Issue 14, round 6: the conditional-bias term aimed at the CBF estimate the card outputs
(``train(bias_estimate=...)``, ``train_phae_world.py --cbf-estimate median``) and the dev sweep's low-CNR rows
(``phae_world.py dev --gains/--snrs``)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc.phae import training  # noqa: E402
from BBBAnomalyLib.dsc.phae.network import PHAE  # noqa: E402
from BBBAnomalyLib.dsc.phae.training import TrainingCase, simulated_cases, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
CBF_TRUE = 0.01  # [1/s], one truth for every curve of the test case


def _case(k=16, groups=2):
    c = simulated_cases(1, k * groups, seed=3, repeats=k)[0]
    truth = dict(c.truth, cbf=np.full(c.curves.shape[0], CBF_TRUE, np.float32))
    return TrainingCase(c.curves, c.aif, c.frame_interval, "t", truth)


def _ratios_seen(monkeypatch, estimate):
    """Train one step; return (ratio handed to conditional_bias_loss, flow / dt, s) of that step's batch."""
    seen = {}
    real = training.conditional_bias_loss

    def spy(ratio, k, unbiased=False):
        seen["ratio"] = ratio.detach().clone()
        return real(ratio, k, unbiased)

    monkeypatch.setattr(training, "conditional_bias_loss", spy)
    torch.manual_seed(0)
    net = PHAE(encoder="grid", uncertainty=True)
    forward = net.forward

    def recording_forward(*a, **kw):
        out = forward(*a, **kw)
        seen.setdefault("flow", out["flow"].detach().clone())
        seen.setdefault("sd", out["log_cbf_sd"].detach().clone())
        seen.setdefault("dt", a[2])
        return out

    net.forward = recording_forward
    train([_case()], epochs=1, batch=32, network=net, device="cpu", log=lambda s: None, bias_weight=1.0,
          bias_estimate=estimate)
    return seen["ratio"], seen["flow"] / seen["dt"], seen["sd"]


def test_bias_term_targets_the_median_output_when_asked(monkeypatch):
    ratio, flow, sd = _ratios_seen(monkeypatch, "median")
    assert torch.allclose(ratio * CBF_TRUE, flow, rtol=1e-5, atol=0)
    # the earlier cards' target (unchanged default): flow·exp(-s²/2), which differs here since s > 0
    ratio_m, flow_m, sd_m = _ratios_seen(monkeypatch, "mean")
    assert torch.allclose(ratio_m * CBF_TRUE, flow_m * torch.exp(-0.5 * sd_m ** 2), rtol=1e-5, atol=0)
    assert float(sd_m.min()) > 0.05 and not torch.allclose(ratio_m * CBF_TRUE, flow_m, rtol=1e-3, atol=0)


def test_unknown_bias_estimate_is_refused():
    with pytest.raises(ValueError, match="bias_estimate"):
        train([_case()], epochs=1, device="cpu", log=lambda s: None, bias_estimate="mode")


def _train_script():
    spec = importlib.util.spec_from_file_location("train_phae_world", ROOT / "scripts" / "train_phae_world.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("estimate", ["mean", "median"])
def test_card_names_the_estimate_the_bias_term_makes_unbiased(tmp_path, estimate):
    rc = _train_script().main(["--cases", "2", "--curves", "32", "--epochs", "1", "--repeats", "16", "--bias-weight",
                               "1", "--cbf-estimate", estimate, "--seed", "1", "--name", "w", "--out", str(tmp_path)])
    assert rc == 0
    card = json.loads((tmp_path / "w.json").read_text())
    assert "conditional bias over each group of 16 curves" in card["loss"]
    if estimate == "median":
        assert card["cbf_estimate"] == "median" and "CBF_k = the flow as is" in card["loss"]
    else:  # the text every earlier card with a bias term carries
        assert "cbf_estimate" not in card and "with CBF_k = flow x exp(-s^2/2), s held fixed" in card["loss"]


class _CBVOverMTT:
    """A stand-in PHAE model for the sweep's mechanics: CBF = CBV / 4 s (no network)."""

    def __init__(self, aif, dt):
        self.aif, self.dt = aif, dt

    def fit(self, curves, keep_curves=False):
        from types import SimpleNamespace

        cbv = np.trapezoid(curves, dx=self.dt, axis=1) / np.trapezoid(self.aif, dx=self.dt)
        return SimpleNamespace(cbf=cbv / 4.0, fit_error=None)


def test_dev_sweep_gain_rows_add_without_changing_the_default_rows():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import phae_world
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    kw = dict(cases=1, n_per_tissue=12, log=lambda s: None, snrs=(20,))
    base = phae_world.dev_sweep(_CBVOverMTT, gains=(4.0,), **kw)
    more = phae_world.dev_sweep(_CBVOverMTT, gains=(4.0, 1.0), **kw)
    key = lambda r: (r["gain"], r["dt"], r["snr"], r["method"])  # noqa: E731
    values = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731  (all but the wall time)
    assert {key(r): values(r) for r in more if r["gain"] == 4.0} == {key(r): values(r) for r in base}
    low = [r for r in more if r["gain"] == 1.0]
    assert {r["dt"] for r in low} == {1.2, 2.0} and {r["snr"] for r in low} == {20}
    # the per-(gain, SNR) summary reads only its rows: the gain-1 rows' summary is theirs alone
    s1 = phae_world.dev_summary(more, gain=1.0, snr=20)["PHAE"]
    b1 = np.array([[r["bias_" + t] for t in phae_world.SWEEP_TISSUES] for r in low if r["method"] == "PHAE"])
    assert s1["mean_abs_bias_pct"] == pytest.approx(float(np.abs(b1).mean()), rel=1e-12)
    assert s1["rows_within_15"].endswith("/2")
    with pytest.raises(ValueError, match="positive"):
        phae_world.dev_sweep(_CBVOverMTT, gains=(0.0,), **kw)


def test_dev_cli_refuses_a_nonpositive_gain_with_one_line():
    run = subprocess.run([sys.executable, "scripts/phae_world.py", "dev", "--weights", "dsc-phae-fast", "--gains", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "gains" in run.stderr


def test_group_cases_mix_single_truth_cases_with_grouped_ones(tmp_path, monkeypatch):
    seen = {}
    real = training.train

    def spy(cases, **kw):
        seen["cases"] = cases
        return real(cases, **kw)

    monkeypatch.setattr(training, "train", spy)
    rc = _train_script().main(["--cases", "3", "--group-cases", "1", "--curves", "16", "--epochs", "1", "--repeats",
                               "4", "--bias-weight", "1", "--seed", "2", "--name", "w", "--out", str(tmp_path)])
    assert rc == 0
    cases = seen["cases"]
    assert [c.truth["group_size"] for c in cases] == [1, 1, 4]
    # the single-truth cases are the ones --repeats 1 draws with this seed (the grouped ones from another stream)
    for a, b in zip(cases[:2], simulated_cases(2, 16, seed=2)):
        np.testing.assert_array_equal(a.curves, b.curves)
    grouped = cases[2].truth["cbf"].reshape(-1, 4)
    assert grouped.shape == (4, 4)  # 16 curves = 4 groups of 4; the truth is relative to one AIF: one value a group
    np.testing.assert_allclose(grouped, grouped[:, :1].repeat(4, axis=1), rtol=1e-6)
    card = json.loads((tmp_path / "w.json").read_text())
    assert card["group_cases"] == 1 and "1 of the cases (seed 100002) in groups of 4" in card["trained_on"]
    assert _train_script().main(["--cases", "2", "--group-cases", "3", "--repeats", "4", "--out", str(tmp_path)]) == 2
