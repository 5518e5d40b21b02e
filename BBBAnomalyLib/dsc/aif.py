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
#: An AIF whose ΔR2* peak is below this many times the brain's median tissue peak looks like tissue, not an artery
#: (:func:`BBBAnomalyLib.perfusion.arterial.tissue_peak_ratio`), and is refused: its maps would be absurd (a
#: white-matter mask gave brain CBV 114 ml/100 g, round 17's audit). Physics: arterial blood against tissue holding
#: 2-5 % of it, so an artery peaks 5-10 times grey matter's curve and more than that over the brain's median (which
#: white matter pulls below grey matter's), even with saturation and some partial volume.
#: Measured (round 17, the DSC reference object, 4-12 slices and the whole brain, SNR 5-100, frames 1-2.5 s,
#: dispersion 0-2 s, arterial peak 20-100 1/s, exponential or plug-flow residue): its arterial mask 45-140 (plug flow
#: 45, else 64-140); the automatic AIF 13-89; the arterial mask widened in-plane so that 25 % of its voxels are
#: artery 17-37, 11 % artery 6.0-17 (CBV then ~8x too high); the bad-input tests' synthetic case 9.9. Tissue drawn
#: as the AIF (40 voxels): NAWM 0.3-1.9, WM 0.5-1.0, GM 1.0-2.5 (above 2 only at SNR 5), enhancing rim 1.5-3.3 (a rim
#: mask can pass). 2 is 3x below the sloppiest partial-volume mask measured, 6x below the lowest automatic AIF and
#: 22x below a real arterial mask.
MIN_AIF_TISSUE_PEAK_RATIO = 2.0


@dataclass
class AIFSelection:
    curve: np.ndarray  # (N,) arterial ΔR2* [1/s]
    voxels: np.ndarray  # indices (into the analysed voxels) that were averaged
    method: str  # "mask" (all voxels averaged), "region" (arterial voxels chosen in a region) or "auto"
    tissue_peak_ratio: float | None = None  # peak over the brain's median tissue peak (None: not measured)

    def to_json(self, times: np.ndarray) -> dict:
        peak = int(np.argmax(self.curve))
        out = {
            "method": self.method,
            "n_voxels": int(self.voxels.size),
            "peak": float(self.curve[peak]),
            "peak_time_s": float(times[peak]),
            "area": float(trapezoid(self.curve, times)),
        }
        if self.tissue_peak_ratio is not None:
            out["tissue_peak_ratio"] = round(self.tissue_peak_ratio, 3)
        return out


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


def check_aif_is_arterial(curve: np.ndarray, curves: np.ndarray, in_aif: np.ndarray, baseline: slice,
                          source: str, fix: str) -> float | None:
    """Refuse an AIF that peaks hardly higher than the brain's tissue (a mask drawn on tissue): CBV and CBF would
    be many times too high. Returns the measured ratio (None where the brain gives no reference)."""
    from ..perfusion import arterial

    ratio = arterial.tissue_peak_ratio(curve, curves, in_aif, baseline)
    if ratio is not None and ratio < MIN_AIF_TISSUE_PEAK_RATIO:
        raise InputError(
            f"{source} looks like tissue, not an artery: its ΔR2* peak is only {ratio:.1f} times the brain's median "
            f"tissue peak (an artery's is 10 times or more; at least {MIN_AIF_TISSUE_PEAK_RATIO:g} is needed); {fix}")
    return ratio


#: How to fix an AIF that is not arterial, by where it came from.
_DRAW_ON_ARTERY = "draw the mask on a large artery (e.g. the MCA or ICA) or use --aif auto"


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
    ratio = check_aif_is_arterial(curve, curves, in_aif, baseline, "the AIF from --aif-mask", _DRAW_ON_ARTERY)
    return AIFSelection(curve, idx, "mask", ratio)


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
    ratio = check_aif_is_arterial(curve, curves, _flags(chosen, curves.shape[0]), baseline,
                                  "the AIF chosen in the --aif-search region",
                                  "draw the region around a large artery (e.g. the MCA or ICA) or use --aif auto")
    return AIFSelection(curve, chosen, "region", ratio)


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
    ratio = check_aif_is_arterial(curve, curves, _flags(candidates, curves.shape[0]), baseline,
                                  "the automatically chosen AIF",
                                  "give --aif-mask on a large artery (e.g. the MCA or ICA)")
    return AIFSelection(curve, candidates, "auto", ratio)


def _flags(indices: np.ndarray, n: int) -> np.ndarray:
    flags = np.zeros(n, bool)
    flags[indices] = True
    return flags
