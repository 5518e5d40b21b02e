"""What ``run_dce`` says about its maps: the report, its map summaries and the fit's caveats.

Held apart from :mod:`.pipeline` because it reads a finished fit and writes what the run tells its user, not the
pipeline's order of steps: the report's summary of every map over the brain and tumor regions (:func:`_summaries`),
and what the data do not determine (round 17's user audit), said rather than presented as a measurement: the share of
voxels at a bound of the fit (:func:`_fit_bounds`, :data:`BOUND_WARNING_SHARE`), 2CXM/2CUM on frames too far apart
(:func:`_check_two_compartment_sampling`), and ve (kep, Te) set to 0 where the backflux is below the fit's noise
(:func:`_mark_undetermined_ve`, by :mod:`.backflux`); then the report itself (:func:`_report`).
"""

from __future__ import annotations

import numpy as np

from ..core.devices import block_workers
from ..core.report import summarise_maps, versions
from . import backflux, exchange
from .models import PKFit
from .parameters import MAP_INFO, VE_DEPENDENT_MAPS, Model


def _summaries(values: dict, masks: dict, brain: np.ndarray, ve_known: np.ndarray | None = None) -> dict:
    """The report's summary of every map over the brain (and tumor / non-tumor with a tumor mask). ve, kep and Te
    are summarised over the voxels whose ve the data determine (``ve_known``; elsewhere they are 0, not analysed)."""
    regions = {"brain": None}
    if "tumor-mask" in masks:
        inside = masks["tumor-mask"][brain]
        regions.update(tumor=inside, non_tumor=~inside)
    dependent = [name for name in VE_DEPENDENT_MAPS if name in values] if ve_known is not None else []
    summary = {}
    for region, inside in regions.items():
        stats = summarise_maps({k: v for k, v in values.items() if k not in dependent}, inside)
        if dependent:
            known = ve_known if inside is None else ve_known & inside
            stats.update(summarise_maps({name: values[name] for name in dependent}, known))
        summary[region] = {name: stats[name] for name in values}  # the maps' order
    return summary


#: Share of the brain voxels at a bound of the fit above which the report warns (a few voxels always are).
BOUND_WARNING_SHARE = 0.01


def _fit_bounds(model: Model, fit, warnings: list[str]) -> dict:
    """{map: {"side", "bound", "share"}}: the share of the brain voxels whose value sits at a bound of the fit
    (there the value is the fit's limit, not a measurement), and a warning for those at >= BOUND_WARNING_SHARE.
    ve at its bounds (and kep, which bounds it) is told by the ve determination instead."""
    if model in (Model.TWO_CXM, Model.TWO_CUM):
        checks = [("fp", "upper", 100.0 * exchange.FP_BOUNDS[1]), ("fp", "lower", 100.0 * exchange.FP_BOUNDS[0]),
                  ("ps", "upper", exchange.PS_BOUNDS[1]), ("vp", "upper", exchange.V_BOUNDS[1])]
    elif model in (Model.EXTENDED_TOFTS, Model.PATLAK):
        checks = [("vp", "upper", 1.0)]
    else:
        checks = []
    out, told = {}, []
    for name, side, bound in checks:
        values = np.asarray(getattr(fit, name))
        at = values >= bound * (1 - 1e-5) if side == "upper" else values <= bound * (1 + 1e-5)
        share = float(at.mean()) if values.size else 0.0
        out[f"{name}_{side}"] = {"map": name, "side": side, "bound": bound, "share": share}
        if share >= BOUND_WARNING_SHARE:
            told.append(f"{'Fp' if name == 'fp' else 'PS' if name == 'ps' else name} at its {side} bound "
                        f"({bound:g} {MAP_INFO[name][0]}) in {100 * share:.1f} %")
    if told:
        warnings.append("fit bounds reached: " + "; ".join(told) + " of the brain voxels; there the map holds the "
                        "fit's limit, not a measurement" + (
                            " (Fp at a bound: the curves do not determine the plasma flow)"
                            if any(t.startswith("Fp") for t in told) else ""))
    return out


#: :func:`_check_delay_range`: the voxels whose fit is read (R² at least DELAY_PROBE_MIN_R2: a bolus to time), at most
#: DELAY_PROBE_VOXELS of each group (an even stride), a group read only with at least MIN_DELAY_PROBE_VOXELS of them;
#: the leaky group (Ktrans >= LEAKY_KTRANS, the reference object's "leaky" threshold, half its lowest rim sector's);
#: a voxel fits "later" when the AIF delayed beyond --max-delay (up to MAX_DELAY_S) leaves at most DELAY_BETTER_SSE of
#: the residual it leaves within it; a warning where that is DELAY_WARNING_SHARE of a group or more.
#: Measured (the DCE reference object, 4 slices, SNR 20-100, frames 1-10 s, --max-delay 6; the Ktrans group is the
#: brain's top 1 %, scripts/dce_unusual_acquisitions.py): 0-8 % of the leaky group and 0-0.1 % of the brain group
#: fit "later" in every ordinary acquisition; with the tumour 8-15 s behind the artery 91-93 % of the leaky group
#: (Ktrans +37 % at 10 s, +100 % at 15 s, vp -39 % and -100 %), with the whole brain 10 s behind it 99.9 % of the
#: brain group (grey-matter vp -100 %).
DELAY_PROBE_MIN_R2 = 0.5
DELAY_PROBE_VOXELS = 4096
MIN_DELAY_PROBE_VOXELS = 20
LEAKY_KTRANS = 0.01  # [1/min]
DELAY_BETTER_SSE = 0.5
DELAY_WARNING_SHARE = 0.25
#: voxels per chunk of the probe's fits: the extended grid's (61 delays) temporaries stay ~1-2 MiB (Testing/
#: test_dce_memory.py: the run's peak is the series, the curves and the fit's parameters)
DELAY_PROBE_CHUNK = 512


def _check_delay_range(model: Model, aif: np.ndarray, times: np.ndarray, max_delay: float, curves, fit,
                       warnings: list[str], exact_aif=None, beyond: float = 0.0) -> dict:
    """{group: {"voxels", "later_share", "median_delay_s"}}: whether the tissue's bolus comes later than the delay
    grid (0 to --max-delay) reaches, with a warning naming the --max-delay that would reach it.

    Why: the fit shifts the AIF by at most --max-delay (default 6 s); a tissue whose bolus arrives later is fitted
    with a wrong delay, and its maps are wrong without a word: on the DCE reference object a tumour 10 s behind the
    artery read Ktrans +37 %, vp -39 % (15 s: +100 %, vp 0), the whole brain 10 s behind it grey-matter vp 0; with
    --max-delay 20 every one of them read within 1 % (scripts/dce_unusual_acquisitions.py). A delay to an artery
    upstream of a tumour, or across a hemisphere, is seconds to more than ten. The check refits a sample of the
    voxels with a clear bolus (the brain's, and the leaky ones': a tumour is a small share of a brain) with the
    grid extended to MAX_DELAY_S, by the run's linear model (extended Tofts for the two-compartment models), and
    counts the voxels that fit at least twice as well later than --max-delay.

    A population AIF (``exact_aif``, evaluated at every delay) is searched ``beyond`` s further than --max-delay
    (its placement starts the grid before the arteries' arrival and reaches past the brain average's): the grid the
    fit used is 0 to max_delay + beyond, and the --max-delay suggested is the later delay less ``beyond``."""
    from .models import PKModel
    from .parameters import MAX_DELAY_S

    out: dict = {}
    searched = max_delay + beyond
    if searched >= MAX_DELAY_S:
        return out
    r2 = np.nan_to_num(np.asarray(fit.r2, dtype=np.float64), nan=0.0)
    clear = r2 >= DELAY_PROBE_MIN_R2
    groups = {"brain": clear, "leaky": clear & (np.asarray(fit.ktrans) >= LEAKY_KTRANS)}
    probe = model if model in (Model.TOFTS, Model.EXTENDED_TOFTS, Model.PATLAK) else Model.EXTENDED_TOFTS
    told = []
    for name, chosen in groups.items():
        rows = np.flatnonzero(chosen)
        if rows.size < MIN_DELAY_PROBE_VOXELS:
            continue
        rows = rows[:: -(-rows.size // DELAY_PROBE_VOXELS)]
        sample = np.asarray(curves[rows], dtype=np.float32)  # (a few MiB at most: fitted in small chunks)
        within = PKModel(probe, aif, times, max_delay=searched, chunk_voxels=DELAY_PROBE_CHUNK,
                         exact_aif=exact_aif).fit(sample, keep_fitted=False)
        extended = PKModel(probe, aif, times, max_delay=MAX_DELAY_S, chunk_voxels=DELAY_PROBE_CHUNK,
                           exact_aif=exact_aif).fit(sample, keep_fitted=False)
        del sample
        later = (extended.delay > searched) & ((1.0 - extended.r2) <= DELAY_BETTER_SSE * (1.0 - within.r2))
        share = float(later.mean())
        delays = extended.delay[later] - beyond
        out[name] = {"voxels": int(rows.size), "later_share": share,
                     "median_delay_s": float(np.median(delays)) if delays.size else None}
        if share >= DELAY_WARNING_SHARE:
            told.append((name, share, delays))
    if told:
        every = np.concatenate([d for _, _, d in told])
        suggest = min(MAX_DELAY_S, float(np.ceil(np.percentile(every, 90))) + 2.0)
        label = {"leaky": f"the leaky voxels (Ktrans >= {LEAKY_KTRANS:g}/min)", "brain": "the brain's voxels"}
        which = " and ".join(f"{100 * share:.0f} % of {label[name]} (best at a median {np.median(delays):.0f} s)"
                             for name, share, delays in told)
        warnings.append(f"the tissue's bolus comes later after the AIF's than --max-delay {max_delay:g} s reaches: "
                        f"of the voxels with a clear bolus (fit R² >= {DELAY_PROBE_MIN_R2:g}), {which} fit at least "
                        "twice as well with the AIF delayed further. There Ktrans, ve and vp are those of a wrong "
                        "delay (on the DCE reference object a tumour 10 s behind the artery read Ktrans +37 % and vp "
                        f"-39 %); rerun with --max-delay {suggest:g}")
    return out


def _check_two_compartment_sampling(model: Model, times: np.ndarray, warnings: list[str]) -> None:
    """A warning when the frames are too far apart for 2CXM/2CUM to separate Fp from PS (the run goes on)."""
    if model not in (Model.TWO_CXM, Model.TWO_CUM):
        return
    interval = float(np.median(np.diff(times)))
    if interval > exchange.MAX_FRAME_INTERVAL_S * (1 + exchange.FRAME_INTERVAL_TOLERANCE):
        dependent = "Fp, PS, E, Tc, ve and Te" if model is Model.TWO_CXM else "Fp, PS, E and Tc"
        warnings.append(f"{model.value}: the frames are {interval:.3g} s apart, and the two-compartment models need "
                        f"frames <= ~{exchange.MAX_FRAME_INTERVAL_S:g} s to separate the plasma flow Fp from PS (the "
                        f"first pass spans a few frames): {dependent} are poorly determined on this series; extended "
                        "Tofts (the default) or Patlak suit it")


def _mark_undetermined_ve(model, fit, curves: np.ndarray, masks: dict, brain: np.ndarray, warnings: list[str]):
    """(report entry, the voxels whose ve the data determine, the fit's kep of the others or None): ve (kep, Te) is
    set to 0 in the fit (0 = not analysed: transparent in the panel) where the backflux of the extravascular space
    is below backflux.VE_MIN_BACKFLUX_SNR noise SDs or the fit sits at a bound (backflux.ve_determined), and a warning
    gives the share. Where Ktrans ~ 0 (intact BBB) ve is the size of a compartment nothing enters: the fit left it
    at its bound, 1, in 40-80 % of normal brain, which read as a measurement."""
    snr = model.ve_backflux_snr(curves, fit)
    if isinstance(fit, PKFit):
        known = backflux.ve_determined(snr, fit.ve, fit.kep)
    else:  # 2CXM: ve within its bounds, PS neither 0 (no exchange) nor at its bound
        known = (backflux.ve_determined(snr, fit.ve, ve_bounds=exchange.V_BOUNDS)
                 & (fit.ps > exchange.PS_BOUNDS[0]) & (fit.ps < exchange.PS_BOUNDS[1]))
    del snr
    hidden = ~known
    curve_kep = fit.kep[hidden].copy() if isinstance(fit, PKFit) else None  # for the model curves (MapFit)
    for name in VE_DEPENDENT_MAPS:
        values = getattr(fit, name, None)
        if values is not None:
            values[hidden] = 0
    n, n_hidden = known.size, int(hidden.sum())
    info = {"determined_voxels": n - n_hidden, "undetermined_voxels": n_hidden,
            "undetermined_share": n_hidden / max(n, 1),
            "criterion": f"backflux >= {backflux.VE_MIN_BACKFLUX_SNR:g} noise SDs of the fit residual and the fit "
                         f"inside its bounds ({'ve, kep' if isinstance(fit, PKFit) else 've, PS'})",
            "maps_set_to_0": [name for name in VE_DEPENDENT_MAPS if getattr(fit, name, None) is not None]}
    where = ""
    if "tumor-mask" in masks:
        inside = masks["tumor-mask"][brain]
        for region, rows in (("tumor", inside), ("non_tumor", ~inside)):
            info[f"{region}_undetermined_share"] = float(hidden[rows].mean()) if rows.any() else 0.0
        where = (f" ({100 * info['non_tumor_undetermined_share']:.0f} % of the non-tumor brain, "
                 f"{100 * info['tumor_undetermined_share']:.0f} % of the tumor)")
    if n_hidden:
        maps = " and ".join(info["maps_set_to_0"])
        warnings.append(f"ve was not determined by the data in {100 * info['undetermined_share']:.1f} % of the brain "
                        f"voxels{where}: there Ktrans is too small (intact BBB) or the backflux too slow or too fast "
                        f"for the curve to show the extravascular volume above its noise, or the fit sat at a bound. "
                        f"{maps} are 0 there (not analysed) and their summaries cover the other voxels")
    return info, known, curve_kep


def _report(series, input_shape, params, mode, flip, tr, n_base, times, aif_curve, aif_delay, arterial, brain, masks,
            summary, maps, rls_out, unit, timer, warnings) -> dict:
    report = {
        "pipeline": "dce",
        "input": {"shape": input_shape, "frames": int(input_shape[3]),
                  "frame_interval_s": float(np.median(np.diff(times))), "duration_s": float(times[-1] - times[0]),
                  "flip_angle_deg": flip, "tr_s": tr},
        "parameters": params.to_json(),
        "versions": versions(),
        "threads": block_workers(),  # this library's pools (row blocks of the conversion and the fits)
        "conversion": {"mode": mode, "semi_quantitative": mode == "relative", "baseline_frames": int(n_base)},
        "units": {"concentration": "mM" if mode != "relative" else "relative_enhancement",
                  "curves": unit, **{name: MAP_INFO[name][0] for name in maps}},
        "aif": {"source": (("region" if params.aif_region else "mask") if "aif-mask" in masks else
                           "auto" if arterial is not None else params.population_aif),
                "n_voxels": int(arterial.sum()) if arterial is not None else 0,
                "peak": float(aif_curve.max()), "peak_time_s": float(times[int(np.argmax(aif_curve))]),
                **({"population_delay_s": aif_delay} if aif_delay is not None else {})},
        "brain_voxels": int(brain.sum()),
        "maps": {name: {"unit": MAP_INFO[name][0], "description": MAP_INFO[name][1]} for name in maps},
        "summary": summary,
        "timings_s": timer.seconds,
        "warnings": warnings,
    }
    if rls_out is not None:
        report["rls"] = rls_out.info
    return report
