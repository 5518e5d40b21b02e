"""The DCE leakage pipeline: a 4D T1-weighted series in, RLS and Ktrans/ve/vp maps out.

``run_dce`` is the one documented entry point; the command line (`bbbanomaly dce`), the Slicer
logic and the background worker are thin layers over it.

Steps: check the input -> pick the voxels (brain mask, given or automatic) -> detect the
pre-contrast baseline -> signal enhancement ratio -> concentration (SPGR with T10) or relative
enhancement -> AIF (mask or Parker) -> Tofts / extended Tofts / Patlak for all voxels -> the RLS
autoencoder (trained on this case's normal-appearing brain, or bundled weights) -> maps and report.
With SPGR concentration the RLS runs on the SER before the fit, and the SER then becomes the concentration
in place (one float32 copy of the curves, issue 17); an AIF search region or the automatic AIF choose their
voxels before the RLS, from the concentration of those rows converted on demand.

The gather of the analysed voxels' curves (and the scatter of their values back to the grid) is in :mod:`.gather`;
the report, its map summaries and the fit's caveats (bounds reached, ve undetermined) are in :mod:`.run_report`;
the fit the result returns, read back from its maps (:class:`MapFit`), is in :mod:`.map_fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..app.curves import CurveSet
from ..core.checks import number, parameters as check_parameters
from ..core.errors import InputError
from ..io import read_mask
from ..core.memory import release_freed_memory
from ..core.report import Timer, dump_json
from ..core.volume import Volume, read_warnings
from ..perfusion.motion import motion_step
from ..perfusion import slice_timing
from ..perfusion.series_kind import check_series_metadata
from . import aif as aif_mod, aif_dose, aif_t2star, stated_relaxivity, view_sharing
from .arterial_baseline import _arterial_baseline
from .conversion import (ConcentrationRows, SERRows, concentration_from_ser, detect_brain_baseline_frames,
                         enhancement_ratio, ser_from_concentration)
from .exchange import ExchangeModel
from .gather import _brain_rows, _check_finite, _gather_curves, _rows_mean, _scatter
from .map_fit import MapFit
from .models import PKFit, PKModel
from .parameters import DCEParameters, InputKind, Model
from .parameters import MAP_INFO  # noqa: F401  (re-exported: roistats and the tests read it here)
from .parameters import MODEL_MAPS as _MODEL_MAPS
from .rls_inference import RLSOutput, TooFewTrainingVoxels, run_rls
from .run_report import (_check_delay_range, _check_two_compartment_sampling, _fit_bounds, _mark_undetermined_ve,
                         _report, _summaries)
from .validation import check_series, check_t10_map, check_t10_values

#: MAP_INFO (map name -> (unit, description), in the order written) and the maps of each model live in
#: .parameters, where `bbbanomaly dce --help` reads them too (without numpy).
MODEL_MAPS = {Model(name): maps for name, maps in _MODEL_MAPS.items()}
#: Used to express concentration input as SER for the RLS network when T10/flip/TR are unknown.
NOMINAL = {"t10": 1.4, "flip_angle": 15.0, "tr": 0.005}
SUFFIXES = (".nii.gz", ".nii", ".nrrd")

ProgressCallback = Callable[[float, str], None]


@dataclass
class DCEResult:
    """Maps (Volumes on the input grid), the AIF, the masks used and a JSON-ready report."""

    maps: dict[str, Volume]
    times: np.ndarray  # frame times [s]
    aif: np.ndarray  # plasma Cp [mM] (or relative-enhancement units), at the frame times
    aif_mask: np.ndarray | None
    brain_mask: np.ndarray
    report: dict
    extras: dict = field(default_factory=dict)

    def write(self, out_dir: str | Path, overwrite: bool = False, suffix: str = ".nii.gz") -> Path:
        """Write `<map><suffix>`, brain_mask, aif_mask (when given), aif.csv and report.json, all or nothing."""
        from ..io import write_volume
        from ..core.outputs import atomic_output_dir

        if suffix not in SUFFIXES:
            raise InputError(f"output suffix {suffix!r} is not one of {', '.join(SUFFIXES)}")
        template = next(iter(self.maps.values()))
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            for name, vol in self.maps.items():
                write_volume(vol, tmp / f"{name}{suffix}")
            masks = {"brain_mask": self.brain_mask}
            if self.aif_mask is not None:
                masks["aif_mask"] = self.aif_mask
            for name, mask in masks.items():
                write_volume(Volume(mask.astype(np.uint8), template.affine), tmp / f"{name}{suffix}")
            np.savetxt(tmp / "aif.csv", np.column_stack([self.times, self.aif]), delimiter=",",
                       header=f"time_s,aif_plasma_{self.report['units']['concentration']}", comments="", fmt="%.6g")
            dump_json(self.report, tmp / "report.json")
        return Path(out_dir).resolve()

    def curves(self) -> CurveSet:
        """Measured curves of the analysed brain voxels with the model fit and the RLS
        reconstruction in the same units (mM, or relative enhancement), and the AIF."""
        data = self.extras["curve_data"]
        label = {"tofts": "Tofts fit", "extended-tofts": "extended Tofts fit", "patlak": "Patlak fit",
                 "2cxm": "2CXM fit", "2cum": "2CUM fit"}
        model_curves = data["fitted"]() if callable(data["fitted"]) else data["fitted"]
        fitted = {label[self.report["parameters"]["model"]]: model_curves}
        rls: RLSOutput | None = data["rls"]
        if rls is not None:
            fitted["RLS reconstruction"] = data["to_units"](rls.ser_reconstruction(self.times))
        measured = data["measured"]() if callable(data["measured"]) else data["measured"]
        return CurveSet(self.times, self.brain_mask, measured, data["unit"], fitted, {"AIF": self.aif})


def run_dce(series: Volume, params: DCEParameters | None = None, *, aif_mask=None, brain_mask=None,
            tumor_mask=None, t10_map: Volume | None = None, progress: ProgressCallback | None = None,
            consume_input: bool = False) -> DCEResult:
    """Leakage maps from a DCE series.

    series:     4D Volume (T1-weighted signal, or concentration with ``params.input_kind='concentration'``)
                with frame times [s]; flip angle and TR from its metadata unless given in params.
    aif_mask:   arterial voxels (bool array or Volume), or with ``params.aif_region`` a search region
                around an artery; None uses ``params.population_aif`` (Parker).
    brain_mask: voxels to analyse; None = automatic (Otsu on the temporal mean).
    tumor_mask: left out of the RLS training set; summarised in the report.
    t10_map:    pre-contrast T1 [s] on the series grid (else ``params.t10``; neither = relative enhancement).
    progress:   callback(fraction in [0, 1], message); raise CancelledError from it to stop.
    consume_input: opt-in for callers that no longer need the series (a command line): its data is
                released (``series.data = None``) once the analysed curves are gathered, so the run
                holds the series and its curves only briefly (peak ~1x series + the curves + small
                change, instead of 1x + the curves + the maps). Off by default: a caller's Volume
                is never modified unless it asks for this.
    """
    params = check_parameters(params, DCEParameters, "run_dce")
    report_progress = progress or (lambda fraction, message: None)
    timer = Timer()
    warnings: list[str] = read_warnings(series)  # what the reader said about the file

    with timer("checks"):
        report_progress(0.0, "checking the input")
        check_series(series, params)
        masks = {name: read_mask(m, series, name) for name, m in
                 (("aif-mask", aif_mask), ("mask", brain_mask), ("tumor-mask", tumor_mask)) if m is not None}
        t10_grid = check_t10_map(t10_map, series, warnings) if t10_map is not None else None
        mode, flip, tr = _conversion_mode(series, params, t10_grid is not None, warnings)
        from .validation import check_masks_for_input  # concentration needs --mask; an AIF mask on no signal
        check_masks_for_input(series, masks, mode, params)
        times = np.asarray(series.times, dtype=np.float64)
        timing = slice_timing.series_timing(series.acquisition, series.spatial_shape,  # 2D multi-slice: each slice's
                                            float(np.median(np.diff(times))) if times.size > 1 else None,  # time
                                            params.slice_timing, "the DCE series", warnings)
        _rls_options_unused(params, warnings)
        if params.rls.value != "none" or params.refine:  # torch is needed: fail now on --device cuda without one
            from ..core.devices import resolve_device

            resolve_device(params.device)
        if "aif-mask" not in masks and params.population_aif is None and not params.aif_auto:
            params.population_aif = "parker"
            warnings.append("no AIF mask given: the Parker population AIF was used (--population-aif parker), the curve "
                            "of 0.1 mmol/kg: give --dose for another dose (Ktrans, vp and ve scale with it)"
                            if params.dose is None else
                            "no AIF mask given: the Parker population AIF was used (--population-aif parker)")
        elif "aif-mask" in masks and params.population_aif is not None:
            warnings.append("both an AIF mask and a population AIF were given: the AIF mask was used")
            params.population_aif = None
        blood_t10 = aif_mod.blood_t10_in_use(params, mode, warnings)  # (None where it converts nothing)
        aif_mod.refuse_auto_aif_on_one_t10(params, mode, t10_grid is not None, "aif-mask" in masks)

    check_series_metadata(series.acquisition, "the DCE series")  # b-values or an ASL sidecar: not a DCE series
    with timer("motion"):  # each frame registered to the first; resampled with --motion-correct rigid
        report_progress(0.02, "checking for head motion")
        series, _, motion = motion_step(series, masks.get("mask"), params.motion_correct, 0, warnings,
                                        kind=params.input_kind.value)

    with timer("masking"):
        brain = masks.get("mask")
        if brain is None:
            from ..dsc.validation import automatic_brain_mask

            brain = automatic_brain_mask(series.data, params.input_kind.value)
        arterial = masks.get("aif-mask")
        if arterial is not None and params.aif_region and mode != "concentration":
            # a box drawn near the skull reaches into the air: signal-free voxels cannot be arterial
            arterial = arterial.copy()
            arterial[arterial] = series.data[arterial].min(axis=1) > 0
        analysed = brain | arterial if arterial is not None else brain
        # the one float32 copy of the analysed curves, gathered without an intermediate copy (it is
        # converted in place below); C-order of the voxels, as series.data[analysed] gives them
        raw = _gather_curves(series.data, np.flatnonzero(analysed))
        _check_finite(raw)
        input_shape = list(series.data.shape)
        if consume_input:  # nothing below reads the series' voxels (the caller opted in)
            series.data = None
        in_brain = brain[analysed]
        t10 = (t10_grid[analysed] if t10_grid is not None else params.t10)
        if t10_grid is not None:
            check_t10_values(t10)
            t10 = _narrowed(t10)
        del t10_grid  # (float64 on the whole grid: only the analysed voxels' values are used)

    report_progress(0.05, "converting to concentration")
    with timer("conversion"):
        if params.baseline_frames is not None:
            n_base = params.baseline_frames
        else:
            # the brain's mean is one contrast enhancement, not an ASL, BOLD, DSC or diffusion series (series_kind)
            n_base = detect_brain_baseline_frames(_rows_mean(raw, in_brain), moved=bool(
                motion.get("frames_over_threshold")) and not motion.get("frames_resampled"))
            n_base = _arterial_baseline(raw, n_base, in_brain, arterial[analysed] if arterial is not None else None,
                                        t10, flip, tr, params, mode, times, warnings)
        if n_base > times.size - 4:
            raise InputError(f"the baseline ({n_base} frames) leaves fewer than 4 post-contrast frames of "
                             f"{times.size}; check --baseline-frames")
        rls_wanted = params.rls.value != "none"
        # the brain's baseline signal for the RLS (taken before the conversion overwrites the curves)
        s0_brain = raw[:, :n_base].mean(axis=1)[in_brain] if rls_wanted else None
        # SPGR with the RLS: the RLS runs on the SER first, which then becomes the concentration in place, so the
        # SER and concentration curves are never held at once (the same values: every step is per sample or per row)
        rls_first = rls_wanted and mode == "spgr"
        # --blood-t10 converts the AIF's voxels from their SER: the SER is kept until the AIF is known (as for the RLS)
        ser_first = rls_first or blood_t10 is not None
        conc, ser, unit, to_units, clipped = _convert(raw, n_base, mode, t10, flip, tr, params, rls_wanted,
                                                      defer_concentration=ser_first)
        del raw
        clip_warning_at = len(warnings)
        if clipped:
            warnings.append(_clip_warning(clipped))

    rls_out, rls_skipped, aif_curve = None, None, None
    # the automatic AIF in mM: its voxels' mean SER converted once (aif.PooledConversion), over the analysed rows' T10
    pool = aif_mod.PooledConversion(t10, flip, tr, params.relaxivity) if mode == "spgr" else None
    if ser_first and _aif_chooses_voxels(arterial, params):
        # An AIF search region or the automatic AIF choose their voxels from the concentration, and the RLS leaves
        # them out of per-case training: chosen now, from the concentration of the rows they read (the region's;
        # the brain's block by block, then the candidates'), converted on demand from the SER (the same values as
        # the whole conversion below: every step is per sample), so the curves are never held twice.
        report_progress(0.1, "arterial input function")
        with timer("aif"):
            aif_curve, arterial = _aif_choosing_voxels(ConcentrationRows(ser, t10, flip, tr, params.relaxivity),
                                                       params, arterial, analysed, brain, times, n_base, pool)
    aif_blood = None
    if ser_first:
        if blood_t10 is not None:  # the AIF's voxels (drawn, or chosen above) from their SER, with blood's T10
            aif_blood = aif_mod.blood_aif(ser[arterial[analysed]], blood_t10, flip, tr, params.relaxivity,
                                          params.hematocrit, warnings)
        outside = ~in_brain
        # AIF-mask rows outside the brain (a few): converted apart (not needed once the AIF is known)
        extra = ser[outside] if outside.any() and aif_curve is None else None
        ser = _brain_rows(ser, in_brain)
        if rls_first:
            rls_out, rls_skipped = _run_rls(ser, times, n_base, params, masks, brain, arterial, s0_brain, timer,
                                            warnings, lambda f, m: report_progress(0.1 + 0.4 * f, m))
        s0_brain = None
        with timer("conversion"):
            conc, clipped = concentration_from_ser(ser, _rows(t10, in_brain), flip, tr, params.relaxivity, out=ser)
            if extra is not None:
                extra, clipped_extra = concentration_from_ser(extra, _rows(t10, outside), flip, tr, params.relaxivity,
                                                              out=extra)
                clipped += clipped_extra
            if clipped:
                warnings.insert(clip_warning_at, _clip_warning(clipped))
        if rls_out is not None:  # the SER is gone (now the concentration): the panel's RLS curves recompute it
            brain_conc_ = conc
            # (the brain's T10 taken when asked: not a copy held beside the maps)
            rls_out.ser = lambda: ser_from_concentration(brain_conc_, _rows(t10, in_brain), flip, tr, params.relaxivity)
        ser = None

    aif_delay, exact_aif, placement, t2star, aif_one_time = None, None, None, None, None
    if aif_curve is None:  # (a search region or the automatic AIF with the RLS or --blood-t10: chosen above)
        report_progress(0.5 if rls_first else 0.1, "arterial input function")
        with timer("aif"):
            if ser_first and extra is not None:  # the AIF mask's rows in their analysed order, from both parts
                aif_rows = np.flatnonzero(arterial[analysed])
                part = in_brain[aif_rows]
                blood = np.empty((aif_rows.size, times.size), np.float32)
                blood[part] = conc[(np.cumsum(in_brain) - 1)[aif_rows[part]]]
                blood[~part] = extra[(np.cumsum(outside) - 1)[aif_rows[~part]]]
                aif_curve = aif_mod.aif_from_mask(blood, np.ones(aif_rows.size, bool), params.hematocrit,
                                                  tissue=conc, tissue_in_aif=arterial[analysed][in_brain],
                                                  n_baseline=n_base)
                del blood, extra
            elif arterial is not None and not params.aif_region:
                aif_curve = aif_mod.aif_from_mask(conc, arterial[analysed], params.hematocrit, n_baseline=n_base)
                aif_one_time = slice_timing.aif_at_one_time(  # --slice-timing auto: its voxels moved to one time first
                    timing, params.slice_timing, aif_curve, lambda: conc[arterial[analysed]] / (1 - params.hematocrit),
                    np.flatnonzero(arterial), brain.shape, times)
            elif _aif_chooses_voxels(arterial, params):
                if arterial is None and mode == "relative":
                    # saturated arterial SER is neither the highest nor the sharpest curve
                    raise InputError("the automatic AIF needs concentration, not relative enhancement: give --t10 "
                                     "(seconds or a map) or --vfa, or use --aif-mask or --population-aif")
                aif_curve, arterial = _aif_choosing_voxels(conc, params, arterial, analysed, brain, times, n_base,
                                                           pool)
            else:
                # (no AIF mask here: the analysed rows are the brain's)
                aif_curve, exact_aif, placement = aif_mod.population_aif(
                    times, conc, _rows_mean(conc, in_brain), n_base, params.hematocrit, params.max_delay,
                    params.population_aif, params.dose)
                aif_delay = placement.arrival

    if aif_blood is not None:  # (the voxels were chosen and checked on the tissue-T10 curve above)
        aif_curve, aif_one_time = aif_blood, None  # (not the mean the alignment read)
    aif_mod.warn_slow_frames(aif_curve, times, aif_delay is not None, warnings,
                             refine=params.refine and params.model not in (Model.TWO_CXM, Model.TWO_CUM))
    if params.aif_auto and params.population_aif is None and "aif-mask" not in masks and mode == "spgr":
        aif_mod.warn_short_auto_baseline(n_base, warnings)  # (each chosen artery's S0 from the few frames)
    elif "aif-mask" in masks and mode == "spgr":  # a drawn mask or search region: per-voxel S0 (partial volumes)
        aif_mod.warn_short_measured_baseline(n_base, "from the --aif-search region" if params.aif_region
                                             else "from --aif-mask", warnings)
    if aif_delay is None:  # a measured AIF (mask, search region, automatic): its peak must be one a bolus gives
        aif_mod.check_plasma_peak(aif_curve, mode, "from --aif-mask" if "aif-mask" in masks and not params.aif_region
                                  else "from the --aif-search region" if params.aif_region else "chosen automatically",
                                  aif_mod.t10_given(t10_map, blood_t10))  # (the advice fits what was given)
        aif_mod.warn_single_t10(params, mode, t10_map is not None, blood_t10, warnings)
        measured, (aif_curve, t2star) = aif_curve, aif_t2star.check_measured_aif(  # the blood's T2* at TE: said
            aif_curve, series.acquisition, params, mode, t10, arterial[analysed] if arterial is not None else None,
            blood_t10, flip, tr, times, n_base, warnings)  # (corrected when asked: then not the aligned mean)
        aif_one_time = aif_one_time if np.array_equal(aif_curve, measured) else None
    if rls_first:
        release_freed_memory()  # what the RLS step's network and the conversion left, before the fit's chunks
    fit_from, fit_span = (0.55, 0.35) if rls_first else (0.15, 0.3)
    report_progress(fit_from, f"fitting {params.model.value}")
    # the brain's rows moved to the front in place (arterial voxels outside the brain, needed for the
    # AIF only, are left behind): a view, not a copy of the curves (with ser_first: already)
    brain_conc = conc if ser_first else _brain_rows(conc, in_brain)
    if isinstance(ser, SERRows):  # (concentration input: over the brain's rows, now at the front)
        ser = ser.rows_of(brain_conc, in_brain)
    elif ser is not None:
        ser = brain_conc if ser is conc else _brain_rows(ser, in_brain)
    # a population AIF's delay grid starts before the arteries' arrival and reaches past the brain average's
    beyond = placement.span - params.max_delay if placement is not None else 0.0
    with timer("model_fit"):
        # each slice's curves fitted with the AIF at that slice's acquisition time (perfusion/slice_timing.py)
        offsets, timing_report = slice_timing.plan(
            timing, params.slice_timing, np.flatnonzero(brain), np.flatnonzero(arterial) if arterial is not None
            else np.zeros(0, int), brain.shape, float(np.median(np.diff(times))), warnings,
            _slice_timing_unsupported(params, exact_aif, arterial), slice_timing.DCE_ERRORS, slice_timing.DCE_REMEDY)
        if params.model in (Model.TWO_CXM, Model.TWO_CUM):  # always nonlinear (.exchange)
            model = ExchangeModel(aif_curve, times, uptake=params.model is Model.TWO_CUM,
                                  max_delay=params.max_delay + beyond, exact_aif=exact_aif)
        else:
            model = slice_timing.grouped(
                lambda aif: PKModel(params.model, aif, times, max_delay=params.max_delay + beyond, refine=params.refine,
                                    refine_iterations=params.refine_iterations, device=params.device,
                                    chunk_voxels=params.chunk_voxels, exact_aif=exact_aif),
                aif_curve if offsets is None or aif_one_time is None else aif_one_time, times, offsets)
        fitting = lambda f: report_progress(fit_from + fit_span * f, f"fitting {params.model.value}")  # noqa: E731
        if not isinstance(model, ExchangeModel):  # model curves on demand (DCEResult.curves), not held with the maps
            # the parameters stored as their float32 maps will hold them (the same cast; issue 17)
            fit = model.fit(brain_conc, progress=fitting, keep_fitted=False, dtype=np.float32)
        else:
            fit = model.fit(brain_conc, progress=fitting)
        # what the data do not determine is said, not presented as a measurement (round 17's user audit): values
        # at a bound of the fit (before ve's undetermined voxels are set to 0), the two-compartment models on slow
        # frames, and ve (kep, Te) where the curve carries no backflux above its noise
        _check_two_compartment_sampling(params.model, times, warnings)
        fit_bounds = _fit_bounds(params.model, fit, warnings)
        delay_range = _check_delay_range(params.model, aif_curve, times, params.max_delay, brain_conc, fit, warnings,
                                         exact_aif=exact_aif, beyond=beyond)
        ve_info, ve_known, curve_kep = None, None, None
        if "ve" in MODEL_MAPS[params.model]:
            ve_info, ve_known, curve_kep = _mark_undetermined_ve(model, fit, brain_conc, masks, brain, warnings)

    measured = brain_conc
    if rls_wanted and not rls_first:  # relative enhancement (the SER is the curves) or concentration input
        rls_out, rls_skipped = _run_rls(ser, times, n_base, params, masks, brain, arterial, s0_brain, timer,
                                        warnings, lambda f, m: report_progress(0.45 + 0.45 * f, m))

    release_freed_memory()  # the fit's chunk temporaries, freed, not all reused by the maps (glibc keeps them)
    report_progress(0.92, "computing maps")
    with timer("maps"):
        values: dict[str, np.ndarray] = {}
        if rls_out is not None:
            values.update(rls_out.maps)
        for name in MODEL_MAPS[params.model]:
            values[name] = getattr(fit, name)
        if params.max_delay > 0:
            values["delay"] = fit.delay
        values["fit_r2"] = fit.r2
        # the summaries' float64 temporaries come and go before the maps on the grid exist (issue 17)
        summary = _summaries(values, masks, brain, ve_known)
        names = list(values)
        del values
        # What the maps hold is not kept twice beside them (issue 17: the result's own memory), and it is let go
        # as the maps are made: the fit's and the RLS's per-voxel values are handed over to their maps, and the
        # result's fit reads them back from the maps (MapFit).
        per_voxel = dict(rls_out.maps) if rls_out is not None else {}
        if rls_out is not None:
            rls_out.maps = None
        from_maps = isinstance(fit, PKFit)
        per_voxel.update({name: getattr(fit, name) for name in names if name not in per_voxel and name != "fit_r2"},
                         fit_r2=fit.r2)
        if from_maps:
            fit = None  # (its arrays are held by per_voxel alone, each until its map is made)
        ve_known = None
        release_freed_memory()  # (the summaries' temporaries)
        maps = {}
        for name in names:
            maps[name] = Volume(_scatter(brain, per_voxel.pop(name)), series.affine.copy())  # float32, as before
            release_freed_memory()  # the values just handed over (smaller than a map: glibc would keep them)
        if from_maps:
            fit = MapFit(maps, brain, model.delays, curve_kep)
            fitted = lambda: model.curves(fit.pkfit())  # noqa: E731  (model curves on demand, for the panel)
        else:
            fitted = fit.fitted

    report = _report(series, input_shape, params, mode, flip, tr, n_base, times, aif_curve, aif_delay, arterial,
                     brain, masks, summary, maps, rls_out, unit, timer, warnings)
    in_aif = arterial[analysed] if arterial is not None else None
    report["aif"]["t10"] = aif_mod.aif_t10_record(params, mode, t10, in_aif, blood_t10)
    aif_t2star.add_to_report(report, t2star, aif_delay is not None)
    if rls_skipped:
        report["rls"] = {"source": params.rls.value, "skipped": rls_skipped}
    report["fit_bounds"] = fit_bounds
    report["motion"] = motion
    report["slice_timing"] = timing_report
    report["delay_range"] = {"max_delay_s": params.max_delay, "groups": delay_range}
    # a population AIF: where it was put, the delay grid searched from it, and its dose (.aif_dose); the dose the
    # DICOM header states, where it does, checked against it (.stated_dose)
    report["aif"].update(aif_dose.report_entries(params, exact_aif, placement, warnings, series.acquisition))
    # the r1 of the agent the DICOM header names, against the r1 the curves were converted with (.stated_relaxivity)
    stated_relaxivity.add_to_report(report, series.acquisition, params, mode,
                                    exact_aif.name if placement is not None else None, warnings)
    view_sharing.add_to_report(report, series.acquisition, warnings)  # TWIST/DISCO/keyhole (.view_sharing)
    if ve_info is not None:
        report["ve_determination"] = ve_info
        share = ve_info.get("undetermined_share")
        if share:  # said where an ROI of these maps is read (roi-stats, the panel's ratio table, BIDS roistats)
            for name in ve_info.get("maps_set_to_0", ()):
                if name in report["maps"]:
                    report["maps"][name]["caveat"] = (
                        f"{name} is 0 where the data do not determine ve ({100 * share:.0f} % of this brain, mostly "
                        "normal tissue with Ktrans near 0); an ROI mean or ratio counts those zeros, so read it where "
                        "ve is determined (the enhancing tumour), not as a tumour/NAWM ratio")
    report_progress(1.0, "done")
    aif_voxels = arterial.copy() if arterial is not None else None
    curve_data = {"measured": measured, "fitted": fitted, "unit": unit,
                  "rls": rls_out, "to_units": lambda ser_hat: to_units(ser_hat, in_brain)}
    return DCEResult(maps, times, aif_curve, aif_voxels, brain, report,
                     extras={"fit": fit, "baseline_frames": n_base, "curve_data": curve_data})


# ---------------------------------------------------------------------------------------------
def _slice_timing_unsupported(params: DCEParameters, exact_aif, arterial) -> tuple[str, str] | None:
    """(why, what to do) where known slice times cannot be used: one AIF for every voxel (the exchange models'
    fit; a population AIF, placed on the brain's mean curve, has no slice of its own)."""
    if params.model in (Model.TWO_CXM, Model.TWO_CUM):
        return (f"the {params.model.value} fit reads one AIF for every voxel",
                "read each slice's maps with that in mind, or fit extended-tofts with --slice-timing auto")
    if exact_aif is not None or arterial is None:
        return ("a population AIF has no slice of its own",
                "draw --aif-mask on an artery and run with --slice-timing auto to have them used")
    return None


def _aif_chooses_voxels(arterial, params: DCEParameters) -> bool:
    """Whether the AIF step chooses its voxels from the concentration: an AIF search region, or the automatic
    AIF (not an AIF mask, taken as drawn, nor a population AIF)."""
    if arterial is not None:
        return bool(params.aif_region)
    return bool(params.aif_auto and params.population_aif is None)


def _aif_choosing_voxels(curves, params: DCEParameters, arterial, analysed, brain, times, n_base, pool=None):
    """(plasma AIF, the voxels averaged as a mask on the grid) of an AIF search region (``arterial``) or of the
    automatic AIF (``arterial`` None: the analysed voxels are then the brain's), from the concentration curves of
    the analysed voxels: an array, or a :class:`ConcentrationRows` (read by rows: the region's; by blocks for the
    automatic AIF's first-pass areas, then its candidates' rows). pool: :class:`aif_mod.PooledConversion` of the
    analysed rows for the automatic AIF (SPGR concentration), else None."""
    if arterial is not None:
        aif_curve, keep = aif_mod.aif_in_region(curves, arterial[analysed], n_base, params.hematocrit)
        chosen = np.zeros(int(analysed.sum()), bool)
        chosen[np.flatnonzero(arterial[analysed])[keep]] = True
        return aif_curve, _scatter(analysed, chosen).astype(bool)  # the voxels actually averaged
    first_pass = aif_mod.first_pass_by_blocks(curves, times, n_base) if isinstance(curves, ConcentrationRows) else None
    aif_curve, chosen = aif_mod.auto_aif(curves, times, n_base, params.hematocrit, params.seed, first_pass=first_pass,
                                         pool=pool)
    arterial = np.zeros(brain.shape, bool)
    arterial[tuple(np.argwhere(brain)[chosen].T)] = True  # the voxels averaged, as DSC reports them
    return aif_curve, arterial


def _run_rls(ser, times, n_base, params, masks, brain, arterial, s0_brain, timer, warnings, progress):
    """(RLSOutput or None, why it was skipped or None) for the brain's SER curves."""
    exclude = np.zeros(int(brain.sum()), bool)  # brain rows left out of per-case training
    if "tumor-mask" in masks:
        exclude = exclude | masks["tumor-mask"][brain]
    if arterial is not None:
        exclude = exclude | arterial[brain]
    try:
        return run_rls(ser, times, n_base, params, exclude, s0_brain, timer, warnings, progress,
                       tumor_given="tumor-mask" in masks), None
    except TooFewTrainingVoxels as exc:  # the classic maps are still worth having (issue 12)
        warnings.append(f"the RLS map was skipped: {exc}; the classic maps were made")
        return None, str(exc)


def _clip_warning(clipped: int) -> str:
    return (f"{clipped} samples lay above the SPGR maximum signal (noise on saturated voxels) and were clipped "
            "before the inversion")


#: the RLS-only parameters and the options that set them: named in the report when given with --rls none
RLS_ONLY_OPTIONS = {"rls_weights": "--rls-weights", "rls_epochs": "--rls-epochs"}


def _rls_options_unused(params: DCEParameters, warnings: list[str]) -> None:
    """A warning naming the RLS options given with --rls none: they were ignored without a word (session 19's audit;
    the bundled/per-case split of --rls-epochs is said in rls_inference.run_rls)."""
    unused = {"none": RLS_ONLY_OPTIONS, "case": {"rls_weights": "--rls-weights"}}.get(params.rls.value, {})
    defaults = DCEParameters()
    given = [option for field, option in unused.items()
             if str(getattr(params, field)) != str(getattr(defaults, field))]
    if given and params.rls.value == "none":
        verb = "apply to the RLS only and were" if len(given) > 1 else "applies to the RLS only and was"
        warnings.append(f"{', '.join(given)} {verb} ignored (this run used --rls none)")
    elif given:
        warnings.append("--rls-weights names bundled weights and was ignored: --rls case trains the RLS network on "
                        "this case (use --rls bundled to use the weights)")


def _conversion_mode(series: Volume, params: DCEParameters, have_map: bool, warnings: list[str]):
    """'concentration' (input is C), 'spgr' (quantitative) or 'relative' (no T10), with flip and TR."""
    flip = params.flip_angle if params.flip_angle is not None else series.acquisition.flip_angle
    tr = params.tr if params.tr is not None else series.acquisition.repetition_time
    if params.input_kind is InputKind.CONCENTRATION:
        return "concentration", flip, tr
    if have_map or params.t10 is not None:
        missing = [name for name, v in (("--flip-angle DEG", flip), ("--tr S", tr)) if v is None]
        if missing:
            raise InputError(f"signal -> concentration with T10 needs the flip angle and TR, which the file does not "
                             f"give: add {' and '.join(missing)} (or drop --t10 for relative enhancement)")
        # values from the file's metadata get the options' own ranges: a file's 120° or 1.5 "s" would give
        # meaningless concentrations without a word (the metadata readers accept any sequence's values)
        if params.flip_angle is None:
            flip = number(flip, "the flip angle in the input's metadata", 0.0, 90.0, low_open=True, high_open=True,
                          hint="a DCE SPGR flip angle in degrees (e.g. 15); give --flip-angle DEG to override it")
        if params.tr is None:
            tr = number(tr, "the TR in the input's metadata", 0.0, 1.0, low_open=True, high_open=True,
                        hint="a DCE SPGR repetition time in seconds (e.g. 0.005); give --tr S to override it")
        return "spgr", float(flip), float(tr)
    warnings.append("no T10 given: relative enhancement (S/S0 - 1) is used as concentration, so Ktrans, ve and vp "
                    "are semi-quantitative; give --t10 (a value or a map), --flip-angle and --tr for mM")
    return "relative", flip, tr


def _convert(raw, n_base, mode, t10, flip, tr, params: DCEParameters, need_ser: bool = True,
             defer_concentration: bool = False):
    """(conc, ser, unit, to_units, clipped) for the analysed voxels; ``to_units(ser, rows)`` maps
    SER curves of the rows back into the units of ``conc`` (for the RLS reconstruction).

    ``raw`` is converted in place (SER, then concentration when the SER is not needed: ``ser`` is
    then None), so the run holds one float32 copy of the curves, two when the RLS needs both (a concentration
    input's SER is read on demand, :class:`SERRows`).
    defer_concentration (SPGR): the SER only (``conc`` None, ``clipped`` 0); the caller converts it later."""
    r1 = params.relaxivity
    if mode == "concentration":
        conc = raw
        t10n = NOMINAL["t10"] if t10 is None else t10
        f, r = flip or NOMINAL["flip_angle"], tr or NOMINAL["tr"]
        # the RLS reads the SER by row blocks, converted on demand (no second copy of the curves)
        ser = SERRows(conc, t10n, f, r, r1) if need_ser else None
        return (conc, ser, "concentration (mM)",
                lambda s, rows: concentration_from_ser(s, _rows(t10n, rows), f, r, r1)[0], 0)
    ser, _ = enhancement_ratio(raw, n_base, out=raw)
    if mode == "relative":
        return ser, ser, "relative enhancement (S/S0 - 1)", lambda s, rows: s, 0
    if defer_concentration:
        return (None, ser, "concentration (mM)",
                lambda s, rows: concentration_from_ser(s, _rows(t10, rows), flip, tr, r1)[0], 0)
    conc, clipped = concentration_from_ser(ser, t10, flip, tr, r1, out=None if need_ser else ser)
    return (conc, ser if need_ser else None, "concentration (mM)",
            lambda s, rows: concentration_from_ser(s, _rows(t10, rows), flip, tr, r1)[0], clipped)


def _rows(t10, rows):
    return t10[rows] if np.ndim(t10) == 1 else t10


def _narrowed(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 when that holds them exactly (a float32 or integer T10 map: check_t10_map made them
    float64), else as they are. The conversions take T10 as float64 (the same values), and the run keeps it until
    the panel's curves are made (half the bytes)."""
    narrow = values.astype(np.float32)
    return narrow if np.array_equal(narrow, values) else values
