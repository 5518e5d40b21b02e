"""The DSC perfusion pipeline: a 4D T2*-weighted series in, CBV/CBF/MTT/Tmax/K2 maps out.

``run_dsc`` is the one documented entry point; the command line (`bbbanomaly dsc`), the Slicer
logic and the background worker are thin layers over it.

Steps: check the input -> pick the voxels (brain mask, given or automatic) -> detect the bolus
arrival and baseline -> convert to ΔR2*(t) -> AIF (mask or automatic) -> BSW leakage correction
-> deconvolution (sSVD/cSVD/oSVD/Tikhonov) -> maps and report. Every step is vectorised over
voxels; nothing loops over voxels in Python.

The gather of the analysed voxels' curves from the series (in memory or left in its file) is in
:mod:`.gather`; the PHAE deconvolution step and its report entries are in :mod:`.phae_step`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.integrate import trapezoid

from ..core.checks import parameters as check_parameters
from ..core.errors import InputError
from ..io import read_mask
from ..core.report import Timer, dump_json, summarise, summarise_maps, versions
from ..core.volume import Volume, read_warnings
from . import aif as aif_mod
from .conversion import (Baseline, check_echo_times, detect_baseline, detection_curve as _detection_curve,
                         signal_to_delta_r2s, steady_state_skip)
from ..core.devices import blas_threads, block_workers
from .deconvolution import deconvolve_classic
from .aif_saturation import aif_saturation, saturation_hint
from .dual_echo_aif import dual_echo_aif_step
from .gather import _check_finite, _curves, _drop_background, _header_only, _voxel_order, _voxels
from .leakage import fit_bsw
from ..perfusion.motion import motion_step
from ..perfusion import slice_timing
# LOW_CNR: below it (the brain's per-frame contrast-to-noise) CBF is biased, lower still not trustworthy (.low_cnr)
from .low_cnr import LOW_CNR, contrast_to_noise, low_cnr_caveats, low_cnr_warnings  # noqa: F401 (LOW_CNR and
# contrast_to_noise are read from here by tests and scripts)
from .parameters import DeconvolutionMethod, DSCParameters, InputKind, LeakageCorrection
from .phae_step import _check_phae_input, _deconvolve_phae, _phae_options_unused, _pooling_guide
from ..perfusion.series_kind import check_dsc_curve
from .spin_echo import merge_caveats, sequence_step
from .validation import (
    automatic_brain_mask, binned_grid, check_bsw_reference, check_series, frames_on_grid, frames_on_uniform_grid,
    negative_tumor_cbv, reference_ratios, tumor_to_nawm, uniform_times
)

#: Map name -> (unit, description); the order is the order of the outputs.
MAP_INFO = {
    "cbv": ("ml/100 g", "cerebral blood volume from ∫C/∫Ca, no leakage correction"),
    "cbv_corrected": ("ml/100 g", "CBV from BSW leakage-corrected curves"),
    "cbf": ("ml/100 g/min", "cerebral blood flow, max of the deconvolved residue"),
    "mtt": ("s", "mean transit time = CBV/CBF (leakage-corrected CBV when corrected)"),
    "tmax": ("s", "time to the maximum of the residue (delay-insensitive methods)"),
    "k2": ("1/s", "BSW leakage coefficient (>0: T1-dominant leakage)"),
    "rcbv": ("ratio", "CBV relative to the NAWM mean (corrected CBV when corrected)"),
    "rcbf": ("ratio", "CBF relative to the NAWM mean"),
    "phae_fit_error": ("%", "PHAE only: relative residual ||C - Ĉ|| / ||C|| of the physics decoder's reconstruction; "
                            "how far to trust the voxel's learned CBF/MTT (high = the curve was not reproduced)"),
    "phae_cbf_uncertainty": ("%", "PHAE only: the network's predicted SD of log CBF x 100 (about the relative SD of the "
                                  "voxel's CBF), trained on simulated truth"),
    "phae_pooled_curves": ("curves", "PHAE with guided pooling only: the effective number of neighbouring curves averaged "
                                     "into the voxel's (1 = its own curve alone, up to 27); where it is high, detail finer "
                                     "than 3 voxels within tissue of equal baseline signal is smoothed away"),
}

#: What PHAE's maps are where they differ from the deconvolution's (dsc/phae: the encoder reads each curve with the
#: AIF and gives MTT and bolus delay; a Lorentzian residue of that MTT and delay, convolved with the AIF, is scaled
#: to the curve's area: its flow is the CBF).
PHAE_MAP_INFO = {
    "cbf": "cerebral blood flow, PHAE's estimate: the flow of the physics-informed autoencoder's fitted residue "
           "(its MTT and delay), the curve's CBV over that residue's MTT (de-shrunk where the weights' card holds a "
           "calibration); not a residue maximum",
    "mtt": "mean transit time of PHAE's fitted residue (the encoder's; CBV/CBF where the weights' card says "
           "central volume)",
    "tmax": "PHAE's bolus delay: the time its fitted residue peaks",
}

ProgressCallback = Callable[[float, str], None]


def map_info(params: DSCParameters) -> dict[str, tuple[str, str]]:
    """:data:`MAP_INFO` for one run: CBV and CBF per 100 g or, with density 1, per 100 ml (the unit follows kH and
    ρ here, in one place: report.json, roi-stats, the BIDS sidecars and the figures read it from the report); and
    what PHAE's maps are, for a PHAE run."""
    per = params.tissue_unit
    info = {name: (unit.replace("/100 g", f"/{per}"), text) for name, (unit, text) in MAP_INFO.items()}
    if params.method is DeconvolutionMethod.PHAE:
        info.update({name: (info[name][0], text) for name, text in PHAE_MAP_INFO.items()})
    return info


def _with_single_threaded_blas(function):
    """Run with BLAS held to one thread (see :func:`..core.devices.blas_threads`); the deconvolution
    spreads its chunks over a thread pool of its own. PHAE runs as is (torch's own threading)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        params = kwargs.get("params", args[1] if len(args) > 1 else None)
        learned = isinstance(params, DSCParameters) and params.method is DeconvolutionMethod.PHAE
        with blas_threads(None if learned else 1):
            return function(*args, **kwargs)
    return wrapper


@dataclass
class DSCResult:
    """Maps (Volumes on the input grid), the AIF, the masks used and a JSON-ready report."""

    maps: dict[str, Volume]
    times: np.ndarray  # frame times [s] of the analysed (uniform) grid
    aif: np.ndarray  # arterial ΔR2* [1/s]
    aif_mask: np.ndarray  # voxels averaged into the AIF
    brain_mask: np.ndarray
    report: dict
    delta_r2s: Volume | None = None  # 4D ΔR2* (leakage-corrected where corrected), when kept
    extras: dict = field(default_factory=dict)

    def mean_curve(self, mask: np.ndarray) -> np.ndarray:
        """Mean ΔR2* curve of a mask (needs ``keep_curves=True``)."""
        if self.delta_r2s is None:
            raise ValueError("run_dsc(..., keep_curves=True) keeps the curves")
        return self.delta_r2s.data[mask].mean(axis=0)

    def curves(self):
        """The ΔR2* curves of the brain voxels with the deconvolution's fit (needs ``keep_curves=True``)."""
        from .curves import dsc_curve_set

        return dsc_curve_set(self)

    def write(self, out_dir: str | Path, overwrite: bool = False, suffix: str = ".nii.gz") -> Path:
        """Write `<map><suffix>`, `aif.csv`, `aif_mask<suffix>`, `brain_mask<suffix>` and `report.json`,
        all or nothing. ``suffix`` is ".nii.gz" (default) or ".nrrd" (float64 geometry, for Slicer)."""
        from ..io import write_volume
        from ..core.outputs import atomic_output_dir

        template = next(iter(self.maps.values()))
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            files = [(vol, tmp / f"{name}{suffix}") for name, vol in self.maps.items()]
            files += [(Volume(mask.astype(np.uint8), template.affine), tmp / f"{name}{suffix}")
                      for name, mask in (("aif_mask", self.aif_mask), ("brain_mask", self.brain_mask))]
            # zlib releases the GIL: compressing the maps on threads uses every core.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(block_workers()) as pool:
                list(pool.map(lambda job: write_volume(*job), files))
            np.savetxt(tmp / "aif.csv", np.column_stack([self.times, self.aif]), delimiter=",",
                       header="time_s,aif_delta_r2s_per_s", comments="", fmt="%.6g")
            dump_json(self.report, tmp / "report.json")
        return Path(out_dir).resolve()


@_with_single_threaded_blas
def run_dsc(series: Volume, params: DSCParameters | None = None, *, aif_mask: np.ndarray | None = None,
            brain_mask: np.ndarray | None = None, nawm_mask: np.ndarray | None = None,
            tumor_mask: np.ndarray | None = None, second_echo: Volume | None = None,
            keep_curves: bool = False, progress: ProgressCallback | None = None,
            consume_input: bool = False) -> DSCResult:
    """Perfusion maps from a DSC series.

    series:      4D Volume (signal, or ΔR2* with ``params.input_kind='concentration'``) with frame times.
    aif_mask:    boolean (x, y, z) arterial voxels; None selects the AIF automatically (Mouridsen).
    brain_mask:  voxels to analyse; None = automatic (Otsu on the temporal mean).
    nawm_mask:   normal-appearing white matter, for rCBV/rCBF.
    tumor_mask:  excluded from the BSW non-enhancing reference curve.
    second_echo: the second echo of a dual-echo acquisition (TE2 in params or its metadata).
    keep_curves: keep the 4D ΔR2* in the result (for curve plots).
    progress:    callback(fraction in [0, 1], message); raise CancelledError from it to stop.
    consume_input: opt-in for callers that no longer need the input (the command line): once the
                 analysed curves are gathered and the AIF chosen, ``series.data`` (and
                 ``second_echo.data``) are set to None so the series' memory is freed during the
                 leakage correction, deconvolution and maps (peak memory under 2x the series
                 instead of series + curves + maps). Off by default: a caller's Volume is never
                 modified unless it asks for this.

    A series read with ``read_volume(path, lazy=True)`` (a 4D NIfTI left in its file; the command
    line reads so) is never read whole: the analysed voxels are gathered frame block by frame block
    (an automatic brain mask first takes one pass for the temporal mean), so the full series and
    its float32 copy are never both in memory, and the Volume stays unread.
    """
    params = check_parameters(params, DSCParameters, "run_dsc")
    # a plain array has no grid or frame times: one line here, not an AttributeError below
    for what, volume in (("the DSC series", series), ("the second echo", second_echo)):
        if not isinstance(volume, Volume) and (volume is not None or volume is series):
            raise InputError(f"{what} must be a Volume, got {type(volume).__name__}; e.g. "
                             "BBBAnomalyLib.io.read_volume(path) or Volume(data, affine, times)")
    report_progress = progress or (lambda fraction, message: None)
    timer = Timer()
    warnings: list[str] = read_warnings(series, second_echo)  # what the readers said about the files
    # The grid, kept apart from the data: with consume_input the data is released mid-run.
    spatial_shape, input_shape, affine = series.spatial_shape, list(series.shape), series.affine.copy()
    voxel_sizes = series.voxel_sizes

    with timer("checks"):
        report_progress(0.0, "checking the input")
        check_series(_header_only(series), "the DSC series", params)
        masks = {name: read_mask(m, series, name) for name, m in
                 (("aif-mask", aif_mask), ("mask", brain_mask), ("nawm-mask", nawm_mask), ("tumor-mask", tumor_mask))
                 if m is not None}
        te, te2 = _echo_times(series, second_echo, params)
        sequence = sequence_step(series.acquisition, te, warnings)  # spin or gradient echo; b-values, ASL refused
        _check_phae_input(params, warnings, dual_echo=second_echo is not None, te=te)
        _phae_options_unused(params, warnings)
        if second_echo is not None:
            check_series(_header_only(second_echo), "the second echo")
            if not second_echo.same_grid(series) or second_echo.n_frames != series.n_frames:
                raise InputError("the second echo must have the same grid and frame count as the first")
        times, resample = uniform_times(series.times)
        skip_frames, baseline_frames = params.skip_frames, params.baseline_frames
        if resample is not None:
            warnings.append(f"frame times are not uniform; curves resampled to a uniform {times[1] - times[0]:.3g} s grid")
            skip_frames, baseline_frames = frames_on_uniform_grid(skip_frames, baseline_frames, series.times, times)
        step = float(times[1] - times[0])
        timing = slice_timing.series_timing(series.acquisition, spatial_shape, step, params.slice_timing,
                                            "the DSC series", warnings)
        binned = 1
        if params.method in (DeconvolutionMethod.OSVD, DeconvolutionMethod.PHAE):  # set on 1-2.5 s frames
            times, resample, binned = binned_grid(times, resample)
        skip_frames, baseline_frames = frames_on_grid(skip_frames, baseline_frames, binned)
        if binned > 1:
            warnings.append(f"frames of {step:.3g} s were averaged in groups of {binned} ({binned * step:.3g} s frames): "
                            "oSVD's oscillation target and PHAE's training hold for frames of 0.8 s and more (at 0.5 s "
                            "oSVD read GM CBF 1.3-5x high on the reference object); maps and curves are on that grid "
                            "(cSVD, sSVD and Tikhonov use every frame)")

    with timer("motion"):  # each frame registered to the first analysed one; resampled with --motion-correct rigid
        report_progress(0.02, "checking for head motion")
        reference = params.baseline_frames[0] if params.baseline_frames is not None else params.skip_frames
        series, second_echo, motion = motion_step(series, masks.get("mask"), params.motion_correct, reference,
                                                  warnings, second_echo=second_echo, kind=params.input_kind.value)

    with timer("masking"):
        brain = masks.get("mask")
        if brain is None:
            brain = automatic_brain_mask(_voxels(series), params.input_kind.value)
        check_bsw_reference(brain, masks.get("tumor-mask"), params)
        arterial = masks.get("aif-mask")
        if arterial is not None and params.aif_region:
            arterial = _drop_background(_voxels(series), arterial)
        # The analysed voxels, brain first: the brain's curves are then the first rows (a view, never
        # a copy), and arterial voxels outside the brain follow.
        order = _voxel_order(brain, arterial)
        n_brain = int(brain.sum())
        raw = _curves(_voxels(series), order, resample)  # the one float32 copy of the series, converted in place
        raw2 = _curves(_voxels(second_echo), order, resample) if second_echo is not None else None
        _check_finite(raw)  # (no loop variable: a name left bound to the curves would keep them alive)
        if raw2 is not None:
            _check_finite(raw2)
        raw2_given = raw2 is not None
        # The input signals of an AIF drawn as a mask (or search region), kept before the
        # conversion overwrites them: the arterial baseline check below needs a few of them, and
        # reading them again from a series left in its file would mean a second pass over it.
        aif_raw = None
        aif_rows = np.flatnonzero(arterial.ravel()[order]) if arterial is not None else None
        if aif_rows is not None and baseline_frames is None and aif_rows.size <= max(4096, order.size // 50):
            aif_raw = (aif_rows, [r[aif_rows] for r in ((raw, raw2) if raw2 is not None else (raw,))])

    report_progress(0.1, "converting signal to ΔR2*")
    kind = "signal" if params.input_kind is InputKind.SIGNAL else "concentration"
    in_aif = arterial.ravel()[order] if arterial is not None else None
    with timer("conversion"):
        detection, detection_kind = _detection_curve(raw[:n_brain], None if raw2 is None else raw2[:n_brain],
                                                     kind, te, te2)
        skip = skip_frames
        if baseline_frames is None and detection_kind == "signal":
            skip = steady_state_skip(detection, skip)
            if skip > skip_frames:
                excess = 100.0 * (detection[skip_frames] / np.median(detection[skip:skip + 3]) - 1.0)
                warnings.append(f"the first {skip * binned} frames had not reached the steady state (frame "
                                f"{skip_frames * binned}'s brain-mean signal {excess:.1f} % above the baseline): they are "
                                f"left out of the baseline and the curves (--skip-frames {skip * binned} says so; "
                                f"--baseline-frames FIRST STOP sets the baseline)")
        check_dsc_curve(detection, skip, baseline_frames,  # one bolus (not ASL, BOLD, DCE, DWI: perfusion/series_kind)
                        moved=bool(motion.get("frames_over_threshold")) and not motion.get("frames_resampled"),
                        kind=detection_kind, dual_echo=raw2 is not None)  # moved: uncorrected motion shifts the level
        baseline = detect_baseline(detection, skip, detection_kind, baseline_frames)
        # PHAE's guided pooling reads the pre-contrast signal S0, which the conversion overwrites
        guide = _pooling_guide(raw[:n_brain], baseline, params)
        curves, clipped = _convert(raw, raw2, baseline, params, te, te2, in_aif)
        del raw2
    # The baseline comes from the brain-mean curve; an artery can see the bolus earlier than the
    # average tissue (a delayed tumor or hemisphere). Then the baseline would include the arterial
    # up-slope, lowering the AIF and inflating CBV: end it before the AIF arrives and select again.
    # A drawn AIF is checked once, under the baseline kept: under the brain's baseline an artery that
    # leads by more than its bolus looks like no bolus at all (a real arterial mask was refused with the
    # tissue 6 s late; session 19's AIF audit). The automatic AIF is checked at each look, as before: at
    # SNR 10 its first look was the one that refused a non-arterial choice (scripts/aif_plausibility.py),
    # and a first look under a baseline holding the arteries' bolus is avoided by the step just below.
    if in_aif is None and baseline_frames is None:
        with timer("aif"):
            early = _early_artery_baseline(curves[:n_brain], baseline, series, second_echo, order, resample,
                                           raw2_given, kind, te, te2, skip)
        if early is not None:  # the loop below may still end it earlier, from the chosen voxels
            warnings.append(f"the largest boluses (arteries) arrive at {times[early.arrival]:.1f} s and pass before the "
                            f"brain average's bolus arrives ({times[baseline.arrival]:.1f} s): the baseline was "
                            f"shortened to frames [{early.first}, {early.stop}) before choosing the AIF")
            baseline = early
            _rebase(curves, baseline)
    for attempt in range(2):
        base_slice = slice(baseline.first, baseline.stop)
        last_look = baseline_frames is not None or attempt == 1
        report_progress(0.2, "selecting the AIF")
        with timer("aif"):
            if in_aif is not None:
                select = aif_mod.aif_in_region if params.aif_region else aif_mod.aif_from_mask
                with saturation_hint(curves, in_aif, base_slice, te if kind == "signal" and not raw2_given else None,
                                     times):
                    selection = select(curves, in_aif, base_slice, check=last_look)
            else:
                selection = aif_mod.auto_aif(curves[:n_brain], times, base_slice, baseline.arrival,
                                             saturation_te=te if kind == "signal" and not raw2_given else None)
        if last_look:
            break
        # The AIF voxels' input signals (the analysed copy was converted in place): a few rows,
        # kept aside when the AIF came from a mask, else read again from the input.
        if aif_raw is not None:
            at = np.searchsorted(aif_raw[0], selection.voxels)
            arterial_raw = [r[at] for r in aif_raw[1]]
        else:
            arterial_raw = [_curves(_voxels(vol), order[selection.voxels], resample)
                            for vol in ((series, second_echo) if second_echo is not None else (series,))]
            aif_raw = (selection.voxels, arterial_raw)  # kept for the dual-echo check (not read again if unchanged)
        detection, detection_kind = _detection_curve(arterial_raw[0], arterial_raw[1] if raw2_given else None,
                                                     kind, te, te2)
        try:
            arterial_baseline = detect_baseline(detection, skip, detection_kind)
        except InputError:  # no bolus of its own with frames before it (a mask on CSF): the checks below say so
            arterial_baseline = baseline
        if arterial_baseline.stop >= baseline.stop:  # the brain's baseline stands: check a drawn AIF under it
            if in_aif is not None:
                with timer("aif"):
                    with saturation_hint(curves, in_aif, base_slice,
                                         te if kind == "signal" and not raw2_given else None, times):
                        aif_mod.check_selection(selection, curves, base_slice)
            break
        if baseline.stop - arterial_baseline.stop > 1:  # one frame is the usual sharper arterial up-slope
            warnings.append(f"the AIF arrives at {times[arterial_baseline.arrival]:.1f} s, well before the brain "
                            f"average ({times[baseline.arrival]:.1f} s): the baseline was shortened to frames "
                            f"[{baseline.first}, {arterial_baseline.stop})")
        baseline = Baseline(baseline.first, arterial_baseline.stop, arterial_baseline.arrival, True)
        with timer("conversion"):
            # ΔR2* depends on the baseline only through each voxel's ln S0 (or, for concentration
            # input, its baseline mean): a per-voxel offset, so no second conversion is needed.
            _rebase(curves, baseline)
    saturation = None if not raw2_given or kind != "signal" else dual_echo_aif_step(  # echo 2 at its floor
        selection, aif_raw, lambda rows: [_curves(_voxels(v), order[rows], resample) for v in (series, second_echo)],
        slice(baseline.first, baseline.stop), times, warnings, params.method.value, te, te2)  # (dual_echo_aif.py)
    del aif_raw
    if consume_input:  # nothing below reads the input series: free it (the caller opted in)
        for volume in (series, second_echo):
            if volume is not None:
                volume.data = None
    if clipped:
        warnings.append(f"{clipped} samples fell below 0.1 % of their baseline signal and were clipped "
                        "before the logarithm (noise floor or saturated arteries)")
    aif_curve = selection.curve
    # --slice-timing auto: the AIF voxels moved to one time, then averaged (here: the leakage correction edits curves)
    aif_one_time = slice_timing.aif_at_one_time(timing, params.slice_timing, aif_curve,
                                                lambda: curves[selection.voxels], order[selection.voxels],
                                                spatial_shape, times)
    if kind == "signal" and not raw2_given and te:  # a single echo's magnitude floor cuts the AIF's peak off
        saturation = aif_saturation(curves[selection.voxels], slice(baseline.first, baseline.stop), te,
                                    times)
        if saturation.saturated:
            warnings.append(saturation.warning(times, params.method.value))

    brain_curves = curves[:n_brain]  # a view
    contrast = contrast_to_noise(brain_curves, baseline)
    first, later = low_cnr_warnings(contrast, params.method)  # by tier: which maps are (not) trustworthy
    warnings[:0] = first
    warnings.extend(later)
    aif_area = trapezoid(aif_curve, times)
    scale = params.scale
    # ∫ΔR2* of every brain voxel before the leakage correction changes the curves in place: one
    # product with the trapezoid weights, not a pass that builds (n, N) temporaries.
    trapezoid_weights = _trapezoid_weights(times)
    cbv = (100.0 * scale / aif_area) * (brain_curves @ trapezoid_weights)
    report_progress(0.3, "leakage correction")
    k2 = corrected_cbv = None
    with timer("leakage_correction"):
        if params.leakage_correction is LeakageCorrection.BSW:
            exclude = masks["tumor-mask"][brain] if "tumor-mask" in masks else None
            bsw = fit_bsw(brain_curves, times, exclude=exclude, fit_from=baseline.first)
            brain_curves, applied = bsw.corrected(brain_curves, params.bsw_min_t, out=brain_curves)
            k2 = bsw.k2
            # The correction adds K2·∫ΔR̄2* to a curve, so its area grows by K2 times that integral's area.
            applied_k2, _ = bsw.applied_k2(params.bsw_min_t)
            corrected_cbv = cbv + (100.0 * scale / aif_area) * float(bsw.reference_integral @ trapezoid_weights) * applied_k2
            bsw_report = {"reference_voxels": bsw.n_reference, "corrected_voxels": int(applied.sum()),
                          "min_t": params.bsw_min_t, "k2": summarise(bsw.k2)}

    with timer("deconvolution"):  # each slice's curves against the AIF at its acquisition time (slice_timing.py)
        phae = params.method is DeconvolutionMethod.PHAE  # not corrected unless slice_timing.PHAE_BY_OFFSET (missed)
        offsets, timing_report = slice_timing.plan(
            timing, params.slice_timing, order[:n_brain], order[selection.voxels], spatial_shape,
            float(times[1] - times[0]), warnings,
            slice_timing.DSC_PHAE if phae and not slice_timing.PHAE_BY_OFFSET else None, slice_timing.DSC_ERRORS)
        deconvolve = _deconvolve_phae if phae else deconvolve_classic
        fit, extra_report = deconvolve(aif_curve if offsets is None or phae else aif_one_time, times, brain_curves,
                                       params, warnings, report_progress, keep_fitted=keep_curves, brain=brain,
                                       voxel_sizes=voxel_sizes, guide=guide, contrast=contrast,
                                       **({} if offsets is None else {"offsets": offsets}))
        guide = None  # S0 per voxel: read by the pooling only
    if not keep_curves:  # the curves are done with: the maps do not sit on top of them
        del raw, curves, brain_curves

    report_progress(0.9, "computing maps")
    with timer("maps"):
        cbf = (6000.0 * scale) * fit.cbf
        values = {"cbv": cbv}
        if k2 is not None:
            values["cbv_corrected"] = corrected_cbv
        cbv_for_mtt = corrected_cbv if corrected_cbv is not None else cbv
        with np.errstate(divide="ignore", invalid="ignore"):
            mtt = np.where(cbf > 0, 60.0 * cbv_for_mtt / cbf, 0.0)
        nonpositive = int((cbf <= 0).sum())
        if nonpositive:
            warnings.append(f"{nonpositive} brain voxels have no positive residue peak (CBF <= 0, e.g. CSF without blood); MTT set to 0 there")
        if params.method is DeconvolutionMethod.PHAE:
            # PHAE's MTT is the encoder's (the Lorentzian's ∫R, not truncated by the window); its CBF
            # was made consistent with the window's CBV by the decoder, so CBV/CBF would re-truncate it.
            mtt = np.where(cbf > 0, fit.mtt, 0.0).astype(np.float32)
        values.update(cbf=cbf, mtt=mtt, tmax=fit.tmax)
        if getattr(fit, "fit_error", None) is not None:  # PHAE: voxel-wise trust map beside the learned maps
            values["phae_fit_error"] = 100.0 * fit.fit_error
        if getattr(fit, "cbf_uncertainty", None) is not None:
            values["phae_cbf_uncertainty"] = 100.0 * fit.cbf_uncertainty
        if getattr(fit, "pooled_curves", None) is not None:
            values["phae_pooled_curves"] = fit.pooled_curves
        if k2 is not None:
            values["k2"] = k2
        if "nawm-mask" in masks:
            nawm = masks["nawm-mask"][brain]
            if not nawm.any():
                raise InputError("the NAWM mask does not overlap the brain mask; draw it inside the brain")
            for name, v in (("rcbv", cbv_for_mtt), ("rcbf", cbf)):
                reference, why = reference_ratios(v[nawm])  # None where a ratio to NAWM means nothing
                if reference is not None:
                    values[name] = v / reference
                else:
                    warnings.append(f"{name} not computed: {why}")
        # Maps share the input's grid but not its acquisition: a CBF map has no echo time (and no
        # JSON sidecar claiming one).
        maps = {name: Volume(_scatter(brain, v), affine.copy()) for name, v in values.items()}

    aif_voxels = np.zeros(spatial_shape, bool)
    aif_voxels.ravel()[order[selection.voxels]] = True
    info = map_info(params)
    report = {
        "pipeline": "dsc",
        "input": {"shape": input_shape, "frames": int(input_shape[3]),
                  "frame_interval_s": step, "echo_time_s": te, "second_echo_time_s": te2,
                  **({"sequence": sequence} if sequence else {})},
        "analysed_frames": {"frames": int(times.size), "frame_interval_s": float(times[1] - times[0]),
                            "frames_averaged": binned},
        "parameters": params.to_json(),
        "versions": versions(),
        "threads": block_workers(),  # this library's pools (the deconvolution's and PHAE's chunks, row blocks)
        "baseline": baseline.to_json(times),
        "aif": {**selection.to_json(times), **({"saturation": saturation.to_json(times)} if saturation else {})},
        "brain_voxels": int(brain.sum()),
        "contrast_to_noise": round(float(contrast), 3),
        "motion": motion,
        "slice_timing": timing_report,
        "maps": {name: {"unit": info[name][0], "description": info[name][1]} for name in maps},
        "summary": {"brain": summarise_maps(values)},
        "timings_s": timer.seconds,
        "warnings": warnings,
    }
    if k2 is not None:
        report["leakage_correction"] = bsw_report
    report.update(extra_report)
    systematic = (report.get("phae") or {}).get("roi_systematic_bias")
    if systematic:  # shown beside a ROI ratio of these maps (roi-stats, the panel's table, the BIDS roistats)
        for name, key in (("cbf", "note"), ("rcbf", "ratio_note")):
            if name in report["maps"] and systematic.get(key):
                report["maps"][name]["caveat"] = systematic[key]
    caveats = low_cnr_caveats(contrast, params.method)
    merge_caveats(caveats, sequence)  # spin-echo DSC: absolute values not comparable (.spin_echo)
    if saturation is not None and saturation.saturated:  # absolute values high; ratios hold (aif_saturation.py)
        for name, caveat in saturation.caveats(params.method.value).items():
            caveats[name] = caveats[name] + "; " + caveat if name in caveats else caveat
    for name, caveat in caveats.items():  # beside their ROI means and ratios
        if name in report["maps"]:
            earlier = report["maps"][name].get("caveat")
            report["maps"][name]["caveat"] = caveat + (f"; {earlier}" if earlier else "")
    for label, key in (("nawm", "nawm-mask"), ("tumor", "tumor-mask")):
        if key in masks:
            inside = masks[key][brain]
            report["summary"][label] = summarise_maps(values, inside)
    if "nawm-mask" in masks and "tumor-mask" in masks:
        report["summary"]["tumor_to_nawm"] = tumor_to_nawm(report["summary"], values, warnings)
    if second_echo is None and "tumor-mask" in masks:
        warnings.extend(negative_tumor_cbv(report["summary"]["tumor"]))
    delta = None
    if keep_curves:
        full = np.zeros(spatial_shape + (times.size,), np.float32)
        full.reshape(-1, times.size)[order] = curves  # brain rows leakage-corrected in place
        delta = Volume(full, affine.copy(), times)
    report_progress(1.0, "done")
    extras = {"baseline": baseline, "fit": fit}
    if getattr(fit, "fitted", None) is not None:
        extras["fitted_curves"] = fit.fitted  # (n_brain_voxels, T) model curves (PHAE decoder, AIF ⊗ residue)
        fit.fitted = None  # one copy only
    return DSCResult(maps, times, aif_curve, aif_voxels, brain, report, delta, extras=extras)


# ---------------------------------------------------------------------------------------------
def _echo_times(series: Volume, second_echo: Volume | None, params: DSCParameters):
    if params.input_kind is InputKind.CONCENTRATION:
        return None, None
    te = params.echo_time if params.echo_time is not None else series.acquisition.echo_time
    if te is None:
        raise InputError("the echo time (TE) is unknown: give --te in seconds (e.g. --te 0.03), or use "
                         "--input-kind concentration for data already converted to ΔR2*")
    te2 = None
    if second_echo is not None:
        te2 = params.second_echo_time if params.second_echo_time is not None else second_echo.acquisition.echo_time
        if te2 is None:
            raise InputError("dual-echo input needs the second echo time: give two values to --te (TE1 TE2)")
        # here, before any voxel is read: the TEs may come from the files' metadata, not only --te
        check_echo_times(float(te), float(te2))
    return float(te), (float(te2) if te2 is not None else None)


#: the voxels :func:`_early_artery_baseline` reads as "the largest boluses": this share of the brain, at least 5
EARLY_ARTERY_SHARE = 0.001


def _early_artery_baseline(brain_curves, baseline: Baseline, series, second_echo, order, resample, raw2_given, kind,
                           te, te2, skip: int) -> Baseline | None:
    """A shorter baseline where the brain's largest boluses (the arteries, before any AIF is chosen) PEAK inside
    the brain average's baseline, else None.

    Why: with the tissue several seconds late (6 s on the reference object), the arteries' whole first pass lies in
    the baseline taken from the brain-mean curve; converted against it their curves start below zero, the automatic
    selection's roughness is measured over their bolus, and it chose tissue: GM CBF 196-876 ml/100 g/min where the
    arterial mask read 18-41, without a word, or was refused (session 19's AIF audit). An AIF mask needs no such
    step: its own curve is the artery. Arteries that peak after the baseline ends are left to the loop in
    :func:`run_dsc`, as before."""
    n = brain_curves.shape[0]
    k = min(n, max(5, int(round(EARLY_ARTERY_SHARE * n))))
    if k < 5:
        return None
    peaks = brain_curves.max(axis=1)
    top = np.sort(np.argpartition(peaks, n - k)[n - k:])
    if int(np.argmax(brain_curves[top].mean(axis=0))) >= baseline.stop:
        return None
    raw = [_curves(_voxels(vol), order[top], resample)
           for vol in ((series, second_echo) if second_echo is not None else (series,))]
    detection, detection_kind = _detection_curve(raw[0], raw[1] if raw2_given else None, kind, te, te2)
    try:
        early = detect_baseline(detection, skip, detection_kind)
    except InputError:  # too few frames before them: keep the brain's baseline (its checks will say what is wrong)
        return None
    return Baseline(baseline.first, early.stop, early.arrival, True) if early.stop < baseline.stop else None


def _convert(raw, raw2, baseline: Baseline, params: DSCParameters, te, te2, in_aif):
    """ΔR2*(t) of the analysed voxels for one baseline choice, IN PLACE in ``raw`` (float32, the
    pipeline's own copy); returns (curves, clipped samples). The skipped frames before the baseline are 0."""
    if params.input_kind is InputKind.CONCENTRATION:
        _rebase(raw, baseline)
        return raw, 0
    clipped = signal_to_delta_r2s(raw, baseline, te, in_aif, second=raw2, te2=te2)
    raw[:, :baseline.first] = 0.0
    return raw, clipped


def _rebase(curves: np.ndarray, baseline: Baseline) -> None:
    """In place: each curve less its mean over the baseline frames, and 0 before them. The frames skipped at the
    start (not yet in the T1 steady state) carry no contrast information: left as converted, a first frame 1.3 x
    brighter entered every integral and deconvolution as ΔR2* -8.7 1/s and lowered GM CBV by 27 %, and with
    --skip-frames 5 over five such frames CBV came out negative (session 19's acquisition audit)."""
    curves -= curves[:, baseline.first:baseline.stop].mean(axis=1, keepdims=True)
    curves[:, :baseline.first] = 0.0


def _trapezoid_weights(times: np.ndarray) -> np.ndarray:
    """w with curves @ w = the trapezoid integral over `times` (float32)."""
    w = np.zeros(times.size)
    gaps = np.diff(times)
    w[:-1] += gaps / 2
    w[1:] += gaps / 2
    return w.astype(np.float32)


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, np.float32)
    out[mask] = values
    return out
