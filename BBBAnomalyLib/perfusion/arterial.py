"""Which voxels of a drawn search region are arterial (the rule DSC and DCE share).

A ROI box drawn around an artery also holds tissue, CSF and often air; averaging all of it
dilutes the arterial input function (on the DSC phantom a box 2 voxels wider than the artery gave
0.17x the arterial peak and 5.4x the GM CBV, docs/design.md). Arterial curves peak far higher
than anything else in such a box, so a voxel counts as arterial when its bolus peak reaches
``REGION_PEAK_FRACTION`` of the region's 90th-percentile peak; at least ``MIN_REGION_VOXELS``
(the highest) are always kept.
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
