"""Arterial input function: the mean of a user's arterial mask, or automatic selection.

Automatic selection follows Mouridsen et al. (MRM 2006): among brain voxels keep the 10 % with
the largest curve area, drop the 25 % roughest of those (noise and partial volume), cluster the
area-normalised curves with k-means (5 clusters), keep the cluster with the earliest first
moment, cluster that again, and average the earliest cluster. Arterial curves are early, high
and narrow; the first moment picks early, the normalisation makes narrow curves peak higher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid

from ..errors import InputError

#: An AIF whose peak is below this many baseline standard deviations shows no bolus.
MIN_AIF_PEAK_SNR = 3.0


@dataclass
class AIFSelection:
    curve: np.ndarray  # (N,) arterial ΔR2* [1/s]
    voxels: np.ndarray  # indices (into the analysed voxels) that were averaged
    method: str  # "mask" or "auto"

    def to_json(self, times: np.ndarray) -> dict:
        peak = int(np.argmax(self.curve))
        return {
            "method": self.method,
            "n_voxels": int(self.voxels.size),
            "peak": float(self.curve[peak]),
            "peak_time_s": float(times[peak]),
            "area": float(trapezoid(self.curve, times)),
        }


def check_aif_curve(curve: np.ndarray, baseline: slice, source: str) -> None:
    """Refuse an AIF that shows no bolus: it would silently give nonsense maps."""
    base = curve[baseline]
    noise = base.std() if base.size > 1 else 0.0
    peak = curve.max()
    if not np.isfinite(curve).all():
        raise InputError(f"the AIF from {source} contains NaN or infinite values")
    if peak <= 0 or (noise > 0 and (peak - base.mean()) < MIN_AIF_PEAK_SNR * noise):
        raise InputError(
            f"the AIF from {source} shows no contrast bolus (peak {peak:.3g} vs baseline noise {noise:.3g}); "
            "place the AIF ROI on a large artery (e.g. the middle cerebral artery) or use --aif auto"
        )


def aif_from_mask(curves: np.ndarray, in_aif: np.ndarray, baseline: slice) -> AIFSelection:
    """Mean curve of the voxels flagged in `in_aif` (a boolean over the analysed voxels)."""
    idx = np.flatnonzero(in_aif)
    if idx.size == 0:
        raise InputError(
            "the AIF mask has no voxel inside the analysed brain region; draw it on an artery inside the "
            "brain mask (or widen --mask)"
        )
    curve = curves[idx].mean(axis=0, dtype=np.float64)
    check_aif_curve(curve, baseline, "--aif-mask")
    return AIFSelection(curve, idx, "mask")


def auto_aif(curves: np.ndarray, times: np.ndarray, baseline: slice, n_clusters: int = 5,
             top_area: float = 0.10, drop_rough: float = 0.25, seed: int = 0) -> AIFSelection:
    """Mouridsen-style automatic AIF over (n, N) ΔR2* curves; returns the chosen voxel indices."""
    from sklearn.cluster import KMeans

    area = trapezoid(curves, times, axis=1)
    candidates = np.flatnonzero(area >= np.quantile(area, 1.0 - top_area))
    candidates = candidates[area[candidates] > 0]
    if candidates.size < 2 * n_clusters:
        raise InputError("too few voxels with a contrast bolus for automatic AIF selection; give --aif-mask")
    c = curves[candidates].astype(np.float64)
    roughness = (np.diff(c, n=2, axis=1) ** 2).sum(axis=1) / area[candidates] ** 2
    candidates = candidates[roughness <= np.quantile(roughness, 1.0 - drop_rough)]
    for _ in range(2):
        normalised = curves[candidates] / area[candidates, None]
        k = min(n_clusters, max(candidates.size // 2, 1))
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(normalised)
        first_moment = np.array([
            trapezoid(times * normalised[labels == j].mean(axis=0), times) for j in range(k)
        ])
        candidates = candidates[labels == int(np.argmin(first_moment))]
    curve = curves[candidates].mean(axis=0, dtype=np.float64)
    check_aif_curve(curve, baseline, "automatic selection")
    return AIFSelection(curve, candidates, "auto")
