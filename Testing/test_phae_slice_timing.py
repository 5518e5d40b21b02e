"""Slice timing for PHAE, the learned DSC map (session 22; perfusion/slice_timing.py, dsc/phae_step._fit_by_offset).

A 2D multi-slice series acquires its slices one after the other within each frame; the AIF is drawn in a few slices.
PHAE reads one AIF per model (a per-case input of its network). Its correction runs one model per acquisition offset,
each bound to the AIF moved to that time (the classic methods' correction), with its pooled delay told each block's
mean offset and its guided pooling kept within an offset group. It was measured and not adopted (session 22's PHAE
rule missed on CBF: slice_timing.PHAE_BY_OFFSET is off), so with --slice-timing auto PHAE still warns. These tests
build the DSC object with each slice sampled at its own time (the bolus o_z s earlier in slice z) and check what
auto does and says for PHAE, that the correction (switched on) removes PHAE's Tmax stripes, and that
every-slice-at-one-time series read bit for bit as before.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")

from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.perfusion import slice_timing  # noqa: E402
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom  # noqa: E402

from test_slice_timing import INTERLEAVED, NZ, SETTING, TR, low_aif, slice_medians, timed_series  # noqa: E402,F401


def with_times(signal, times):
    acq = dataclasses.replace(signal.acquisition, extra={
        slice_timing.EXTRA_KEY: {"times_s": [float(t) for t in times], "direction": "k", "source": "test"}})
    return dataclasses.replace(signal, acquisition=acq)


def run(series, ph, **kw):
    return run_dsc(series, DSCParameters(method="phae", kh=1.0, density=1.0, **kw), aif_mask=low_aif(ph),
                   brain_mask=ph.masks["brain"])


@pytest.fixture(scope="module")
def interleaved():
    """(object, its series with interleaved slice times, the object's PHAE run, the series' run with the default)"""
    ph, series = timed_series(INTERLEAVED)
    return ph, series, run(ph.signal, ph), run(series, ph)  # --slice-timing none, the default: as before


def test_phae_with_auto_is_not_corrected_and_says_so(interleaved):
    """Session 22's PHAE rule was missed on CBF (slice_timing.PHAE_BY_OFFSET is off): with --slice-timing auto PHAE's
    maps are those of 'none', bit for bit, the report says why it was not applied, and one warning names PHAE, the
    measured sizes and oSVD with auto instead (not the option: auto was given)."""
    ph, series, _, before = interleaved
    assert slice_timing.PHAE_BY_OFFSET is False
    auto = run(series, ph, slice_timing="auto")
    for name, vol in before.maps.items():
        assert np.array_equal(vol.data, auto.maps[name].data), name
    entry = auto.report["slice_timing"]
    assert entry["mode"] == "auto" and not entry["applied"] and entry["not_applied_because"] == slice_timing.DSC_PHAE[0]
    assert "slice_timing" not in auto.report["phae"]
    lines = [w for w in auto.report["warnings"] if "acquired at different times" in w]
    assert len(lines) == 1, auto.report["warnings"]
    assert "PHAE reads one AIF for every voxel and is not corrected" in lines[0] and "--method osvd" in lines[0]
    assert "up to 1.9 s" in lines[0] and "left that out" not in lines[0]
    # with 'none' the warning names the option
    lines = [w for w in before.report["warnings"] if "acquired at different times" in w]
    assert len(lines) == 1 and "PHAE reads one AIF" in lines[0]


def test_phae_by_offset_removes_the_tmax_stripes(interleaved, monkeypatch):
    """The measured correction (slice_timing.PHAE_BY_OFFSET on): interleaved, 1.5 s frames, slices up to 1.25 s from
    the AIF's. Uncorrected, PHAE's per-slice GM Tmax is striped by about half a frame from slice to slice; one model
    per offset (the AIF moved to the slices' time, the pooled delay told each block's mean offset) brings each slice's
    median within a quarter of that error of the object acquired with every slice at its frame time (measured on the
    12-slice object: 0.19-1.92 s before, 0.02-0.15 s after, scripts/dsc_slice_timing.py --phae-by-offset). CBV is
    not touched; the report says it was applied, one group per slice, and no warning says the times were left out."""
    ph, series, reference, before = interleaved
    monkeypatch.setattr(slice_timing, "PHAE_BY_OFFSET", True)
    after = run(series, ph, slice_timing="auto")
    ref_tmax = slice_medians(reference, ph, "tmax")
    error_before = slice_medians(before, ph, "tmax") - ref_tmax
    error_after = slice_medians(after, ph, "tmax") - ref_tmax
    assert np.abs(error_before).max() > 0.5 and np.abs(error_after).max() < 0.25 * np.abs(error_before).max(), (
        error_before, error_after)
    # the stripes are slice to slice: neighbouring slices of an interleaved order differ by about TR / 2 before
    stripes_before, stripes_after = np.abs(np.diff(error_before)).max(), np.abs(np.diff(error_after)).max()
    assert stripes_before > 0.5 and stripes_after < 0.25 * stripes_before, (stripes_before, stripes_after)
    assert np.array_equal(after.maps["cbv"].data, before.maps["cbv"].data)
    entry = after.report["slice_timing"]
    assert entry["applied"] and entry["groups"] == NZ and "not_applied_because" not in entry
    assert after.report["phae"]["slice_timing"]["applied"]
    assert "mean offset" in after.report["phae"]["slice_timing"]["pooled_delay"]
    assert not any("acquired at different times" in w for w in after.report["warnings"]), after.report["warnings"]


def test_phae_slices_at_one_time_read_bit_for_bit_as_before(monkeypatch):
    """Every slice at the AIF's time (all zero, or all equal: one group, the AIF as it is) or no slice times: PHAE's
    maps (guided pooling and pooled delay on) bit for bit those of the path without slice timing, also with the
    measured correction switched on."""
    monkeypatch.setattr(slice_timing, "PHAE_BY_OFFSET", True)
    ph = make_dsc_phantom(**{**SETTING, "snr": 50.0, "slices": 3})
    pooling = "on"
    plain = run(ph.signal, ph, phae_guided_pooling=pooling)
    assert plain.report["slice_timing"]["source"] is None and plain.report["phae"]["guided_pooling"]["applied"]
    assert "pooled_delay" in plain.report["phae"]
    for times in ([0.0, 0.0, 0.0], [0.4, 0.4, 0.4]):
        timed = run(with_times(ph.signal, times), ph, slice_timing="auto", phae_guided_pooling=pooling)
        assert not timed.report["slice_timing"]["applied"] and "slice_timing" not in timed.report["phae"]
        for name, vol in plain.maps.items():
            assert np.array_equal(vol.data, timed.maps[name].data), name


def test_pooled_delay_adds_each_blocks_mean_offset():
    """A block that mixes slices acquired at different times shows its bolus earlier by its voxels' mean offset on
    the frame grid: told the offsets, pooled_delays adds that mean back (here one offset everywhere: every voxel's
    delay moves by exactly it, up to float32 rounding of the interpolation)."""
    from BBBAnomalyLib.dsc.phae import PHAEModel
    from BBBAnomalyLib.phantoms.dsc_physics import gamma_variate_aif

    times = np.arange(40) * TR
    brain = np.zeros((12, 12, 4), bool)
    brain[1:11, 1:11, :] = True
    aif = gamma_variate_aif(times, arrival=9.0)
    rng = np.random.default_rng(0)
    tissue = np.convolve(aif, np.exp(-times / 4.0))[: times.size] * TR
    curves = tissue[None] * rng.uniform(0.005, 0.02, (int(brain.sum()), 1))
    curves = (curves + 1e-4 * rng.standard_normal(curves.shape)).astype(np.float32)
    model = PHAEModel(aif, TR)
    plain, _ = model.pooled_delays(curves, brain, (2.0, 2.0, 2.0))
    told, _ = model.pooled_delays(curves, brain, (2.0, 2.0, 2.0), offsets=np.full(curves.shape[0], 0.6))
    np.testing.assert_allclose(told - plain, 0.6, atol=1e-5)
