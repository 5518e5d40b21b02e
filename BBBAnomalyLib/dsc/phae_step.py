"""The PHAE deconvolution step of ``run_dsc``: the pipeline's side of the learned method.

Held apart from :mod:`.pipeline` because it is one method's concern, not the pipeline's order of steps:
the checks made before any work (:func:`_check_phae_input`: the --adapt refusal, the dual-echo and the echo-time
warnings), the step itself (:func:`_deconvolve_phae`: weights, domain checks and the transit gate, pooled delay,
inference, systematic bias),
the report's account of the CBF uncertainty map (:func:`_uncertainty_summary`) and the guided pooling's inputs
(:func:`_pooling_guide`, :func:`_guided_pooling`). torch and the PHAE package are imported only inside
the functions: importing this module stays cheap.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..core.report import summarise
from .parameters import DeconvolutionMethod, DSCParameters, InputKind


def _check_phae_adapt(params) -> None:
    """--adapt only for self-supervised weights, refused before any work (issue 14, round 6).

    Adaptation optimises the reconstruction alone. Weights trained with a supervised CBF term are moved
    off that calibration: with the default dsc-phae-wide, GM CBF +70 / +79 / +111 % at SNR 50 / 20 / 10 on
    the reference phantom. A map that wrong is worse than none, so such a run is refused."""
    if params.method is not DeconvolutionMethod.PHAE or not params.phae_adapt:
        return
    try:
        from .phae.inference import DEFAULT_WEIGHTS
    except ImportError:  # no torch: the PHAE step says so, with what to do
        return
    from .. import weights as registry

    name = params.phae_weights or DEFAULT_WEIGHTS
    card, _ = registry.read_card(name)
    if "SUPERVISED" in str(card.get("loss", "")):
        raise InputError(f"--adapt fine-tunes PHAE on its reconstruction alone, which moves the weights "
                         f"{card.get('name', name)} (trained with a supervised CBF term) off their calibration "
                         "(+70 % CBF and more on the reference phantom): run without --adapt, or adapt "
                         "self-supervised weights (--weights dsc-phae-sim)")


def _check_phae_input(params, warnings: list, dual_echo: bool, te: float | None = None) -> None:
    """Before any work: the --adapt refusal (:func:`_check_phae_adapt`); for a dual-echo run, the warning that
    PHAE's weights never saw dual-echo input, with the sizes measured on the reference object (phae/domain.py,
    scripts/validate_phae_dual_echo.py; a warning, not a refusal: at SNR 50-100 the maps held up, and at SNR 20 the
    classic methods on the same curves were further off); for a single-echo signal run at an echo time ``te`` [s]
    outside the TE range the weights' card says they were trained at, a line saying so with what that was measured
    to cost (phae/domain.py: echo_time_warning; scripts/validate_phae_te_domain.py)."""
    _check_phae_adapt(params)
    if params.method is not DeconvolutionMethod.PHAE:
        return
    if dual_echo:
        from .phae.domain import DUAL_ECHO_WARNING

        warnings.append(DUAL_ECHO_WARNING)
    elif te is not None and params.input_kind is InputKind.SIGNAL:
        card = _phae_card(params)
        if card is not None:
            from .phae.domain import echo_time_warning

            line = echo_time_warning(te, card)
            if line is not None:
                warnings.append(line)


def _phae_card(params) -> dict | None:
    """The model card of the weights this PHAE run will load (None without torch: the PHAE step then says so)."""
    try:
        from .phae.inference import DEFAULT_WEIGHTS
    except ImportError:
        return None
    from .. import weights as registry

    return registry.read_card(params.phae_weights or DEFAULT_WEIGHTS)[0]


#: the PHAE-only parameters and the options that set them (the report names the options a user typed). Not the
#: device: a machine preference the panel passes with every run of a pipeline that can use torch
PHAE_ONLY_OPTIONS = {"phae_weights": "--weights", "phae_adapt": "--adapt", "phae_adapt_steps": "--adapt-steps",
                     "phae_pooled_delay": "--no-pooled-delay", "phae_guided_pooling": "--guided-pooling"}


def _phae_options_unused(params, warnings: list) -> None:
    """A warning naming PHAE's options given with another --method: they were silently ignored (round 18's CLI
    audit), and a user who typed --weights or --adapt believed PHAE ran."""
    if params.method is DeconvolutionMethod.PHAE:
        return
    defaults = DSCParameters()
    given = [option for field, option in PHAE_ONLY_OPTIONS.items()
             if str(getattr(params, field)) != str(getattr(defaults, field))]
    if given:
        warnings.append(f"{', '.join(given)} apply to --method phae only and were ignored (this run used "
                        f"{params.method.value})")


def _deconvolve_phae(aif_curve, times, brain_curves, params, warnings, report_progress, keep_fitted=False,
                     brain=None, voxel_sizes=None, guide=None, contrast=None, offsets=None):
    """PHAE on the (leakage-corrected) brain curves; optional per-case adaptation first; with
    params.phae_pooled_delay, each voxel's curve is moved earlier by its neighbourhood's bolus delay first.
    ``offsets`` (a 2D multi-slice series' slice times relative to the AIF's, perfusion/slice_timing.py): the curves
    of each offset read with the AIF moved to that time (:func:`_fit_by_offset`); None: one AIF for every voxel."""
    try:
        from .phae import PHAEModel
    except ImportError as exc:  # torch missing: the classic methods still work
        raise InputError(f"--method phae needs PyTorch ({exc}); use osvd or tikhonov, or install torch") from None
    model = PHAEModel(aif_curve, float(times[1] - times[0]), weights=params.phae_weights, device=params.device,
                      chunk_voxels=min(params.chunk_voxels, 8192))
    from .phae.domain import TRAINED_INPUT

    phae_report = {"weights": model.card.get("name"), "weights_sha256": model.card.get("sha256"),
                   "device": str(model.device), "trained_input": TRAINED_INPUT}
    if params.phae_adapt:
        report_progress(0.35, "adapting PHAE to this case")
        phae_report["adaptation"] = model.adapt(brain_curves, steps=params.phae_adapt_steps)
    from .phae.domain import case_statistics, out_of_domain

    pooling = None
    if params.phae_guided_pooling != "off" and brain is not None:
        pooling, phae_report["guided_pooling"] = _guided_pooling(brain, guide, voxel_sizes, params, contrast)
    # the training ranges describe the curves the network reads: with guided pooling, the pooled ones
    stats = case_statistics(brain_curves, aif_curve, float(times[1] - times[0]),
                            read_rows=None if pooling is None else (lambda rows: pooling.pool(brain_curves, rows)[0]))
    phae_report["case_statistics"] = stats
    warnings.extend(out_of_domain(stats, model.card.get("training_domain"),
                                  f"the PHAE weights {model.card.get('name')}"))
    _transit_gate(aif_curve, times, brain_curves, model.card.get("name"), phae_report, warnings)
    delays = None
    if params.phae_pooled_delay and brain is not None:
        report_progress(0.42, "PHAE: bolus delay of each neighbourhood")
        delays, phae_report["pooled_delay"] = model.pooled_delays(
            brain_curves, brain, voxel_sizes, **({} if offsets is None else {"offsets": offsets}))
    progress = lambda f: report_progress(0.45 + 0.45 * f, "PHAE inference")  # noqa: E731
    if offsets is None:
        # the decoder's model curves are one more (n, T) array: only when the caller keeps curves (the panel's plots)
        # domain_check=False: the lines are in the report's warnings above (fit's would be UserWarnings besides them)
        fit = model.fit(brain_curves, keep_curves=keep_fitted, delay_shift=delays, pooling=pooling,
                        progress=progress, domain_check=False)
    else:
        fit, phae_report["slice_timing"] = _fit_by_offset(model, aif_curve, times, brain_curves, offsets, delays,
                                                          pooling, brain, guide, voxel_sizes, keep_fitted, progress)
    if fit.pooled_curves is not None:
        phae_report["guided_pooling"]["effective_curves"] = summarise(fit.pooled_curves)
    phae_report["fit_loss"] = summarise(fit.loss)
    if fit.cbf_uncertainty is not None:
        phae_report["cbf_uncertainty"] = _uncertainty_summary(fit.cbf, fit.cbf_uncertainty, warnings)
    from .phae.systematic import roi_systematic_bias

    systematic = roi_systematic_bias(model.card)  # what an ROI mean keeps that the per-voxel map cannot show
    if systematic is not None:
        if params.phae_adapt:  # the card measured the weights as bundled, not as fine-tuned on this case
            for key in ("note", "ratio_note"):
                systematic[key] += ("; these are the bundled weights' numbers, and --adapt fine-tuned them on this "
                                    "case, so they may not hold")
        phae_report["roi_systematic_bias"] = systematic
    return fit, {"phae": phae_report}


def _fit_by_offset(model, aif_curve, times, brain_curves, offsets, delays, pooling, brain, guide, voxel_sizes,
                   keep_fitted, progress):
    """PHAE with each group of curves acquired at one offset read against the AIF moved to that time (the classic
    methods' correction, slice_timing.fit_by_acquisition_time): one model per offset sharing the network (the AIF
    is a per-case input of the network, broadcast to every curve). The pooled delays already hold each block's mean
    offset (PHAEModel.pooled_delays). Guided pooling stays within the group: a neighbour in an adjacent slice of
    another offset shows its bolus at another time on the frame grid, and averaging it in would blur the timing
    that the group's AIF is moved to (the pooling is in-plane anyway where slices are thicker than 3 mm, the
    usual 2D DSC)."""
    from ..perfusion.guided_pooling import GuidedPooling
    from ..perfusion.slice_timing import fit_by_acquisition_time

    brain_index = np.flatnonzero(brain) if pooling is not None else None

    def fit_group(aif, curves, group_progress, rows):
        group_pooling = None
        if pooling is not None:  # the same S0 guide and noise, over this group's voxels only
            within = np.zeros(brain.shape, bool)
            within.flat[brain_index[rows]] = True  # rows ascending: np.flatnonzero(within) order
            group_pooling = GuidedPooling(within, guide[0][rows], guide[1], voxel_sizes)
        return model.with_aif(aif).fit(curves, keep_curves=keep_fitted, progress=group_progress,
                                       delay_shift=None if delays is None else delays[rows],
                                       context_from=brain_curves, pooling=group_pooling, domain_check=False)

    fit = fit_by_acquisition_time(fit_group, aif_curve, times, brain_curves, offsets, progress, with_rows=True)
    entry = {"applied": True, "guided_pooling": "within each offset group" if pooling is not None else None,
             "pooled_delay": "block delays plus each block's mean offset" if delays is not None else None}
    return fit, entry


def _transit_gate(aif_curve, times, brain_curves, weights, phae_report, warnings) -> None:
    """Do the case's curves reject the exponential-leaning transit PHAE was trained for? The report's entry, and a
    warning naming oSVD where they do (dsc/phae/transit_gate.py; changes no map)."""
    from .phae.transit_gate import transit_gate

    gate = transit_gate(brain_curves, aif_curve, float(times[1] - times[0]))
    phae_report["transit_gate"] = gate.report()
    line = gate.warning(weights)
    if line is not None:
        warnings.append(line)


#: a voxel whose predicted SD of log CBF is this or more says "unknown" rather than a value (100 % relative SD)
UNINFORMATIVE_LOG_SD = 1.0
#: warn when at least this share of the brain is uninformative (issue 14, round 11: 0-32 % of the own phantom's
#: brain across its 35 settings; 20 % or more only at SNR 50, where the automatic pooling stays off)
UNINFORMATIVE_WARN_FRACTION = 0.2


def _uncertainty_summary(cbf: np.ndarray, log_sd: np.ndarray, warnings: list) -> dict:
    """The report's account of phae_cbf_uncertainty over the brain: its distribution (%), the share of voxels it
    marks uninformative (SD >= 100 %) and the share with CBF <= 0 (on held-apart and own phantoms every such voxel
    was marked uninformative; docs/validation.md, round 11); a warning when much of the brain is uninformative."""
    uninformative = log_sd >= UNINFORMATIVE_LOG_SD
    share = float(uninformative.mean()) if uninformative.size else 0.0
    out = {"percent": summarise(100.0 * log_sd), "uninformative_fraction": share,
           "uninformative_sd_percent": 100.0 * UNINFORMATIVE_LOG_SD,
           "nonpositive_cbf_fraction": float((cbf <= 0).mean()) if cbf.size else 0.0}
    if share >= UNINFORMATIVE_WARN_FRACTION:
        warnings.append(f"PHAE: in {100 * share:.0f} % of the brain the CBF's predicted SD is "
                        f"{100 * UNINFORMATIVE_LOG_SD:.0f} % or more (map phae_cbf_uncertainty): read those voxels' CBF "
                        "as unknown, not as low flow; ROI means and ratios to NAWM over many voxels are less affected, "
                        "except at a contrast-to-noise under 0.25, where PHAE's rCBF read 0.4-1.05x the true ratio on "
                        "the reference object (dsc/low_cnr.py)")
    return out


def _pooling_guide(brain_signal: np.ndarray, baseline, params: DSCParameters):
    """(S0 per brain voxel, its noise SD) for PHAE's guided pooling, or None where it does not apply."""
    if params.method is not DeconvolutionMethod.PHAE or params.phae_guided_pooling == "off":
        return None
    if params.input_kind is not InputKind.SIGNAL or baseline.stop - baseline.first < 2:
        return None
    from ..perfusion.guided_pooling import baseline_guide

    s0, sd = baseline_guide(brain_signal, slice(baseline.first, baseline.stop))
    # temporal SNR of the baseline: the median S0 over the noise of one frame (sd is that of the baseline's mean)
    tsnr = float(np.median(s0)) / (sd * np.sqrt(baseline.stop - baseline.first)) if sd > 0 else float("inf")
    return s0, sd, tsnr


def _guided_pooling(brain, guide, voxel_sizes, params, contrast=None):
    """The GuidedPooling of this case and its report entry (pooling None, with the reason, where it cannot run)."""
    from ..perfusion.guided_pooling import AUTO_MAX_CNR, RANGE_K, GuidedPooling

    if guide is None:
        why = ("concentration input has no pre-contrast signal to guide it"
               if params.input_kind is not InputKind.SIGNAL else "the baseline has fewer than 2 frames")
        return None, {"applied": False, "why": why}
    s0, sd, tsnr = guide
    if not sd > 0:
        return None, {"applied": False, "why": "the baseline has no noise: nothing to pool"}
    cnr = float("inf") if contrast is None else float(contrast)
    entry = {"mode": params.phae_guided_pooling, "contrast_to_noise": round(cnr, 3), "baseline_tsnr": round(tsnr, 1)}
    if params.phae_guided_pooling == "auto" and cnr >= AUTO_MAX_CNR:
        return None, {"applied": False, **entry,
                      "why": f"the case's contrast-to-noise ({cnr:.2f}) is at least {AUTO_MAX_CNR:g}: each voxel's own "
                             "curve is used (--guided-pooling on pools anyway)"}
    pooling = GuidedPooling(brain, s0, sd, voxel_sizes)
    return pooling, {"applied": True, **entry, "range_k": RANGE_K, "s0_noise_sd": sd, "reach_voxels": list(pooling.reach)}
