"""Which voxels of a drawn search region are arterial (the rule DSC and DCE share).

A ROI box drawn around an artery also holds tissue, CSF and often air; averaging all of it
dilutes the arterial input function (on the DSC phantom a box 2 voxels wider than the artery gave
0.17x the arterial peak and 5.4x the GM CBV, docs/design.md). Arterial curves peak far higher
than anything else in such a box, so a voxel counts as arterial when its bolus peak reaches
``REGION_PEAK_FRACTION`` of the region's 90th-percentile peak; at least ``MIN_REGION_VOXELS``
(the highest) are always kept.

And whether an AIF is arterial at all, against the brain's median tissue curve (:func:`tissue_median`): its
peak over the tissue's (:func:`tissue_peak_ratio`); DSC and DCE refuse an AIF mask whose ratio is tissue-like, each
with its own threshold (``MIN_AIF_TISSUE_PEAK_RATIO`` in dsc/aif.py and dce/aif.py, where the measured values are
given). And when its bolus passes (:func:`first_pass_lead`): tissue is the arterial curve convolved with its residue,
so an artery's first pass comes before the tissue's; DSC refuses an AIF that does not lead (``MIN_AIF_TISSUE_LEAD``
in dsc/aif.py). DCE does not: measured, no timing or shape statistic separates arteries from wrong masks there
(dce/aif.py, ``check_aif_is_arterial``).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def tissue_median(curves, in_aif: np.ndarray) -> np.ndarray | None:
    """The brain's typical tissue curve (T,) float64: the frame-by-frame median of the analysed voxels' curves that
    are not the AIF's (at most TISSUE_SAMPLE of them, evenly strided; ``curves`` is read only as
    ``curves[indices]``), or None with fewer than MIN_TISSUE_VOXELS tissue voxels. The one reference of
    :func:`tissue_peak_ratio` and :func:`first_pass_lead`, computed once per check."""
    tissue = np.flatnonzero(~np.asarray(in_aif, dtype=bool))
    if tissue.size < MIN_TISSUE_VOXELS:
        return None
    rows = tissue[:: -(-tissue.size // TISSUE_SAMPLE)]
    return np.median(np.asarray(curves[rows], dtype=np.float32), axis=0).astype(np.float64)


def tissue_peak_ratio(aif: np.ndarray, curves, in_aif: np.ndarray, baseline: slice,
                      median: np.ndarray | None = None) -> float | None:
    """How many times the brain's typical tissue curve an AIF's bolus peak is (the rule DSC and DCE share).

    An artery holds blood only; tissue holds a few percent of it (DSC: CBV 2-5 ml/100 ml; DCE: vp 0.01-0.05 plus
    a little leakage), so an arterial curve peaks many times higher than tissue's, even averaged with some
    partial-volume tissue. A mask drawn on tissue peaks about as high as the tissue around it.

    aif: (T,) the AIF's curve (the mean of its voxels, before any hematocrit scaling); curves: (n, T) the analysed
    voxels' curves (an array, or rows converted on demand: read only as ``curves[indices]``); in_aif: boolean (n,),
    the voxels averaged into the AIF, left out of the tissue; baseline: the pre-contrast frames; median: the
    :func:`tissue_median` of ``curves`` when the caller has it (``curves`` is then not read). Returns the AIF's
    peak rise over the peak rise of the tissue's median curve (each above its baseline mean, less NOISE_SDS of its
    baseline SD), or None where there is no reference: fewer than MIN_TISSUE_VOXELS tissue voxels, or a tissue
    median that does not rise above its noise.
    """
    if median is None:
        median = tissue_median(curves, in_aif)
    if median is None:
        return None
    rise = _rise(median, baseline)
    if not rise > 0:
        return None
    return _rise(np.asarray(aif, dtype=np.float64), baseline) / rise


#: :func:`first_pass_lead` takes each curve's bolus as its part above this fraction of its own peak in the tissue's
#: first pass: the centre of that part is a time to peak that noise hardly moves (a peak frame jumps by a frame or
#: more at SNR 20), and the arterial recirculation (about 13 % of its peak in the DSC object) and the baseline noise
#: stay out of it. Measured on the DSC object (dsc/aif.py, SNR 20 to noiseless): the least-leading real AIF and the
#: most-leading wrong mask were 0.80 and 0.17 tissue spreads apart with 25 % (4.7x), 0.37 and 0.20 with the whole
#: positive curve (0 %: noise pulls its centre towards the window's middle), 1.18 and 0.38 with 50 % (3.2x).
LEAD_PEAK_FRACTION = 0.25


@dataclass(frozen=True)
class FirstPassLead:
    """Where an AIF's bolus passes against the brain's tissue, in frames (fractional frame indices)."""

    aif_centre: float  # the centre of the AIF's bolus (the part above LEAD_PEAK_FRACTION of its peak)
    tissue_centre: float  # the same for the tissue's median curve
    tissue_spread: float  # the SD of the tissue's bolus about its centre: how wide its first pass is

    @property
    def frames(self) -> float:
        """How many frames the AIF's bolus passes before the tissue's (negative: after)."""
        return self.tissue_centre - self.aif_centre

    @property
    def spreads(self) -> float:
        """The lead in units of the tissue's bolus spread (the same at any frame interval)."""
        return self.frames / self.tissue_spread

    def seconds(self, times: np.ndarray) -> float:
        """The lead in seconds on the series' frame times."""
        frames = np.arange(len(times), dtype=np.float64)
        return float(np.interp(self.tissue_centre, frames, times) - np.interp(self.aif_centre, frames, times))


def first_pass_lead(aif: np.ndarray, median: np.ndarray, baseline: slice) -> FirstPassLead | None:
    """How much earlier than the brain's tissue an AIF's bolus passes (the timing an arterial input must have).

    Tissue is the arterial curve convolved with its residue (and with any dispersion and delay on the way), so its
    first pass comes later than the artery's, by about its transit time, and is wider; a curve drawn on tissue
    passes with the brain's tissue, one on a vein after it (a vein drains the tissue). Both curves are compared over
    the tissue's first pass: from the end of ``baseline`` to the tissue median's peak plus 1.5 times its rise from
    its arrival (10 % of its peak), as :func:`BBBAnomalyLib.perfusion.arterial_auto.first_pass_stop` ends it. Each
    curve's bolus is its rise above its baseline mean, less LEAD_PEAK_FRACTION of its peak in that window, where
    positive; its centre (the rise-weighted mean frame) is where it passes. (Measured alternatives: from the
    baseline's start, or above a floor of 2.5-3 baseline SDs, noise lifted wrong masks at SNR 5 to leads of 0.7-2.9
    tissue spreads; an artery arriving before the brain-mean baseline ends still led by 0.99 or more, the DSC
    pipeline then shortening the baseline and looking again.)

    aif: (T,) the AIF's curve; median: (T,) :func:`tissue_median`; baseline: the pre-contrast frames. Returns None
    where there is no comparison: a tissue median that does not rise, a first pass of fewer than 3 frames, or an
    AIF that does not rise in it.
    """
    median = np.asarray(median, dtype=np.float64)
    aif = np.asarray(aif, dtype=np.float64)
    start = baseline.stop if baseline.stop is not None else 0
    base = median[baseline]
    tissue = median - (base.mean() if base.size else 0.0)
    peak = int(np.argmax(tissue))
    if not tissue[peak] > 0:
        return None
    below = np.flatnonzero(tissue[:peak + 1] < 0.1 * tissue[peak])
    arrival = int(below[-1]) if below.size else start
    stop = min(tissue.size, peak + 1 + int(np.ceil(1.5 * max(peak - arrival, 1))))
    if stop - start < 3:
        return None
    base = aif[baseline]
    tissue_centre, tissue_spread = _bolus_centre(tissue[start:stop], start)
    aif_centre, _ = _bolus_centre(aif[start:stop] - (base.mean() if base.size else 0.0), start)
    if not (np.isfinite(aif_centre) and np.isfinite(tissue_centre) and tissue_spread > 0):
        return None
    return FirstPassLead(aif_centre, tissue_centre, tissue_spread)


def _bolus_centre(rise: np.ndarray, first: int) -> tuple[float, float]:
    """(centre, SD) in frames of the part of ``rise`` (frames ``first``...) above LEAD_PEAK_FRACTION of its peak;
    NaN where it does not rise."""
    top = rise.max() if rise.size else 0.0
    if not top > 0:
        return float("nan"), float("nan")
    weight = np.clip(rise - LEAD_PEAK_FRACTION * top, 0.0, None)
    frames = np.arange(first, first + rise.size, dtype=np.float64)
    centre = float((frames * weight).sum() / weight.sum())
    return centre, float(np.sqrt(((frames - centre) ** 2 * weight).sum() / weight.sum()))


def _rise(curve: np.ndarray, baseline: slice) -> float:
    """The peak of ``curve`` above its baseline mean, less NOISE_SDS of its baseline SD (the noise's own maximum)."""
    base = curve[baseline]
    noise = float(base.std(ddof=1)) if base.size > 2 else 0.0
    return float(curve.max() - base.mean() - NOISE_SDS * noise)
