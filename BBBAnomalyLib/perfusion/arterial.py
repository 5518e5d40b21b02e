"""Which voxels of a drawn search region are arterial (the rule DSC and DCE share).

A ROI box drawn around an artery also holds tissue, CSF and often air; averaging all of it
dilutes the arterial input function (on the DSC phantom a box 2 voxels wider than the artery gave
0.17x the arterial peak and 5.4x the GM CBV, docs/design.md). Arterial curves peak far higher
than anything else in such a box, so a voxel counts as arterial when its bolus peak reaches
``REGION_PEAK_FRACTION`` of the region's 90th-percentile peak; at least ``MIN_REGION_VOXELS``
(the highest) are always kept.

And whether an AIF is arterial at all (:func:`tissue_peak_ratio`): its peak over the brain's median tissue
curve's. DSC and DCE refuse an AIF mask whose ratio is tissue-like, each with its own threshold
(``MIN_AIF_TISSUE_PEAK_RATIO`` in dsc/aif.py and dce/aif.py, where the measured values are given).
"""

from __future__ import annotations

import numpy as np

REGION_PEAK_FRACTION = 0.5
MIN_REGION_VOXELS = 5


def arterial_in_region(peaks: np.ndarray) -> np.ndarray:
    """Boolean (n,): the arterial voxels among a region's voxels, from their bolus peaks (n,)
    measured above each voxel's own baseline."""
    peaks = np.asarray(peaks, dtype=np.float64)
    keep = peaks >= REGION_PEAK_FRACTION * np.percentile(peaks, 90)
    n_min = min(MIN_REGION_VOXELS, peaks.size)
    if keep.sum() < n_min:
        keep = np.zeros(peaks.size, bool)
        keep[np.argsort(peaks)[::-1][:n_min]] = True
    return keep


#: The tissue reference of :func:`tissue_peak_ratio` is the median, frame by frame, of at most this many tissue
#: curves (an evenly strided sample: the median of a brain's curves does not need all of them, and the sample keeps
#: the copy to ~2 MiB whatever the brain's size, so it adds nothing measurable to a run's peak memory).
TISSUE_SAMPLE = 4096
#: Fewer tissue voxels than this are no reference: the ratio is not measured.
MIN_TISSUE_VOXELS = 20
#: Each peak rise is taken less this many SDs of its curve's baseline: the largest of 40-200 noisy frames lies about
#: 2-3 SDs above the curve, which at low SNR made a few dozen tissue voxels look 2-4x the brain's median (DSC
#: reference object at SNR 5-10); an arterial peak is tens of its SDs, a median of thousands of curves is smooth,
#: so neither moves much.
NOISE_SDS = 2.5


def tissue_peak_ratio(aif: np.ndarray, curves, in_aif: np.ndarray, baseline: slice) -> float | None:
    """How many times the brain's typical tissue curve an AIF's bolus peak is (the rule DSC and DCE share).

    An artery holds blood only; tissue holds a few percent of it (DSC: CBV 2-5 ml/100 ml; DCE: vp 0.01-0.05 plus
    a little leakage), so an arterial curve peaks many times higher than tissue's, even averaged with some
    partial-volume tissue. A mask drawn on tissue peaks about as high as the tissue around it.

    aif: (T,) the AIF's curve (the mean of its voxels, before any hematocrit scaling); curves: (n, T) the analysed
    voxels' curves (an array, or rows converted on demand: read only as ``curves[indices]``); in_aif: boolean (n,),
    the voxels averaged into the AIF, left out of the tissue; baseline: the pre-contrast frames. Returns the AIF's
    peak rise over the peak rise of the tissue's median curve (each above its baseline mean, less NOISE_SDS of its
    baseline SD), or None where there is no reference: fewer than MIN_TISSUE_VOXELS tissue voxels, or a tissue
    median that does not rise above its noise.
    """
    tissue = np.flatnonzero(~np.asarray(in_aif, dtype=bool))
    if tissue.size < MIN_TISSUE_VOXELS:
        return None
    rows = tissue[:: -(-tissue.size // TISSUE_SAMPLE)]
    median = np.median(np.asarray(curves[rows], dtype=np.float32), axis=0).astype(np.float64)
    rise = _rise(median, baseline)
    if not rise > 0:
        return None
    return _rise(np.asarray(aif, dtype=np.float64), baseline) / rise


def _rise(curve: np.ndarray, baseline: slice) -> float:
    """The peak of ``curve`` above its baseline mean, less NOISE_SDS of its baseline SD (the noise's own maximum)."""
    base = curve[baseline]
    noise = float(base.std(ddof=1)) if base.size > 2 else 0.0
    return float(curve.max() - base.mean() - NOISE_SDS * noise)
