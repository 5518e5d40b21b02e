"""Checks of DSC inputs that turn bad data into clear errors, and input preparation helpers."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..io.timing import check_dynamic_timing, missing_times_message
from ..core.volume import FrameSource, Volume

#: Fewer frames than this cannot hold a baseline, a bolus and its wash-out.
MIN_FRAMES = 10
#: Relative deviation of frame intervals above which the series is resampled.
UNIFORM_TOLERANCE = 0.01
#: The block-circulant deconvolution holds (2N)² matrices: more frames than this would ask for
#: gigabytes per matrix (a DSC first pass is 40-200 frames).
MAX_FRAMES = 2048
#: A resampled (uniform) grid may hold at most this many times the input's frames.
MAX_GRID_GROWTH = 4


def check_series(series: Volume, what: str, params=None) -> None:
    """A 4D series with plausible frame times; with ``params``, frame settings that fit the series.

    Checked before any computation, so a wrong number costs nothing (bounded work, issue 12).
    """
    if not isinstance(series, Volume):
        raise InputError(f"{what} must be a Volume, got {type(series).__name__}")
    if not series.is_4d:
        raise InputError(f"{what} is 3D {series.data.shape}; DSC needs a 4D dynamic series (x, y, z, time). "
                         "Did you pick a single frame or a map?")
    if series.n_frames < MIN_FRAMES:
        raise InputError(f"{what} has {series.n_frames} frames; at least {MIN_FRAMES} are needed "
                         "(baseline, bolus passage and wash-out)")
    if series.times is None:
        raise InputError(missing_times_message(series, what))
    if np.any(np.diff(series.times) <= 0):
        raise InputError(f"the frame times of {what} are not strictly increasing; check --times")
    if np.iscomplexobj(series.data) or series.data.dtype.kind not in "biuf":
        raise InputError(f"{what} holds {series.data.dtype} values; DSC needs real magnitude images (save abs())")
    if series.n_frames > MAX_FRAMES:
        raise InputError(f"{what} has {series.n_frames} frames; at most {MAX_FRAMES} are deconvolved. Is the 4th "
                         "axis time? Crop the series to the first pass (e.g. the first 200 frames)")
    check_dynamic_timing(series.times, f"the frame times of {what}")
    if params is not None:
        check_frame_parameters(params, series.n_frames)


def check_frame_parameters(params, n_frames: int) -> None:
    """--skip-frames and --baseline-frames must leave a baseline and a bolus inside the series."""
    if params.skip_frames > n_frames - MIN_FRAMES:
        raise InputError(f"--skip-frames {params.skip_frames} leaves {max(n_frames - params.skip_frames, 0)} of the "
                         f"series' {n_frames} frames; skip at most {n_frames - MIN_FRAMES} (usually 1-3)")
    if params.baseline_frames is not None:
        first, stop = params.baseline_frames
        if stop > n_frames:
            raise InputError(f"--baseline-frames {first} {stop} reaches beyond the series' {n_frames} frames; give "
                             f"pre-bolus frames FIRST STOP with STOP <= {n_frames} (indices from 0, STOP excluded)")
        if stop > n_frames - 3:
            raise InputError(f"--baseline-frames {first} {stop} leaves {n_frames - stop} frames for the bolus; the "
                             "baseline must end before the bolus arrives (indices from 0, STOP excluded)")


def check_bsw_reference(brain: np.ndarray, tumor: np.ndarray | None, params) -> None:
    """BSW needs non-tumor brain voxels for its reference curve: a tumor mask covering the brain
    mask (the same file twice, say) leaves none."""
    if tumor is None or params.leakage_correction.value != "bsw":
        return
    left = int((brain & ~tumor).sum())
    if left < 10:
        raise InputError(f"the tumor mask covers all but {left} voxels of the brain mask, which leaves no normal brain "
                         "for the BSW leakage reference curve; give the tumor only in --tumor-mask (and the whole "
                         "brain in --mask), or use --leakage-correction none")


def uniform_times(times: np.ndarray):
    """A uniform time grid for deconvolution, and a resampler for curves when the input is not uniform."""
    dt = np.diff(times)
    step = float(np.median(dt))
    if np.max(np.abs(dt - step)) <= UNIFORM_TOLERANCE * step:
        return np.array(times, dtype=np.float64), None
    n_grid = int(np.floor((times[-1] - times[0]) / step + 1e-9)) + 1
    if n_grid > MAX_GRID_GROWTH * times.size:  # one wrong frame time must not ask for terabytes
        raise InputError(f"the frame times ({times.size} frames over {times[-1] - times[0]:g} s, median step "
                         f"{step:g} s) would need a uniform grid of {n_grid} frames; check --times (one time per frame, seconds)")
    grid = times[0] + step * np.arange(n_grid)

    def resample(curves: np.ndarray) -> np.ndarray:
        # Linear interpolation along time, all voxels at once: weights are shared by every voxel.
        idx = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, times.size - 2)
        w = ((grid - times[idx]) / (times[idx + 1] - times[idx])).astype(np.float32)
        return curves[:, idx] * (1 - w) + curves[:, idx + 1] * w

    return grid, resample


#: Frames shorter than this are averaged in groups (:func:`binned_grid`) for oSVD and PHAE: oSVD's oscillation-index
#: target and PHAE's training (0.8-2.5 s) were set on 1-2.5 s frames. On the DSC object at 0.5 s frames oSVD read GM
#: CBF 1.3x (SNR 50) to 5x (SNR 20) what it reads at 1 s, and 0.75 s frames 1.6-2.5x what 1.5 s frames give (session
#: 19's audit). Held apart (scripts/dsc_fast_frames.py: seeds 2-3, exponential and plug-flow residues, dispersion 0
#: and 2 s, SNR 100-20, 0.5/0.6/0.75 s frames): binned oSVD read 0.81-1.06x the same object acquired at the binned
#: interval (72/72 within 20 %), unbinned 1.33-3.93x (0/72). cSVD, whose threshold is fixed, read 0.80-1.05x
#: unbinned and is left on every frame (binned 0.75-1.00x), like sSVD and Tikhonov.
MIN_ANALYSED_INTERVAL = 0.8
#: ... to about this interval: k = round(1 s / Δt) frames, at least 2 (0.8-1.6 s).
BINNED_INTERVAL = 1.0


def binned_grid(times: np.ndarray, resample=None):
    """(grid, resampler, k) for analysis: where the (uniform) frame interval is under MIN_ANALYSED_INTERVAL, each k
    consecutive frames are averaged (their mean time is the new frame's time; a last incomplete group is dropped),
    after ``resample`` if one is given; else (times, resample, 1). Averaging keeps every sample's information (the
    noise of a k-frame mean is 1/sqrt(k) of a frame's) where picking every k-th frame would discard it."""
    step = float(times[1] - times[0])
    if step >= MIN_ANALYSED_INTERVAL:
        return times, resample, 1
    k = max(2, int(round(BINNED_INTERVAL / step)))
    n = times.size // k
    grid = np.asarray(times[:n * k], dtype=np.float64).reshape(n, k).mean(axis=1)

    def binned(curves: np.ndarray) -> np.ndarray:
        if resample is not None:
            curves = resample(curves)
        return curves[:, :n * k].reshape(curves.shape[0], n, k).mean(axis=2, dtype=np.float32)

    return grid, binned, k


def frames_on_uniform_grid(skip_frames: int, baseline_frames, input_times: np.ndarray, grid: np.ndarray):
    """A user's --skip-frames and --baseline-frames (input frame indices) on the uniform grid a non-uniform series is
    resampled to (:func:`uniform_times`), by time: the input indices used to be applied to the grid as they were, so
    with 0.5 s frames for 10 s and 1.5 s after, --baseline-frames 2 18 (1-8.5 s) became 3-25.5 s, bolus included.
    Skipped: every grid frame interpolated from a skipped frame (before the first kept frame's time). Baseline: the
    grid frames inside [time of FIRST, time of STOP - 1], which are interpolated from baseline frames only."""
    times = np.asarray(input_times, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    tol = 1e-6 * float(grid[1] - grid[0])
    skip = int(np.searchsorted(grid, times[min(skip_frames, times.size - 1)] - tol, side="left")) if skip_frames else 0
    if baseline_frames is None:
        return skip, None
    first, stop = baseline_frames  # inside the series: check_series said so
    start_s, end_s = times[first], times[stop - 1]
    lo = int(np.searchsorted(grid, start_s - tol, side="left"))
    hi = int(np.searchsorted(grid, end_s + tol, side="right"))
    if hi - lo < 2:
        raise InputError(f"--baseline-frames {first} {stop} covers {start_s:g}-{end_s:g} s, which holds {max(hi - lo, 0)} "
                         f"frame(s) of the uniform {grid[1] - grid[0]:.3g} s grid this non-uniform series is resampled "
                         "to; give a baseline spanning at least two grid frames")
    return skip, (lo, hi)


def frames_on_grid(skip_frames: int, baseline_frames, k: int):
    """A user's --skip-frames and --baseline-frames (input frame indices) on the grid of k-frame groups: every group
    holding a skipped frame is skipped; the baseline keeps the groups wholly inside it."""
    if k == 1:
        return skip_frames, baseline_frames
    skip = -(-skip_frames // k)
    if baseline_frames is None:
        return skip, None
    first, stop = baseline_frames
    return skip, (-(-first // k), stop // k)


def automatic_brain_mask(data: np.ndarray, kind: str = "signal") -> np.ndarray:
    """Voxels with signal: Otsu threshold of the temporal mean, holes filled, largest component.

    Filled holes that have no signal at all (zero-padded voxels inside the head) are left out:
    they have no baseline to convert and would stop the run. NaN samples are left out of the
    mean. Concentration (ΔR2*) input is refused before anything is read: no signal level tells brain from
    background there (unenhanced tissue is 0 like the background, vessels far above both), and Otsu on its
    temporal mean kept a third of the brain (round 17's audit, F3), so --mask is required."""
    import SimpleITK as sitk
    from scipy import ndimage

    if kind == "concentration":
        raise InputError("concentration input (ΔR2*) has no signal level that separates brain from background, so no "
                         "automatic brain mask is made: give the brain mask with --mask")
    mean, count, _ = temporal_statistics(data)
    n_frames = data.shape[3]
    otsu = sitk.OtsuThreshold(sitk.GetImageFromArray(mean), 0, 1)
    mask = sitk.GetArrayFromImage(otsu).astype(bool)
    labels, n = ndimage.label(mask)
    if n == 0:
        nan_voxels = int((count < n_frames).sum())
        detail = (f" ({nan_voxels} of {count.size} voxels hold NaN or infinite samples: replace them, e.g. with 0)"
                  if nan_voxels else " (the temporal mean is zero or negative everywhere)")
        raise InputError(f"no voxels with signal found for the automatic brain mask{detail}; give --mask")
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask) & (mean > 0)
    if not mask.any():  # e.g. a negative (inverted) series: Otsu kept the zero background
        raise InputError("no voxels with a positive signal found for the automatic brain mask (is the series "
                         "negative or inverted?); fix the data, or give --mask")
    return mask


def temporal_statistics(data, nonzero: bool = False):
    """Per voxel: the temporal mean of the finite samples (float32, 0 where none), how many are
    finite, and with ``nonzero`` how many voxels hold a nonzero finite sample (else None).

    ``data`` is a 4D array or a :class:`~BBBAnomalyLib.core.volume.FrameSource` (a series still in
    its file), which is read once, frame block by frame block: the sums run frame after frame in
    float64 exactly as numpy's reduction over the (outer) time axis does, so both give the same mask.
    """
    if not isinstance(data, FrameSource):
        finite = np.isfinite(data)
        count = finite.sum(axis=3)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, np.where(finite, data, 0).sum(axis=3, dtype=np.float64) / count, 0.0)
        with_data = int((np.abs(np.where(finite, data, 0)).max(axis=3) > 0).sum()) if nonzero else None
        return mean.astype(np.float32), count, with_data
    total = np.zeros(data.shape[:3])
    count = np.zeros(data.shape[:3], np.int64)
    any_data = np.zeros(data.shape[:3], bool) if nonzero else None
    for _, block in data.blocks(min(16 * 2**20, max(data.nbytes // 32, 1))):
        for t in range(block.shape[3]):
            frame = block[..., t]
            finite = np.isfinite(frame)
            count += finite
            frame = np.where(finite, frame, 0)
            total += frame
            if nonzero:
                any_data |= frame != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, 0.0)
    return mean.astype(np.float32), count, (int(any_data.sum()) if nonzero else None)


# --- report values that would mislead -------------------------------------------------------
def reference_ratios(reference_values: np.ndarray) -> tuple[float | None, str | None]:
    """(the NAWM mean to divide rCBV/rCBF maps by, None), or (None, why) when dividing by it would
    give a meaningless map (a mean of 0, negative, or indistinguishable from 0)."""
    from ..core.report import summarise
    from ..roistats import reference_ratio

    stats = summarise(reference_values)
    if stats.get("mean") is not None and stats["mean"] < 0:
        return None, f"the NAWM mean is negative ({stats['mean']:.3g}); check the NAWM mask and the AIF"
    ratio, why = reference_ratio(1.0, stats)
    return (stats["mean"], None) if ratio is not None else (None, why)


#: The maps whose tumour/NAWM ratio of means a few NAWM voxels decide; the ratio of medians is the one to read.
#: MTT = CBV/CBF: where noise makes a NAWM voxel's CBV negative or its CBF near 0, its MTT is negative or huge. On the
#: DSC reference object (oSVD, 10 draws each, session 24) a third of the NAWM voxels had MTT < 0 at SNR 20 and the
#: NAWM mean MTT was 0.26-0.97 s against a median of 2.95-3.16 s: the ratio of means was withheld (1 draw) or 5.7-18.6
#: (9 draws), the ratio of medians 2.06-2.24 (the truth's 1.10 of medians, 1.16 of means; MTT is not trustworthy at
#: that CNR, 0.6, and the run says so). At SNR 50 the ratio of means was 1.29-1.44, that of medians 1.21-1.26; at SNR
#: 35-40 (5 draws each) 1.60-2.34 against 1.36-1.52.
MEDIAN_RATIO_MAPS = ("mtt",)


def tumor_to_nawm(summary: dict, values: dict, warnings: list[str]) -> dict:
    """Tumor/NAWM ratios of the map means. A map whose NAWM mean is ~0 or of the other sign gets no
    ratio, and a warning says why (a K2 ratio of 46,212,667 said only that NAWM K2 is noise around 0).
    For MTT (:data:`MEDIAN_RATIO_MAPS`) that warning gives the ratio of medians (:func:`median_ratio`)."""
    from ..roistats import reference_ratio

    ratios = {}
    for name in values:
        ratio, why = reference_ratio(summary["tumor"][name].get("mean"), summary["nawm"][name])
        if why:
            median = median_ratio(summary, name) if name in MEDIAN_RATIO_MAPS else None
            warnings.append(f"tumor/NAWM ratio of {name} not given: {why}" + (
                "" if median is None else f"; read the ratio of medians, {median:.3g} (report summary.tumor and "
                                          f"summary.nawm), which a few voxels do not decide"))
        else:
            ratios[name] = ratio
    return ratios


def median_ratio(summary: dict, name: str) -> float | None:
    """The tumour/NAWM ratio of the medians of map ``name`` in a DSC report's summary, or None where there is none or
    :func:`~BBBAnomalyLib.roistats.reference_ratio` refuses it (the test roi-stats' "(median)" column passes)."""
    from ..roistats import reference_ratio

    tumor, nawm = (summary.get(label, {}).get(name) for label in ("tumor", "nawm"))
    if not isinstance(tumor, dict) or not isinstance(nawm, dict):
        return None
    return reference_ratio(tumor.get("median"), nawm, "median")[0]


def negative_tumor_cbv(tumor_summary: dict) -> list[str]:
    """A warning when single-echo tumor CBV comes out negative: T1 shortening by leaked contrast
    raised the signal more than the bolus lowered it."""
    for name in ("cbv_corrected", "cbv"):
        median = tumor_summary.get(name, {}).get("median")
        if median is not None and median < 0:
            return [f"the median tumor {name} is negative ({median:.3g}): in single-echo DSC, contrast leaking "
                    "through the blood-brain barrier shortens T1 and raises the signal, which can outweigh the "
                    "T2* drop of the bolus. Tumor CBV is unreliable here: use a dual-echo acquisition "
                    "(--second-echo), a preload dose, or check the BSW correction (--leakage-correction bsw, "
                    "a --tumor-mask, a larger brain mask)"]
    return []
