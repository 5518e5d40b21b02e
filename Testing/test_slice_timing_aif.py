"""The AIF's own voxels aligned in time before they are averaged (perfusion/slice_timing.aif_at_one_time; session 22).

An AIF drawn in the two lowest slices of an interleaved 2D series holds voxels acquired about half a frame apart: their
plain mean is the bolus blurred over that spread (its peak low). With slice_timing.ALIGN_AIF_VOXELS (off: measured and
not adopted, see its comment) and --slice-timing auto the AIF is kept per offset group and each group is moved by cubic
spline straight to each slice's time before the groups are averaged. These tests check that the AIF the deconvolution
(DSC) and the fit (DCE) receive is then the one acquired wholly at that time (and the plain mean is not), and that AIF
voxels acquired at one time, or the flag off (the default), leave every map bit for bit as before.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from BBBAnomalyLib.dsc import DSCParameters, pipeline as dsc_pipeline, run_dsc
from BBBAnomalyLib.perfusion import slice_timing
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.phantoms.dsc_physics import gamma_variate_aif

NZ, TR = 4, 1.5
#: interleaved 0, 2, 1, 3: slices 0 and 1 (the AIF's) are acquired half a frame apart
INTERLEAVED = np.array([0, 2, 1, 3]) * TR / NZ
SETTING = dict(slices=NZ, seed=3, snr=None, frame_interval=TR, duration=60.0)
#: the 2D DCE's frame interval: at 5 s the DCE object's bolus is so undersampled that the spline's error is as large as
#: the blur (measured: rms 1.06 vs 1.03 % of the peak); at 3 s the peak reads 2.2 % low plain, 0.5 % aligned
FRAME = 3.0


def timed_series(offsets):
    """The DSC object whose slice z is sampled offsets[z] s after each frame time (the bolus that much earlier)."""
    base = make_dsc_phantom(**SETTING)
    data = np.array(base.signal.data)
    for z, o in enumerate(offsets):
        if o:
            data[:, :, z] = make_dsc_phantom(**SETTING, bolus_arrival=15.0 - o).signal.data[:, :, z]
    acq = dataclasses.replace(base.signal.acquisition, extra={
        slice_timing.EXTRA_KEY: {"times_s": [float(o) for o in offsets], "direction": "k", "source": "test"}})
    return base, dataclasses.replace(base.signal, data=data, acquisition=acq)


def low_aif(ph, slices=2):
    aif = ph.masks["aif"].copy()
    aif[:, :, slices:] = False
    return aif


def run_capturing_aif(monkeypatch, series, ph, method="ssvd", aif_slices=2, **kw):
    """run_dsc, and the AIF the per-slice deconvolution was given."""
    seen = {}
    real = dsc_pipeline.deconvolve_classic

    def spy(aif, times, *args, **kwargs):
        seen["aif"] = aif  # an array, or the AIF kept per offset group (slice_timing.AIFByOffset)
        return real(aif, times, *args, **kwargs)

    monkeypatch.setattr(dsc_pipeline, "deconvolve_classic", spy)
    result = run_dsc(series, DSCParameters(method=method, kh=1.0, density=1.0, **kw), aif_mask=low_aif(ph, aif_slices),
                     brain_mask=ph.masks["brain"])
    return result, seen["aif"]


def test_aligned_mean_of_a_bolus_sampled_half_a_frame_apart():
    """Two groups of voxels sampling one gamma-variate bolus 0.75 s apart (1.5 s frames): their plain mean is the
    bolus at their mean time blurred (its peak 0.9 % low, 0.4 % of the peak rms off); each moved to that time first,
    the peak is within the spline's error (under 0.1 %) and the rms error halves (what is left: the spline's error
    on the up-slope, about 1 % at most at half a frame; session 22)."""
    times = np.arange(40) * TR
    offsets = np.repeat([0.0, 0.75], [4, 4])
    curves = np.stack([gamma_variate_aif(times + o, arrival=12.0) for o in offsets])
    truth = gamma_variate_aif(times + offsets.mean(), arrival=12.0)
    plain = curves.mean(axis=0)
    aligned = slice_timing.aligned_aif(curves, times, offsets)
    peak_plain, peak_aligned = (abs(c.max() / truth.max() - 1) for c in (plain, aligned))
    rms_plain, rms_aligned = (np.sqrt(np.mean((c - truth) ** 2)) / truth.max() for c in (plain, aligned))
    assert peak_plain > 0.005 and peak_aligned < 0.2 * peak_plain, (peak_plain, peak_aligned)
    assert rms_aligned < 0.6 * rms_plain, (rms_plain, rms_aligned)
    # one offset: the plain float64 mean, bit for bit
    assert np.array_equal(slice_timing.aligned_aif(curves[:3], times, offsets[:3]),
                          curves[:3].mean(axis=0, dtype=np.float64))


def test_aif_in_slices_acquired_half_a_frame_apart_is_aligned_before_averaging(monkeypatch):
    """The AIF in slices 0 and 1 (acquired 0 and 0.75 s into each 1.5 s frame): with --slice-timing auto the
    deconvolution's AIF (moved to each group's time from the AIF voxels' mean offset, 0.375 s) is the AIF of the object
    acquired wholly at 0.375 s: the plain mean of the two slices reads its peak 0.9 % low and is 0.4 % of the peak rms
    off (the blur), the aligned one reads the peak within the spline's error and halves the rms error."""
    monkeypatch.setattr(slice_timing, "ALIGN_AIF_VOXELS", True)
    ph, series = timed_series(INTERLEAVED)
    reference = make_dsc_phantom(**SETTING, bolus_arrival=15.0 - INTERLEAVED[:2].mean())
    truth = run_dsc(reference.signal, DSCParameters(method="ssvd", kh=1.0, density=1.0),
                    aif_mask=low_aif(reference), brain_mask=reference.masks["brain"]).aif
    result, by_offset = run_capturing_aif(monkeypatch, series, ph, slice_timing="auto")
    aif = slice_timing.aif_at(by_offset, result.times, 0.0)
    assert result.report["slice_timing"]["applied"]
    assert result.report["slice_timing"]["aif_offset_s"] == pytest.approx(INTERLEAVED[:2].mean())
    plain = result.aif  # the written AIF (aif.csv) stays the plain mean of the drawn voxels
    peak_plain, peak_aligned = (abs(c.max() / truth.max() - 1) for c in (plain, aif))
    rms_plain, rms_aligned = (np.sqrt(np.mean((c - truth) ** 2)) / truth.max() for c in (plain, aif))
    assert peak_plain > 0.005 and peak_aligned < 0.2 * peak_plain, (peak_plain, peak_aligned)
    assert rms_aligned < 0.6 * rms_plain, (rms_plain, rms_aligned)
    # at the first AIF slice's time (0 s) each group is moved straight there (slice 0's own mean is not moved): closer
    # to the object acquired wholly at 0 s than the plain mean moved back by 0.375 s (measured: 0.11 vs 0.47 % rms)
    at_zero = run_dsc(ph.signal, DSCParameters(method="ssvd", kh=1.0, density=1.0), aif_mask=low_aif(ph),
                      brain_mask=ph.masks["brain"]).aif
    moved = (slice_timing.aif_at(c, result.times, -INTERLEAVED[:2].mean()) for c in (plain, by_offset))
    rms_plain, rms_aligned = (np.sqrt(np.mean((c - at_zero) ** 2)) / at_zero.max() for c in moved)
    assert rms_aligned < 0.5 * rms_plain, (rms_plain, rms_aligned)
    # CBV is read from the plain AIF's area before the deconvolution: the alignment does not touch it
    none = run_dsc(series, DSCParameters(method="ssvd", kh=1.0, density=1.0), aif_mask=low_aif(ph),
                   brain_mask=ph.masks["brain"])
    assert np.array_equal(none.maps["cbv"].data, result.maps["cbv"].data)


@pytest.mark.parametrize("method", ["osvd", "tikhonov"])
def test_aif_voxels_acquired_at_one_time_leave_the_maps_bit_for_bit(monkeypatch, method):
    """The AIF in one slice (its voxels at one time) with the other slices at other times: the per-slice correction
    runs, and the AIF it moves is the plain mean as before, so every map is bit for bit the one without the alignment;
    all slices at one (zero or equal) time: bit for bit the run without slice times (the alignment on)."""
    ph, series = timed_series(INTERLEAVED)
    plain, aif = run_capturing_aif(monkeypatch, series, ph, method, aif_slices=1, slice_timing="auto")
    assert plain.report["slice_timing"]["applied"] and np.array_equal(aif, plain.aif)
    monkeypatch.setattr(slice_timing, "ALIGN_AIF_VOXELS", True)
    aligned, aif = run_capturing_aif(monkeypatch, series, ph, method, aif_slices=1, slice_timing="auto")
    assert np.array_equal(aif, aligned.aif)  # one offset: the plain mean as it is
    for name, vol in plain.maps.items():
        assert np.array_equal(vol.data, aligned.maps[name].data), name
    # the AIF in two slices with the flag off (the default): the plain mean, as before
    monkeypatch.setattr(slice_timing, "ALIGN_AIF_VOXELS", False)
    two, aif = run_capturing_aif(monkeypatch, series, ph, method, aif_slices=2, slice_timing="auto")
    assert isinstance(aif, np.ndarray) and np.array_equal(aif, two.aif)
    monkeypatch.setattr(slice_timing, "ALIGN_AIF_VOXELS", True)
    base = make_dsc_phantom(**SETTING)
    untimed, _ = run_capturing_aif(monkeypatch, base.signal, base, method)
    for times in ([0.0] * NZ, [0.4] * NZ):
        acq = dataclasses.replace(base.signal.acquisition, extra={
            slice_timing.EXTRA_KEY: {"times_s": times, "direction": "k", "source": "test"}})
        timed, _ = run_capturing_aif(monkeypatch, dataclasses.replace(base.signal, acquisition=acq), base, method,
                                     slice_timing="auto")
        assert not timed.report["slice_timing"]["applied"]
        for name, vol in untimed.maps.items():
            assert np.array_equal(vol.data, timed.maps[name].data), name


def test_dce_aif_in_slices_acquired_apart_is_aligned_before_averaging(monkeypatch):
    """2D DCE, 3 s frames, the AIF mask in slices 0 and 1 (acquired 0 and 1.5 s into each frame): the AIF the grouped
    fit moves (slice_timing.grouped), read at the AIF voxels' mean time (0.75 s), is the AIF of the object acquired
    wholly at 0.75 s within the spline's error (peak 0.5 %, rms 0.09 % of the peak); the plain mean of the two slices
    reads its peak 2.2 % low (rms 0.35 %). The flag off (the default): the plain mean, as before."""
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.dce.parameters import DCEParameters
    from BBBAnomalyLib.dce.pipeline import run_dce
    from test_slice_timing import timed_dce

    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    setting = dict(slices=4, frame_interval=FRAME, snr=None, seed=1, duration=200.0)
    base, timed = timed_dce(setting, list(np.array([0, 2, 1, 3]) * FRAME / 4))
    m = base.masks
    aif = m["aif"].copy()
    aif[:, :, 2:] = False
    seen = {}
    real = slice_timing.grouped

    def spy(make_model, aif_curve, times, offsets_):
        seen["aif"], seen["times"] = aif_curve, times
        return real(make_model, aif_curve, times, offsets_)

    monkeypatch.setattr(slice_timing, "grouped", spy)

    def run(series, mode):
        return run_dce(series, DCEParameters(rls="none", slice_timing=mode), aif_mask=aif, brain_mask=m["brain"],
                       tumor_mask=m["tumor"], t10_map=Volume(base.truth["t10"].data, base.signal.affine))

    middle = make_dce_phantom(**setting, bolus_arrival=30.0 - FRAME / 4)
    truth = run(middle.signal, "none").aif
    plain = run(timed, "auto").aif
    assert np.array_equal(seen["aif"], plain)  # the flag off (the default): the plain mean is moved
    monkeypatch.setattr(slice_timing, "ALIGN_AIF_VOXELS", True)
    result = run(timed, "auto")
    assert result.report["slice_timing"]["aif_offset_s"] == pytest.approx(FRAME / 4)
    aligned = slice_timing.aif_at(seen["aif"], seen["times"], 0.0)
    peak_plain, peak_aligned = (abs(c.max() / truth.max() - 1) for c in (plain, aligned))
    rms_plain, rms_aligned = (np.sqrt(np.mean((c - truth) ** 2)) / truth.max() for c in (plain, aligned))
    assert peak_plain > 0.015 and peak_aligned < 0.3 * peak_plain, (peak_plain, peak_aligned)
    assert rms_aligned < 0.5 * rms_plain, (rms_plain, rms_aligned)
