"""Issue 14, round 7: the share of training curves at exactly zero tissue delay (``CurveSettings.delay_zero_fraction``,
``train_phae_world.py --delay-zero-fraction``) and the Tmax bookkeeping of ``phae_world.py`` (dev rows' Tmax error,
the ``delay`` check at fixed tissue delays)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from BBBAnomalyLib.phantoms import dsc_curves as dc

ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    """Forwards to a numpy Generator and records every call: (method, size) and the values ``random`` returned."""

    def __init__(self, seed):
        self._rng, self.calls, self.randoms = np.random.default_rng(seed), [], []

    def __getattr__(self, name):
        attr = getattr(self._rng, name)

        def call(*a, **kw):
            out = attr(*a, **kw)
            self.calls.append((name, np.shape(out)))
            if name == "random":
                self.randoms.append(np.array(out, copy=True))
            return out

        return call


def _draw(settings, seed=5, n=400):
    rec = _Recorder(seed)
    return dc.simulate_curve_case(rec, n, settings, concentration_input=False), rec


def test_presets_keep_a_quarter_at_zero_and_draw_as_before():
    for preset in (dc.TRAINING, dc.TRAINING_WIDE, dc.HELD_APART):
        assert preset.delay_zero_fraction == 0.25
    case, rec = _draw(dc.TRAINING_WIDE)
    # the pre-round-7 draw: delay = where(u < 0.25, 0, uniform(-3, 5)) with u the first random(n) of the case
    u = next(r for r in rec.randoms if r.shape == (400,))
    d = case.truth["delay"]
    np.testing.assert_array_equal(d == 0.0, u < 0.25)
    assert np.all((d[u >= 0.25] >= -3.0) & (d[u >= 0.25] <= 5.0))
    # the same settings spelled out draw bit-identical curves
    same, _ = _draw(dc.replace(dc.TRAINING_WIDE, delay_zero_fraction=0.25))
    np.testing.assert_array_equal(same.curves, case.curves)
    np.testing.assert_array_equal(same.aif, case.aif)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_other_fractions_consume_the_same_random_numbers(fraction):
    base, rec0 = _draw(dc.TRAINING_WIDE)
    other, rec1 = _draw(dc.replace(dc.TRAINING_WIDE, delay_zero_fraction=fraction))
    assert rec1.calls == rec0.calls  # same calls, same sizes, same order: every later draw is the same number
    u = next(r for r in rec0.randoms if r.shape == (400,))
    d0, d1 = base.truth["delay"], other.truth["delay"]
    np.testing.assert_array_equal(d1 == 0.0, u < fraction)
    both = (u >= 0.25) & (u >= fraction)  # curves off the point mass in both draws keep their delay
    np.testing.assert_array_equal(d1[both], d0[both])
    for key in ("mtt", "snr", "gain", "k2", "residue", "dispersion"):  # (cbv: scaled by the AIF, which mixes in tissue)
        np.testing.assert_array_equal(other.truth[key], base.truth[key])
    assert other.info == base.info
    if fraction == 0.0:
        assert not np.any(d1 == 0.0)  # no point mass: the uniform -3..5 s everywhere


def test_grouped_cases_use_the_fraction_too():
    g0 = dc.simulate_curve_cases(2, 64, seed=3, settings=dc.replace(dc.TRAINING, delay_zero_fraction=0.0), repeats=8)
    g1 = dc.simulate_curve_cases(2, 64, seed=3, settings=dc.replace(dc.TRAINING, delay_zero_fraction=1.0), repeats=8)
    assert all(not np.any(c.truth["delay"] == 0.0) for c in g0)
    assert all(np.all(c.truth["delay"] == 0.0) for c in g1)
    for a, b in zip(g0, g1):
        np.testing.assert_array_equal(a.truth["mtt"], b.truth["mtt"])


def test_fraction_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="delay_zero_fraction"):
        dc.replace(dc.TRAINING, delay_zero_fraction=1.5)


def _train_script():
    spec = importlib.util.spec_from_file_location("train_phae_world", ROOT / "scripts" / "train_phae_world.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.usefixtures("one_torch_thread")
def test_train_script_records_the_fraction_in_the_card(tmp_path):
    pytest.importorskip("torch")
    rc = _train_script().main(["--cases", "2", "--curves", "32", "--epochs", "1", "--repeats", "1", "--bias-weight",
                               "0", "--settings", "wide", "--delay-zero-fraction", "0", "--seed", "1", "--name", "w",
                               "--out", str(tmp_path)])
    assert rc == 0
    card = json.loads((tmp_path / "w.json").read_text())
    assert card["delay_zero_fraction"] == 0.0 and card["training_distribution"]["delay_zero_fraction"] == 0.0
    assert "TRAINING_WIDE with delay_zero_fraction 0" in card["trained_on"]
    assert "--delay-zero-fraction 0" in card["command"]


def test_train_script_refuses_a_bad_fraction_with_one_line(tmp_path):
    run = subprocess.run([sys.executable, "scripts/train_phae_world.py", "--delay-zero-fraction", "-0.1", "--cases", "2",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "--delay-zero-fraction" in run.stderr
    assert not list(tmp_path.iterdir())


class _ConstantTmax:
    """A stand-in PHAE model: CBF = CBV / 4 s and Tmax = 2 s for every curve (no network)."""

    def __init__(self, aif, dt):
        self.aif, self.dt = aif, dt

    def fit(self, curves, keep_curves=False):
        cbv = np.trapezoid(curves, dx=self.dt, axis=1) / np.trapezoid(self.aif, dx=self.dt)
        return SimpleNamespace(cbf=cbv / 4.0, fit_error=None, tmax=np.full(len(curves), 2.0))


def _phae_world():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import phae_world
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return phae_world


def test_delay_check_reports_tmax_minus_the_fixed_delay():
    pw = _phae_world()
    rows = pw.delay_check(_ConstantTmax, delays=(0.0, 4.0), gains=(4.0,), snrs=(50,), cases=1, n_per_tissue=10,
                          log=lambda s: None)
    phae = {r["delay"]: r for r in rows if r["method"] == "PHAE"}
    assert set(phae) == {0.0, 4.0}
    for delay, r in phae.items():
        for k in pw.DELAY_TISSUES:
            assert r[f"tmax_error_{k}"] == pytest.approx(2.0 - delay, abs=1e-12)
            assert r[f"tmax_median_error_{k}"] == pytest.approx(2.0 - delay, abs=1e-12)
    assert not any(k.startswith("tmax") for r in rows if r["method"].startswith("trivial") for k in r)
    # a later tissue delay leaves less of the curve in the window: the CBV-only stand-in's bias moves with it
    assert phae[0.0]["bias_GM"] != phae[4.0]["bias_GM"]


def test_dev_rows_carry_each_tissues_tmax_error():
    pw = _phae_world()
    rows = pw.dev_sweep(_ConstantTmax, gains=(4.0,), snrs=(50,), cases=1, n_per_tissue=8, log=lambda s: None)
    for r in (r for r in rows if r["method"] == "PHAE"):
        for k, (_, _, delay) in pw.SWEEP_TISSUES.items():
            assert r[f"tmax_error_{k}"] == pytest.approx(2.0 - delay, abs=1e-12)
    s = pw.dev_summary(rows)["PHAE"]
    assert s["tmax_error_by_tissue_s"]["hypoperfused"] == pytest.approx(-1.0, abs=1e-12)
    assert s["tmax_error_by_tissue_s"]["early"] == pytest.approx(3.5, abs=1e-12)
