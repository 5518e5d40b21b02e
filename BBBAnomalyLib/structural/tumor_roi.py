"""Where the BBB status is decided, and whether that place is believable.

With a user ROI the status is decided there. Without one, the diffusion model's segmentation
head gives the tumor, and its *confidence* (mean probability inside) and *volume* feed the
decision: a tiny tumor, an uncertain one, or one whose volume is far from the FLAIR abnormality
makes the call "indeterminate" with the reason, instead of a call on the wrong voxels.

The FLAIR abnormality is a label-free reference: FLAIR above median + 2 x 1.4826 MAD inside the
brain, opened once, components of >= 1 ml. On the three real cases and four phantoms its volume
was 0.72-0.97 of the whole-tumor segmentation (docs/validation.md), which is what makes it a
usable plausibility check and no more: it is not a segmentation. Between plausible and
implausible, :attr:`TumorROI.weight` shrinks p(disrupted) towards 0.5 (pipeline.py), so the
confidence and the volume feed the probability itself and the call follows from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Robust z above which a FLAIR voxel is abnormal; smallest component kept (ml).
FLAIR_Z, FLAIR_MIN_COMPONENT_ML = 2.0, 1.0
#: A segmented tumor smaller than this (ml) is implausible for a status call.
MIN_TUMOR_ML = 1.0
#: Mean segmentation probability inside the tumor below this = uncertain; at FULL_CONFIDENCE it is trusted fully.
MIN_CONFIDENCE, FULL_CONFIDENCE = 0.7, 0.85
#: Segmented / FLAIR-abnormal volume outside this range = implausible.
VOLUME_RATIO = (1 / 3, 3.0)


def _abnormal_components(flair: np.ndarray, brain: np.ndarray, voxel_ml: float):
    """(box, labels on the brain's bounding box, labels of the kept components, their voxel counts).

    Memory (issue 17): the brain's values are taken before the float64 conversion (not a float64 copy of the
    grid), and the threshold, opening and labelling run on the brain's bounding box: everything outside it is
    False, the opening of a set is inside the set, so the components and their scan-order labels are the same."""
    brain = np.asarray(brain, bool)
    flair = np.asarray(flair)
    values = flair[brain].astype(np.float64)
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    del values
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(brain)) if brain.any() else \
        tuple(slice(0, 0) for _ in brain.shape)
    bright = ndimage.binary_opening((flair[box] > median + FLAIR_Z * max(mad, 1e-9)) & brain[box], iterations=1)
    labels, n = ndimage.label(bright)
    if n == 0:
        return box, labels, np.zeros(0, np.int64), np.zeros(0)
    counts = ndimage.sum(bright, labels, np.arange(1, n + 1))  # voxels per component (exact in float64)
    keep = np.flatnonzero(counts * voxel_ml >= FLAIR_MIN_COMPONENT_ML)
    return box, labels, keep + 1, counts[keep]


def flair_abnormality(flair: np.ndarray, brain: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Label-free FLAIR-hyperintense region (bool), see the module docstring."""
    box, labels, kept, _ = _abnormal_components(flair, brain, voxel_ml)
    out = np.zeros(np.shape(brain), bool)
    if kept.size:
        out[box] = np.isin(labels, kept)
    return out


def flair_abnormality_ml(flair: np.ndarray, brain: np.ndarray, voxel_ml: float) -> float:
    """The volume (ml) of :func:`flair_abnormality`, ``float(mask.sum() * voxel_ml)``, from the components' voxel
    counts (no mask is made)."""
    _, _, _, counts = _abnormal_components(flair, brain, voxel_ml)
    return float(np.int64(round(float(counts.sum()))) * voxel_ml)


@dataclass
class TumorROI:
    mask: np.ndarray
    source: str  # "user" | "segmentation head"
    volume_ml: float
    confidence: float | None  # mean head probability inside (None for a user ROI)
    flair_abnormal_ml: float | None
    implausible: str = ""  # why the segmentation cannot carry a status call ("" = plausible)

    @property
    def weight(self) -> float:
        """How much the BBB status decided on this ROI can be trusted, 0-1 (1 for a user ROI).

        The product of the segmentation's confidence, ramping from 0 at ``MIN_CONFIDENCE`` to 1 at
        ``FULL_CONFIDENCE`` mean probability, and its volume agreement with the FLAIR abnormality,
        1 within 1/2-2x and falling linearly in log-ratio to 0 at the implausible edges 1/3 and 3x.
        0 for an implausible ROI. The pipeline shrinks p(disrupted) towards 0.5 by it:
        p = 0.5 + weight (p_identifier - 0.5), so an unsure segmentation cannot carry a confident call."""
        if self.source == "user":
            return 1.0
        if self.implausible or self.confidence is None or not self.flair_abnormal_ml:
            return 0.0
        conf = float(np.clip((self.confidence - MIN_CONFIDENCE) / (FULL_CONFIDENCE - MIN_CONFIDENCE), 0.0, 1.0))
        ratio = abs(float(np.log(self.volume_ml / self.flair_abnormal_ml)))
        inner, outer = np.log(2.0), np.log(VOLUME_RATIO[1])
        volume = float(np.clip((outer - ratio) / (outer - inner), 0.0, 1.0))
        return conf * volume

    def to_json(self) -> dict:
        return {"tumor_roi": self.source, "tumor_roi_voxels": int(self.mask.sum()),
                "tumor_roi_ml": self.volume_ml, "segmentation_confidence": self.confidence,
                "flair_abnormality_ml": self.flair_abnormal_ml, "roi_plausible": not self.implausible,
                "roi_weight": self.weight}


def choose_roi(user_tumor, probability: np.ndarray, flair: np.ndarray | None, brain: np.ndarray, voxel_ml: float,
               threshold: float = 0.5, min_tumor_ml: float = MIN_TUMOR_ML, *, flair_ml: float | None = None) -> TumorROI:
    """The user's mask, or the segmentation head's tumor with its plausibility.

    ``probability``: the head's probability on the grid (0 off the brain), or its brain voxels' values (C order
    of ``brain``; issue 17: no full volume). ``flair_ml``: :func:`flair_abnormality_ml` computed beforehand (then
    ``flair`` is not read and may be None)."""
    if user_tumor is not None:
        return TumorROI(user_tumor, "user", float(user_tumor.sum() * voxel_ml), None, None)
    if flair_ml is None:
        flair_ml = flair_abnormality_ml(flair, brain, voxel_ml)
    brain = np.asarray(brain, bool)
    probability = np.asarray(probability)
    if probability.shape != brain.shape:  # brain values: the same voxels, in the same order, as the full map's
        inside = probability >= threshold
        tumor = np.zeros(brain.shape, bool)
        tumor[brain] = inside
    else:
        inside = None
        tumor = (probability >= threshold) & brain
    if not tumor.any():
        peak = float(probability.max())  # the brain's values are >= 0: the same maximum as the full map's zeros
        fallback = brain.copy()
        if peak > 0:  # (probability >= peak / 2) & brain
            hit = probability >= 0.5 * peak
            fallback[brain] = hit if inside is not None else hit[brain]
        return TumorROI(fallback, "segmentation head", 0.0, peak, flair_ml,
                        f"the segmentation head found no tumor (highest probability {peak:.2f}); give a tumor ROI")
    volume = float(tumor.sum() * voxel_ml)
    confidence = float((probability[inside] if inside is not None else probability[tumor]).mean())
    roi = TumorROI(tumor, "segmentation head", volume, confidence, flair_ml)
    if volume < min_tumor_ml:
        roi.implausible = f"the segmented tumor is tiny ({volume:.1f} ml < {min_tumor_ml:g} ml); give a tumor ROI"
    elif confidence < MIN_CONFIDENCE:
        roi.implausible = (f"the segmentation is uncertain (mean probability {confidence:.2f} < {MIN_CONFIDENCE}); "
                           "give a tumor ROI")
    elif flair_ml <= 0:
        roi.implausible = (f"the segmented tumor ({volume:.0f} ml) has no FLAIR abnormality to match it; "
                           "check the inputs or give a tumor ROI")
    elif not VOLUME_RATIO[0] <= volume / flair_ml <= VOLUME_RATIO[1]:
        roi.implausible = (f"the segmented tumor ({volume:.0f} ml) is far from the FLAIR abnormality ({flair_ml:.0f} ml; "
                           f"plausible 1/3-3x); give a tumor ROI")
    return roi
