"""Issue 14, round 18: the transit gate (dsc/phae/transit_gate.py): does a case's set of curves decisively reject the
exponential-leaning capillary transit PHAE's weights were trained for? It fires on homogeneous transit the curves
resolve, stays quiet on exponential-like transit and on noise, and run_dsc reports it (a warning, no map change)."""

import numpy as np
import pytest

from BBBAnomalyLib.dsc.phae.transit_gate import THRESHOLD, transit_gate
from BBBAnomalyLib.perfusion.population_aif import georgiou_aif
from BBBAnomalyLib.phantoms import dsc_physics as phys


def _aif(t):
    return georgiou_aif(np.asarray(t, float) / 60.0, delay=12.0 / 60.0)


def _object(shape, dt=1.0, frames=90, snr=None, seed=3, per_tissue=30):
    """14 tissues (CBF 10-120 ml/100 g/min, CBV 1-8 ml/100 ml) x ``per_tissue`` concentration curves under one transit
    shape, Gaussian noise of SD 0.04·max(AIF)/snr (the OSIPI-style object of scripts/phae_world.py)."""
    times = np.arange(frames) * dt
    cbf = np.repeat(np.linspace(10.0, 120.0, 14), per_tissue)
    cbv = np.repeat(np.linspace(1.0, 8.0, 14), per_tissue)
    conc = phys.tissue_concentration(times, _aif, cbv / 100.0, 60.0 * cbv / cbf, 0.0, 0.0, residue=shape)
    aif = _aif(times)
    if snr is not None:
        conc = conc + 0.04 * aif.max() / snr * np.random.default_rng(seed).standard_normal(conc.shape)
    return conc.astype(np.float32), aif.astype(np.float32), dt


@pytest.mark.parametrize("shape", ["box", "gamma8"])
@pytest.mark.parametrize("snr", [None, 50])
def test_fires_on_homogeneous_transit_the_curves_resolve_and_names_it(shape, snr):
    gate = transit_gate(*_object(shape, snr=snr))
    assert gate.fired and gate.statistic >= THRESHOLD
    assert gate.shape == shape
    line = gate.warning("dsc-phae-wide")
    assert "--method osvd" in line and "dispersed" in line and "dsc-phae-wide" in line


@pytest.mark.parametrize("shape", ["exponential", "gamma1.5", "lorentzian"])
@pytest.mark.parametrize("snr", [None, 20])
def test_quiet_on_the_transit_the_weights_read_right(shape, snr):
    gate = transit_gate(*_object(shape, snr=snr))
    assert not gate.fired
    assert gate.statistic < 0.25 * THRESHOLD
    assert gate.warning("w") is None


def test_noise_alone_does_not_fire_even_where_it_favours_plug_flow():
    """Pure noise: every shape fits it alike (the flexible ones slightly better), far below the threshold."""
    rng = np.random.default_rng(0)
    _, aif, dt = _object("exponential")
    noise = rng.standard_normal((400, aif.size)).astype(np.float32) + 0.01
    gate = transit_gate(noise, aif, dt)
    assert not gate.fired and gate.statistic < THRESHOLD / 2


def test_statistic_does_not_depend_on_units():
    """Scale-free: ΔR2* in 1/s or concentration in mM, any AIF scale (the ratio of residuals and the median)."""
    curves, aif, dt = _object("box", snr=50)
    a = transit_gate(curves, aif, dt)
    b = transit_gate(37.0 * curves, 0.2 * aif, dt)
    assert b.fired == a.fired and b.shape == a.shape
    assert b.statistic == pytest.approx(a.statistic, rel=1e-3)


def test_a_minority_of_misfit_curves_does_not_decide():
    """The median: a quarter of plug-flow curves in an exponential case (partial volume, leakage) leaves it quiet; a
    majority fires."""
    exp_curves, aif, dt = _object("exponential", snr=50)
    box_curves, _, _ = _object("box", snr=50, seed=4)
    n = exp_curves.shape[0]
    quarter = np.concatenate([exp_curves[: 3 * n // 4], box_curves[3 * n // 4:]])
    most = np.concatenate([exp_curves[: n // 4], box_curves[n // 4:]])
    assert not transit_gate(quarter, aif, dt).fired
    assert transit_gate(most, aif, dt).fired


def test_too_little_data_is_no_evidence():
    _, aif, dt = _object("box")
    gate = transit_gate(np.zeros((0, aif.size), np.float32), aif, dt)
    assert not gate.fired and gate.voxels == 0
    assert transit_gate(np.ones((5, 3), np.float32), aif[:3], dt).fired is False


def test_reads_the_same_curves_as_the_evidence_without_copying_half_the_brain():
    """The rows the gate reads are shape_evidence.informative's (the larger half of the areas, an even stride)."""
    import torch

    from BBBAnomalyLib.dsc.phae.shape_evidence import informative
    from BBBAnomalyLib.dsc.phae.transit_gate import _informative_rows

    curves, _, _ = _object("gamma", snr=20)
    for cap in (50, 10_000):
        np.testing.assert_array_equal(_informative_rows(curves, cap).numpy(),
                                      informative(torch.from_numpy(curves), cap).numpy())


def test_the_threshold_is_the_recorded_calibration():
    """THRESHOLD is twice the largest development statistic that `scripts/phae_transit_gate.py calibrate` wrote."""
    import json
    from pathlib import Path

    rec = json.loads((Path(__file__).resolve().parents[1] / "docs/figures/phae_round18_calibration.json").read_text())
    assert rec["threshold"] == THRESHOLD == round(2 * rec["largest"], 2)
    assert not any(r["fired"] for r in rec["rows"])


def test_the_scripts_shape_fit_reads_noiseless_plug_flow_at_1_s():
    """The round's unadopted switch candidate (scripts/phae_transit_gate.py grid_fit) reads noiseless plug flow within
    the OSIPI tolerance (15 ml/100 g/min + 10 %) in every tissue at Δt 1 s, as docs/validation.md reports (14/14), and
    its interval brackets its estimate."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import phae_transit_gate as script

    curves, aif, dt = _object("box", per_tissue=5)
    cbf, lo, hi = script.grid_fit(curves, aif, dt, "box")
    truth = np.repeat(np.linspace(10.0, 120.0, 14), 5) / 6000.0
    assert np.all(6000.0 * np.abs(cbf - truth) <= 15.0 + 0.10 * 6000.0 * truth)
    assert np.median(np.abs(cbf / truth - 1.0)) < 0.10
    assert np.all(lo <= cbf + 1e-12) and np.all(cbf <= hi + 1e-12)
