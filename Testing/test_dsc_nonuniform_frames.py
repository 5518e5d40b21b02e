"""--skip-frames and --baseline-frames count the frames of the series as given, also when its frame times are not
uniform and the curves are resampled to a uniform grid (they used to be applied to the grid's indices as they were:
a baseline of 1-8.5 s became 3-25.5 s, the bolus included)."""

import dataclasses

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.dsc.validation import frames_on_uniform_grid, uniform_times
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

# 0.5 s frames for the first 10 s, then 1.5 s frames: the median step (the grid's) is 1.5 s
FINE = np.arange(0.0, 10.0, 0.5)
TIMES = np.r_[FINE, 10.5 + 1.5 * np.arange(30)]


def test_input_frame_indices_are_placed_on_the_grid_by_their_times():
    grid, resample = uniform_times(TIMES)
    assert resample is not None and grid[1] - grid[0] == pytest.approx(1.5)
    skip, baseline = frames_on_uniform_grid(3, (2, 18), TIMES, grid)  # input 1.5 s kept first; baseline 1-8.5 s
    assert skip == 1  # grid 0 s is interpolated from skipped frames; 1.5 s is the first kept frame's time
    lo, hi = baseline
    assert grid[lo] >= TIMES[2] and grid[hi - 1] <= TIMES[17]
    assert (lo, hi) == (1, 6)  # 1.5, 3, ..., 7.5 s
    assert frames_on_uniform_grid(0, None, TIMES, grid) == (0, None)


def test_a_baseline_shorter_than_two_grid_frames_is_refused_in_one_line():
    grid, _ = uniform_times(TIMES)
    with pytest.raises(InputError, match=r"covers 1-1.5 s.*uniform 1.5 s grid"):
        frames_on_uniform_grid(0, (2, 4), TIMES, grid)


@pytest.fixture(scope="module")
def series():
    ph = make_dsc_phantom(slices=2, seed=3, snr=80.0, frame_interval=0.5, duration=60.0)
    t = np.asarray(ph.signal.times)
    keep = np.r_[np.arange(0, 20), np.arange(21, len(t), 3)]  # the TIMES above
    assert np.allclose(t[keep][:len(TIMES)], TIMES[:len(t[keep])])
    return ph, dataclasses.replace(ph.signal, data=ph.signal.data[..., keep], times=t[keep])


def test_a_pre_bolus_baseline_of_a_non_uniform_series_stays_before_the_bolus(series):
    ph, signal = series
    params = DSCParameters(method="csvd", baseline_frames=(2, 18))  # 1-8.5 s; the bolus arrives at 15 s
    result = run_dsc(signal, params, aif_mask=ph.masks["aif"], brain_mask=ph.masks["brain"])
    first, stop = result.report["baseline"]["baseline_frames"]
    assert result.times[stop - 1] <= TIMES[17]
    reference = run_dsc(signal, DSCParameters(method="csvd"), aif_mask=ph.masks["aif"], brain_mask=ph.masks["brain"])
    gm = ph.masks["gm"]
    ratio = result.maps["cbv"].data[gm].mean() / reference.maps["cbv"].data[gm].mean()
    assert abs(ratio - 1) < 0.05  # a baseline 1-8.5 s reads the detected baseline's CBV (it read the bolus before)
