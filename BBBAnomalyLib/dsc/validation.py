"""Checks of DSC inputs that turn bad data into clear errors, and input preparation helpers."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume

#: Fewer frames than this cannot hold a baseline, a bolus and its wash-out.
MIN_FRAMES = 10
#: Relative deviation of frame intervals above which the series is resampled.
UNIFORM_TOLERANCE = 0.01


def check_series(series: Volume, what: str) -> None:
    if not isinstance(series, Volume):
        raise InputError(f"{what} must be a Volume, got {type(series).__name__}")
    if not series.is_4d:
        raise InputError(f"{what} is 3D {series.data.shape}; DSC needs a 4D dynamic series (x, y, z, time). "
                         "Did you pick a single frame or a map?")
    if series.n_frames < MIN_FRAMES:
        raise InputError(f"{what} has {series.n_frames} frames; at least {MIN_FRAMES} are needed "
                         "(baseline, bolus passage and wash-out)")
    if series.times is None:
        raise InputError(f"{what} has no frame times; give --times FILE or --frame-interval SECONDS")
    if np.any(np.diff(series.times) <= 0):
        raise InputError(f"the frame times of {what} are not strictly increasing; check --times")


def uniform_times(times: np.ndarray):
    """A uniform time grid for deconvolution, and a resampler for curves when the input is not uniform."""
    dt = np.diff(times)
    step = float(np.median(dt))
    if np.max(np.abs(dt - step)) <= UNIFORM_TOLERANCE * step:
        return np.array(times, dtype=np.float64), None
    grid = times[0] + step * np.arange(int(np.floor((times[-1] - times[0]) / step + 1e-9)) + 1)

    def resample(curves: np.ndarray) -> np.ndarray:
        # Linear interpolation along time, all voxels at once: weights are shared by every voxel.
        idx = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, times.size - 2)
        w = ((grid - times[idx]) / (times[idx + 1] - times[idx])).astype(np.float32)
        return curves[:, idx] * (1 - w) + curves[:, idx + 1] * w

    return grid, resample


def automatic_brain_mask(data: np.ndarray) -> np.ndarray:
    """Voxels with signal: Otsu threshold of the temporal mean, holes filled, largest component.

    Filled holes that have no signal at all (zero-padded voxels inside the head) are left out:
    they have no baseline to convert and would stop the run."""
    import SimpleITK as sitk
    from scipy import ndimage

    mean = np.nan_to_num(data.mean(axis=3, dtype=np.float32))
    otsu = sitk.OtsuThreshold(sitk.GetImageFromArray(mean), 0, 1)
    mask = sitk.GetArrayFromImage(otsu).astype(bool)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("no voxels with signal found for the automatic brain mask; give --mask")
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask) & (mean > 0)
