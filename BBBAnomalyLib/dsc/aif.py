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
noisy tissue voxels in which k-means cannot isolate a few dozen arterial curves. Since session 20 the
selection is noise-aware (perfusion/arterial_auto.py): candidates must stand 8 noise SDs out of the brain's
first-pass areas, clusters of one timing (within the first moment's noise) are averaged together, and the
automatic AIF is refused where its voxels stand fewer than ``MIN_AUTO_AIF_CLEARANCE`` noise SDs out: at SNR 5-10
tissue had been chosen (GM CBF 1.7-9x the arterial mask's, exit 0), at SNR 20 often a single arterial voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.integrate import trapezoid

from ..core.errors import InputError

if TYPE_CHECKING:
    from ..perfusion.arterial import FirstPassLead

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
#: An AIF whose bolus does not pass at least this many of the tissue's bolus spreads before the brain's median tissue
#: curve is refused (:func:`BBBAnomalyLib.perfusion.arterial.first_pass_lead`): tissue is the arterial curve convolved
#: with its residue, so an artery's first pass leads the tissue's by about its transit time (4-6 s in grey and white
#: matter); a mask on tissue passes with the tissue, one on a vein after it. It sees what the peak ratio cannot: a
#: grey-matter or enhancing-rim mask that peaks 2-7.6 times the brain's median tissue, and a vein (as the AIF, a
#: venous curve gave grey matter 0.55x the CBF of the arterial mask on the object, oSVD: a venous output function
#: rescales an AIF's area, it is not the input). The lead is in units of the tissue's spread (the SD of its bolus
#: about its centre; 2-7 s, 1-6 frames on the object), so that it reads the same at any frame interval.
#: Measured (round 18, scripts/aif_plausibility.py; the DSC reference object, 4-6 slices and the whole brain, seeds
#: 0-5, noiseless and SNR 100, 50, 20, 10, 5, frames 1-2.5 s, tissue delay 0-4 s, dispersion 0-4 s, arterial peak
#: 20-100 1/s, exponential or box residue, an early bolus; every look of the pipeline at its AIF, the smallest lead):
#: at SNR 20 and above, the arterial mask 1.16-2.57, the automatic AIF 1.15-2.70, a search region (the 11 % box)
#: 1.16-2.57, the arterial mask widened in-plane so that 25 % of its voxels are artery 1.12-2.52, 11 % 1.05-2.61,
#: 8 % 0.96-1.94, 5 % 0.80-1.58; masks the peak ratio passed, drawn on grey matter 0.12-0.16 (noiseless only: with
#: noise the ratio refuses them), the enhancing rim -0.79-0.17 (40 voxels) and -0.84-0.03 (all of it), a box on the
#: sinus's site (tissue there) -1.24-0.16, a vein (a sinus-like tube added for the measurement) -1.37 to -0.09.
#: 0.4 is half-way (in log) between the 11 % mask (1.05) and the most-leading wrong mask (0.17): 2.6x and 2.4x from
#: them; 2.0x below the 5 % mask. At SNR 10 and 5: real masks 0.55 or more (8 and 5 % artery at SNR 5; the arterial
#: mask 0.99), wrong masks that passed the ratio by their noise at SNR 5 (4 of 476 white-matter masks, 1 grey-matter)
#: 0.26 or less, and one automatic AIF (SNR 10, 2 s frames) led by 0.36 at the pipeline's first look and is refused:
#: it was not arterial (the run without this check kept an AIF peaking at 7.9 1/s against the artery's 46, and gave
#: grey-matter CBV and CBF 2.5x those of the arterial mask).
#: Since session 19 a drawn AIF (mask or search region) is checked once, under the baseline the pipeline keeps, not
#: at its first look under the brain's baseline (where an early artery's bolus lies inside the baseline): the same
#: 119 settings then accept every real mask (the 8 and 5 % masks had been refused by the ratio at the first look in
#: 10 and 19 of them; real masks lead by 0.61 or more, the arterial mask 1.01-2.57), and refuse every wrong mask the
#: script draws, as before; the automatic AIF is still checked at each look (118 accepted, the SNR-10 one refused).
MIN_AIF_TISSUE_LEAD = 0.4
#: The automatic AIF is refused where the median of its voxels' first-pass areas stands fewer than this many noise
#: SDs above the brain's median area (:func:`BBBAnomalyLib.perfusion.arterial_auto.area_noise_z`; its candidates must
#: stand 8, ``POOL_NOISE_Z``). Choosing the arteries by a noisy area keeps the ones whose noise raised it: where the
#: arteries' areas reach down to the pool's cut, the chosen AIF's area is biased high and CBV and CBF low. Measured
#: (session 20, scripts/dsc_auto_aif_low_snr.py, the DSC object, 4 and 12 slices, frames 1-2 s, seeds 0-1, every
#: chosen voxel arterial): the chosen AIF's first-pass area over the arterial mask's was 1.00-1.06 at SNR 10 and
#: above (median clearance 17-46), 1.03-1.10 at SNR 7 (12-16), 1.04-1.25 at SNR 5 (9.0-12.0); 12 is 1.4x below
#: every SNR-10 setting and refuses all but one SNR-5 setting (1.10).
MIN_AUTO_AIF_CLEARANCE = 12.0


@dataclass
class AIFSelection:
    curve: np.ndarray  # (N,) arterial ΔR2* [1/s]
    voxels: np.ndarray  # indices (into the analysed voxels) that were averaged
    method: str  # "mask" (all voxels averaged), "region" (arterial voxels chosen in a region) or "auto"
    tissue_peak_ratio: float | None = None  # peak over the brain's median tissue peak (None: not measured)
    tissue_lead: FirstPassLead | None = None  # its bolus's lead over the brain's median tissue (None: not measured)
    noise_clearance: float | None = None  # automatic: its voxels' median first-pass area, in noise SDs over the brain's

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
        if self.tissue_lead is not None:  # how much earlier than the brain's median tissue its bolus passes
            out["tissue_lead_s"] = round(self.tissue_lead.seconds(times), 3)
            out["tissue_lead_spreads"] = round(self.tissue_lead.spreads, 3)
        if self.noise_clearance is not None and np.isfinite(self.noise_clearance):
            out["noise_clearance"] = round(self.noise_clearance, 2)
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
    # A bolus peaks after the pre-bolus baseline. A curve whose largest value lies in or before the baseline is noise
    # (a mask spread over CSF at SNR 5 peaked at frame 0 with a negative area and passed every other check).
    at = int(np.argmax(curve))
    if baseline.stop is not None and at < baseline.stop:
        raise InputError(
            f"the AIF from {source} shows no contrast bolus: its largest value is at frame {at}, inside or before the "
            f"pre-bolus baseline (frames {baseline.start or 0}-{baseline.stop - 1}); place the AIF ROI on a large artery "
            "(e.g. the middle cerebral artery) or use --aif auto"
        )


def check_aif_is_arterial(curve: np.ndarray, curves: np.ndarray, in_aif: np.ndarray, baseline: slice,
                          source: str, fix: str) -> tuple[float | None, FirstPassLead | None]:
    """Refuse an AIF that is not arterial, against the brain's median tissue curve: one that peaks hardly higher than
    the tissue (a mask drawn on tissue: CBV and CBF many times too high), or whose bolus does not pass before the
    tissue's (a mask on tissue or on a vein). Returns (the peak ratio, the :class:`FirstPassLead`), each None where
    the brain gives no reference."""
    from ..perfusion import arterial

    median = arterial.tissue_median(curves, in_aif)  # the one tissue reference of both checks
    ratio = arterial.tissue_peak_ratio(curve, curves, in_aif, baseline, median=median)
    if ratio is not None and ratio < MIN_AIF_TISSUE_PEAK_RATIO:
        raise InputError(
            f"{source} looks like tissue, not an artery: its ΔR2* peak is only {ratio:.1f} times the brain's median "
            f"tissue peak (an artery's is 10 times or more; at least {MIN_AIF_TISSUE_PEAK_RATIO:g} is needed); {fix}")
    lead = arterial.first_pass_lead(curve, median, baseline) if median is not None else None
    if lead is not None and lead.spreads < MIN_AIF_TISSUE_LEAD:
        need = MIN_AIF_TISSUE_LEAD * lead.tissue_spread
        when = f"{lead.frames:.1f} frames before" if lead.frames >= 0.05 else (
            "with" if lead.frames > -0.05 else f"{-lead.frames:.1f} frames after")
        raise InputError(
            f"{source} looks like tissue or a vein, not an artery: its ΔR2* bolus passes {when} the brain's median "
            f"tissue curve (an artery's passes earlier, by the tissue's transit time: at least {need:.1f} frames "
            f"here, {MIN_AIF_TISSUE_LEAD:g} of the tissue bolus's spread of {lead.tissue_spread:.1f} frames); {fix}")
    return ratio, lead


#: How to fix an AIF that is not arterial, by where it came from.
_DRAW_ON_ARTERY = "draw the mask on a large artery (e.g. the MCA or ICA) or use --aif auto"
#: What each kind of selection is called in a refusal, and how to fix it: (source of the bolus check, source of the
#: arterial check, the fix)
_SOURCES = {
    "mask": ("--aif-mask", "the AIF from --aif-mask", _DRAW_ON_ARTERY),
    "region": ("the AIF region", "the AIF chosen in the --aif-search region",
               "draw the region around a large artery (e.g. the MCA or ICA) or use --aif auto"),
    "auto": ("automatic selection", "the automatically chosen AIF",
             "give --aif-mask on a large artery (e.g. the MCA or ICA)"),
}


def check_selection(selection: AIFSelection, curves: np.ndarray, baseline: slice) -> AIFSelection:
    """The selection, refused (InputError) if its curve shows no bolus or is not arterial against the brain's
    curves under this baseline; returned with its peak ratio and first-pass lead filled in.

    Apart from the selectors (``check=False``) because the pipeline may end the baseline earlier once it has seen
    the AIF: an artery that leads the brain's average by more than its own bolus has its whole first pass inside the
    brain's baseline, and checked there it looks like no bolus at all (a real arterial mask was refused, tissue
    delayed 6 s; session 19's AIF audit). The pipeline checks once, under the baseline it keeps."""
    bolus_source, source, fix = _SOURCES[selection.method]
    check_aif_curve(selection.curve, baseline, bolus_source)
    flags = _flags(selection.voxels, curves.shape[0])
    selection.tissue_peak_ratio, selection.tissue_lead = check_aif_is_arterial(selection.curve, curves, flags,
                                                                               baseline, source, fix)
    return selection


def aif_from_mask(curves: np.ndarray, in_aif: np.ndarray, baseline: slice, check: bool = True) -> AIFSelection:
    """Mean curve of the voxels flagged in `in_aif` (a boolean over the analysed voxels); checked
    (:func:`check_selection`) unless ``check=False``."""
    idx = np.flatnonzero(in_aif)
    if idx.size == 0:
        raise InputError(
            "the AIF mask has no voxel inside the analysed brain region; draw it on an artery inside the "
            "brain mask (or widen --mask)"
        )
    selection = AIFSelection(curves[idx].mean(axis=0, dtype=np.float64), idx, "mask")
    return check_selection(selection, curves, baseline) if check else selection


def aif_in_region(curves: np.ndarray, in_region: np.ndarray, baseline: slice, check: bool = True) -> AIFSelection:
    """The arterial voxels inside a search region (e.g. a ROI box drawn around an artery): those
    whose ΔR2* peak passes :func:`BBBAnomalyLib.perfusion.arterial.arterial_in_region`, averaged;
    checked (:func:`check_selection`) unless ``check=False``."""
    from ..perfusion.arterial import arterial_in_region

    idx = np.flatnonzero(in_region)
    if idx.size == 0:
        raise InputError("the AIF region has no voxel with signal inside the analysed region; draw it on an artery")
    peaks = curves[idx].max(axis=1) - curves[idx][:, baseline].mean(axis=1)
    chosen = idx[arterial_in_region(peaks)]
    selection = AIFSelection(curves[chosen].mean(axis=0, dtype=np.float64), chosen, "region")
    return check_selection(selection, curves, baseline) if check else selection


def auto_aif(curves: np.ndarray, times: np.ndarray, baseline: slice, arrival: int, n_clusters: int = 5,
             top_area: float = 0.10, min_relative_area: float = 0.2, drop_rough: float = 0.25,
             seed: int = 0, check: bool = True, saturation_te: float | None = None) -> AIFSelection:
    """Mouridsen-style automatic AIF over (n, N) ΔR2* curves; returns the chosen voxel indices, checked
    (:func:`check_selection`) unless ``check=False``. Noise-aware (session 20): only voxels whose first-pass area
    stands clear of the brain's noise are candidates, and clusters of one timing are averaged together
    (:func:`BBBAnomalyLib.perfusion.arterial_auto.select_arterial_voxels`); refused where too few stand clear.

    arrival: frame of the bolus arrival (from the baseline detection); it anchors the first pass.
    saturation_te: the echo time [s] of single-echo signal input: a refusal of chosen voxels whose peak is cut off at
    the noise floor then says so (:func:`.aif_saturation.saturation_hint`).
    """
    from ..perfusion import arterial_auto as rule  # the rule DSC and DCE share

    stop = rule.first_pass_stop(curves, arrival)
    area = rule.first_pass_areas(curves[:, :stop], times[:stop])
    noise_z = rule.area_noise_z(curves, times, baseline, stop, area)
    candidates = rule.select_arterial_voxels(curves, times, baseline, arrival, n_clusters=n_clusters,
                                             top_area=top_area, min_relative_area=min_relative_area,
                                             drop_rough=drop_rough, seed=seed, first_pass=(stop, area),
                                             noise_z=noise_z)
    if candidates is None:
        raise InputError(
            f"the automatic AIF found no voxel whose bolus stands out of the noise (a first-pass area "
            f"{rule.POOL_NOISE_Z:g} noise SDs above the brain's median): too noisy for a trustworthy automatic AIF; "
            "draw --aif-mask on a large artery (e.g. the MCA or ICA)")
    clearance = float(np.median(noise_z[candidates]))
    if clearance < MIN_AUTO_AIF_CLEARANCE:
        raise InputError(
            f"the automatic AIF's voxels stand only {clearance:.1f} noise SDs out of the brain's first-pass areas (at "
            f"least {MIN_AUTO_AIF_CLEARANCE:g} are needed; lower, choosing arteries by their noisy bolus biases CBV and "
            "CBF): too noisy for a trustworthy automatic AIF; draw --aif-mask on a large artery (e.g. the MCA or ICA)")
    selection = AIFSelection(curves[candidates].mean(axis=0, dtype=np.float64), candidates, "auto",
                             noise_clearance=clearance)
    if not check:
        return selection
    from .aif_saturation import saturation_hint

    with saturation_hint(curves, _flags(candidates, curves.shape[0]), baseline, saturation_te, times):
        return check_selection(selection, curves, baseline)


def _flags(indices: np.ndarray, n: int) -> np.ndarray:
    flags = np.zeros(n, bool)
    flags[indices] = True
    return flags
