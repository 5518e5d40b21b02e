"""Arterial input function: the mean of a user's arterial mask, or automatic selection.

Automatic selection follows Mouridsen et al. (MRM 2006): among brain voxels keep the 10 % with
the largest curve area, drop the 25 % noisiest of those, cluster the area-normalised curves with
k-means (5 clusters), keep the cluster with the earliest first moment, cluster that again, and
average the earliest cluster. Arterial curves are early, high and narrow; the first moment picks
early, the normalisation makes narrow curves peak higher.

One deliberate difference: Mouridsen's roughness is ∫C''(t)² over the whole curve, which is
largest for exactly the sharp arterial peaks we are looking for (on a clean reference object it
drops every arterial voxel). We measure roughness where the true curve is flat — the second
differences over the pre-bolus baseline — relative to the curve's peak: a noise-to-signal ratio.
And a second: areas, normalisation and first moments are taken over the first pass only (from
the start to the brain-mean peak plus 1.5 times its rise time). Over the whole acquisition the
arterial recirculation and steady-state tail dominate both area and first moment and make the
artery look late. And a third: a candidate's area must also reach 20 % of the largest areas
(the 5th largest, for robustness): Mouridsen worked on slices through the middle cerebral artery,
where 10 % of the voxels include many arterial ones; over a whole brain, 10 % is thousands of
noisy tissue voxels in which k-means cannot isolate a few dozen arterial curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid

from ..core.errors import InputError

#: An AIF whose peak is below this many baseline standard deviations shows no bolus.
MIN_AIF_PEAK_SNR = 3.0
#: The second clustering round is skipped when it would leave fewer voxels than this.
MIN_AIF_VOXELS = 5


@dataclass
class AIFSelection:
    curve: np.ndarray  # (N,) arterial ΔR2* [1/s]
    voxels: np.ndarray  # indices (into the analysed voxels) that were averaged
    method: str  # "mask" (all voxels averaged), "region" (arterial voxels chosen in a region) or "auto"

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


def aif_in_region(curves: np.ndarray, in_region: np.ndarray, baseline: slice) -> AIFSelection:
    """The arterial voxels inside a search region (e.g. a ROI box drawn around an artery): those
    whose ΔR2* peak passes :func:`BBBAnomalyLib.perfusion.arterial.arterial_in_region`, averaged."""
    from ..perfusion.arterial import arterial_in_region

    idx = np.flatnonzero(in_region)
    if idx.size == 0:
        raise InputError("the AIF region has no voxel with signal inside the analysed region; draw it on an artery")
    peaks = curves[idx].max(axis=1) - curves[idx][:, baseline].mean(axis=1)
    chosen = idx[arterial_in_region(peaks)]
    curve = curves[chosen].mean(axis=0, dtype=np.float64)
    check_aif_curve(curve, baseline, "the AIF region")
    return AIFSelection(curve, chosen, "region")


def auto_aif(curves: np.ndarray, times: np.ndarray, baseline: slice, arrival: int, n_clusters: int = 5,
             top_area: float = 0.10, min_relative_area: float = 0.2, drop_rough: float = 0.25,
             seed: int = 0) -> AIFSelection:
    """Mouridsen-style automatic AIF over (n, N) ΔR2* curves; returns the chosen voxel indices.

    arrival: frame of the bolus arrival (from the baseline detection); it anchors the first pass.
    """
    from ..perfusion.arterial_auto import select_arterial_voxels  # the rule DSC and DCE share

    candidates = select_arterial_voxels(curves, times, baseline, arrival, n_clusters=n_clusters, top_area=top_area,
                                        min_relative_area=min_relative_area, drop_rough=drop_rough, seed=seed)
    if candidates is None:
        raise InputError("too few voxels with a contrast bolus for automatic AIF selection; give --aif-mask")
    curve = curves[candidates].mean(axis=0, dtype=np.float64)
    check_aif_curve(curve, baseline, "automatic selection")
    return AIFSelection(curve, candidates, "auto")
