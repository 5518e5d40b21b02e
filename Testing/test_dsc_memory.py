"""Peak memory of the DSC pipeline relative to its input series (issue 17: <= 2x the series).

tracemalloc sees every numpy buffer, so the peak of arrays alive at once is deterministic (no
timing, no RSS noise). The input series counts as 1x: it is allocated after tracemalloc starts.
"""

import tracemalloc

import numpy as np
import pytest

from BBBAnomalyLib import Volume
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom


@pytest.fixture(scope="module")
def phantom():
    # 74 x 92 x 24 voxels x 60 frames (37 MiB float32), 69 % of them brain: large enough that the
    # pipeline's fixed-size work blocks (a few MiB per deconvolution worker) are small next to it.
    return make_dsc_phantom(snr=50, slices=24, seed=0)


def run_measured(phantom, method, consume_input):
    """(result, the input Volume, peak of arrays alive at once during run_dsc / series bytes,
    the series included)."""
    tracemalloc.start()
    try:
        # A fresh, F-ordered float32 copy (as nibabel returns it), allocated under tracemalloc.
        series = Volume(np.asfortranarray(phantom.signal.data, dtype=np.float32), phantom.signal.affine,
                        phantom.signal.times, phantom.signal.acquisition)
        series_bytes = series.data.nbytes
        before, _ = tracemalloc.get_traced_memory()  # includes the series
        tracemalloc.reset_peak()
        result = run_dsc(series, DSCParameters(method=method), aif_mask=phantom.masks["aif"],
                         brain_mask=phantom.masks["brain"], consume_input=consume_input)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, series, (peak - before + series_bytes) / series_bytes


@pytest.mark.parametrize("method", ["osvd", "csvd", "tikhonov"])
def test_consuming_run_peaks_under_twice_the_series_with_the_same_maps(phantom, method):
    default, kept, default_peak = run_measured(phantom, method, consume_input=False)
    consumed, freed, consumed_peak = run_measured(phantom, method, consume_input=True)

    # The opt-in frees the caller's series; the default leaves it as it was.
    assert freed.data is None
    np.testing.assert_array_equal(kept.data, phantom.signal.data.astype(np.float32))

    # Series + one float32 copy of the analysed (brain) curves is the floor while the curves are
    # gathered; freeing the series afterwards keeps the maps from stacking on top of both.
    brain_fraction = phantom.masks["brain"].mean()
    print(method, "peak / series: default", round(default_peak, 3), "consume_input", round(consumed_peak, 3))
    assert consumed_peak <= 2.0, consumed_peak
    assert consumed_peak <= 1.0 + brain_fraction + 0.15, (consumed_peak, brain_fraction)
    # Without the opt-in: never a second copy of the curves on top of the series and its curves
    # (the BSW fit's strided product once copied every curve; np.take copied F-ordered input whole).
    assert default_peak < 1.0 + 2 * brain_fraction, (default_peak, brain_fraction)

    # The same arithmetic either way: identical maps, report summaries and AIF.
    assert default.maps.keys() == consumed.maps.keys()
    for name in default.maps:
        np.testing.assert_array_equal(default.maps[name].data, consumed.maps[name].data, err_msg=name)
    np.testing.assert_array_equal(default.aif, consumed.aif)
    assert default.report["summary"] == consumed.report["summary"]
    assert consumed.report["input"]["shape"] == list(phantom.signal.data.shape)


def test_curves_are_kept_when_asked_even_when_consuming(phantom):
    """keep_curves still returns the ΔR2* curves (they are the pipeline's copy, not the input)."""
    default, _, _ = run_measured(phantom, "csvd", consume_input=False)
    series = Volume(phantom.signal.data.astype(np.float32), phantom.signal.affine, phantom.signal.times,
                    phantom.signal.acquisition)
    kept = run_dsc(series, DSCParameters(method="csvd"), aif_mask=phantom.masks["aif"],
                   brain_mask=phantom.masks["brain"], keep_curves=True, consume_input=True)
    assert series.data is None and kept.delta_r2s is not None
    np.testing.assert_array_equal(default.maps["cbf"].data, kept.maps["cbf"].data)
