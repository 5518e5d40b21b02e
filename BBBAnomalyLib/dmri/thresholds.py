"""From an anomaly score map to an anomaly mask.

Label-free thresholds (what a run uses): ``fixed`` (a number from healthy data: the model card's
value, or the user's), ``otsu`` (on the scores of the analysed voxels), ``meanpool`` (the maximum
of the map mean-pooled over a 38.4 mm cube, the seed's 16 voxels of 2.4 mm). The mask is
``score > threshold`` inside the brain, then a morphological opening with a 3×3×3 cube.

Ground-truth thresholds (Youden's J on the ROC, Dice-optimal) need the lesion labels, so they are
evaluation tools only: :func:`oracle_thresholds` is used by scripts/validate_dmri.py and never by a
run, and its results are labelled "oracle" wherever they are reported.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.errors import InputError


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's between-class-variance maximum over a histogram of ``values``."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() == values.max():
        raise InputError("the anomaly map is constant inside the brain; Otsu's threshold is undefined "
                         "(use --threshold fixed)")
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def meanpool_threshold(score: np.ndarray, voxel_mm, window_mm: float = 38.4) -> float:
    """Max of the score map mean-pooled (stride 1, zeros outside) over a ``window_mm`` cube."""
    size = [max(1, int(round(window_mm / v))) for v in np.asarray(voxel_mm, np.float64)]
    pooled = ndimage.uniform_filter(np.asarray(score, np.float32), size=size, mode="constant", cval=0.0)
    return float(pooled.max())


def anomaly_mask(score: np.ndarray, brain: np.ndarray, threshold: float, opening: bool = True) -> np.ndarray:
    mask = (score > threshold) & brain
    if opening:
        mask = ndimage.binary_opening(mask, structure=np.ones((3, 3, 3), bool))
    return mask


# --- evaluation only: these read the ground truth ---------------------------------------------
def oracle_thresholds(labels: np.ndarray, scores: np.ndarray, dice_of=None, n_candidates: int = 48) -> dict:
    """{"youden": t, "dice_optimal": t} from ground-truth ``labels`` (evaluation only, "oracle").

    Dice-optimal is searched over quantiles of the scores; ``dice_of(t)`` gives the Dice of the
    final mask at threshold t (with the opening), else the voxel-level Dice without opening is used.
    """
    from ..metrics import youden_cutoff

    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    youden = float(youden_cutoff(labels, scores).threshold)
    candidates = np.unique(np.quantile(scores, np.linspace(0.3, 0.999, n_candidates)))
    if dice_of is None:
        positives = labels.sum()

        def dice_of(t):
            return 2 * np.sum((scores > t) & labels) / max(positives + np.sum(scores > t), 1)

    dices = [dice_of(t) for t in candidates]
    return {"youden": youden, "dice_optimal": float(candidates[int(np.argmax(dices))])}
