"""What a case looks like to PHAE, in the few numbers its training distribution is described by.

``case_statistics`` measures a case (frame interval, duration, AIF shape, a noise level of the tissue
curves); the model card of trained weights stores the range these took in training (``training_domain``),
and ``out_of_domain`` turns a case outside those ranges into report warnings. The same function runs
on the training cases and on the user's case, so the ranges compare like with like.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 2048  # curves per float64 block in case_statistics

#: statistics and how they are described in a warning
DESCRIPTIONS = {
    "frame_interval_s": ("frame interval", "s"),
    "duration_s": ("acquisition duration", "s"),
    "aif_rise_s": ("AIF rise time (10 % to peak)", "s"),
    "aif_fwhm_s": ("AIF first-pass width (FWHM)", "s"),
    "curve_cnr": ("tissue curve contrast-to-noise (median peak / noise)", ""),
}


def case_statistics(curves: np.ndarray, aif: np.ndarray, dt: float, max_curves: int = 20000, read_rows=None) -> dict:
    """Frame interval, duration, AIF rise time and FWHM [s] and the median tissue CNR of a case.

    read_rows: rows -> (len(rows), T) curves, to measure the curves the network reads when they are not the stored
    ones (guided pooling: ``lambda rows: pooling.pool(curves, rows)[0]``); default ``curves[rows]``."""
    aif = np.asarray(aif, float)
    n = aif.size
    peak_i = int(np.argmax(aif))
    peak = aif[peak_i]
    above = np.nonzero(aif[: peak_i + 1] < 0.1 * peak)[0]
    foot = (above[-1] + 1) if above.size else 0
    half = aif >= 0.5 * peak
    lo = peak_i
    while lo > 0 and half[lo - 1]:
        lo -= 1
    hi = peak_i
    while hi < n - 1 and half[hi + 1]:
        hi += 1
    curves = np.asarray(curves)
    rows = (np.linspace(0, curves.shape[0] - 1, max_curves).astype(int) if curves.shape[0] > max_curves
            else np.arange(curves.shape[0]))
    cnr = np.empty(rows.size)
    # in float64 blocks of rows (each row's numbers are its own): a float64 copy of all the curves would cost
    # up to 2x the series (memory goal of issue 17)
    for start in range(0, rows.size, _BLOCK):
        picked = rows[start:start + _BLOCK]
        block = np.asarray(curves[picked] if read_rows is None else read_rows(picked), float)
        # noise from first differences (robust: the median ignores the bolus's steep frames)
        noise = np.median(np.abs(np.diff(block, axis=1)), axis=1) / (0.6745 * np.sqrt(2.0))
        smooth = (block[:, :-2] + block[:, 1:-1] + block[:, 2:]) / 3.0 if n > 3 else block
        cnr[start:start + block.shape[0]] = np.abs(smooth).max(axis=1) / np.maximum(noise, 1e-12)
    return {"frame_interval_s": float(dt), "duration_s": float(dt * (n - 1)),
            "aif_rise_s": float(dt * (peak_i - foot)), "aif_fwhm_s": float(dt * (hi - lo + 1)),
            "curve_cnr": float(np.median(cnr))}


def training_domain(stats: list[dict], lo_pct: float = 1.0, hi_pct: float = 99.0) -> dict:
    """[low, high] per statistic over the training cases (percentiles, so one odd case does not widen it)."""
    return {k: [float(np.percentile([s[k] for s in stats], lo_pct)), float(np.percentile([s[k] for s in stats], hi_pct))]
            for k in DESCRIPTIONS}


def out_of_domain(stats: dict, domain: dict | None, what: str = "the PHAE weights") -> list[str]:
    """One warning per statistic outside the card's training range (nothing when the card has no domain)."""
    warnings = []
    for key, (lo, hi) in (domain or {}).items():
        value = stats.get(key)
        if value is None or lo <= value <= hi:
            continue
        label, unit = DESCRIPTIONS.get(key, (key, ""))
        # below the trained noise range the error has a known direction (issue 14, round 6): say it
        direction = (" (at such contrast-to-noise of the curves the network reads, learned CBF is biased low: the "
                     "default weights per voxel -16 to -46 % in grey matter on the project's reference phantom at SNR "
                     "35-20, docs/validation.md)"
                     if key == "curve_cnr" and value < lo else "")
        warnings.append(f"{label} {value:.3g}{(' ' + unit) if unit else ''} is outside the range {what} were "
                        f"trained on ({lo:.3g}-{hi:.3g}{(' ' + unit) if unit else ''}){direction}: treat the learned "
                        "maps with caution and compare with oSVD (where the run's contrast-to-noise is 1 or more: below it no "
                        "deconvolution's CBF is trustworthy, dsc/low_cnr.py)")
    return warnings


#: what PHAE's bundled weights were trained on, as input: every card's training cases are single-echo curves
#: (phae/simulate.py, training.py). Recorded in the report's phae entry; dual-echo input is outside it.
TRAINED_INPUT = "single-echo ΔR2* = -ln(S/S0)/TE, noise added to the one echo's signal before conversion"

#: the warning on a dual-echo PHAE run, with the sizes measured by scripts/validate_phae_dual_echo.py (session 23):
#: the reference object written as two echoes (TE 15/45 and 25/55 ms, SNR 20/50/100, with and without a T1 gain in
#: the tumour, two noise draws), against PHAE on echo 1 alone. The rule set before measuring (rim, GM and WM within
#: ±10 points of the single-echo run, 95 % coverage >= 90 %) failed at SNR 20 only, in the rim. Session 24 found the
#: cause (--aif-ablation, 8 draws at SNR 20): the AIF. At the bolus peak the artery's second echo sits at the
#: magnitude noise floor (0.9 noise SDs at TE 55 ms, 1.5 at 45 ms), where the log of a Rician magnitude reads the signal
#: too high: the dual-echo AIF's peak read 38-59 1/s (true 50; 39 expected at TE 25/55 over many voxels), and PHAE's
#: rim CBF followed it (r = -0.83, about -2 points per 1/s), as it follows a single-echo AIF cut at the floor
#: (dsc/aif_saturation.py); the guided pooling only made the rim's fast flow readable (pooled 1.6x or 2.5x harder, the
#: excess stayed). With that one echo of the artery noiseless the rim read -8…+9 % (echo 1 alone -8…+6 %); what is
#: left is dual-echo ΔR2*'s own noise (1.6x echo 1's at TE 25/55 ms: GM 4-11 points lower, as the noise-matched
#: single-echo control). The pipeline's AIF saturation check reads single-echo input only, so nothing else says so.
DUAL_ECHO_WARNING = (
    "PHAE's weights were trained on single-echo curves (ΔR2* = -ln(S/S0)/TE), not on dual-echo input (the log ratio "
    "of two echoes, with its own noise): on the project's reference object written as two echoes (TE 15/45 and "
    "25/55 ms) its GM, WM and tumour-rim CBF stayed within 7.4 points of PHAE on echo 1 alone at SNR 50-100, but at "
    "SNR 20 (the report's contrast-to-noise about 0.3; 0.8 at SNR 50) the rim read -14 to +36 % (echo 1 alone -8 to "
    "+6 %) and the CCC with the truth fell to 0.52-0.56 (echo 1 alone 0.55-0.71). The cause is the AIF: at the bolus "
    "peak a large artery's second echo sits at the magnitude noise floor, so the dual-echo AIF's peak reads noisy and "
    "mostly low (38-59 against a true 50 1/s), and PHAE, which reads the peak's shape, moved the tumour's CBF about "
    "2 points per 1/s of it (with that echo noiseless the rim read -8 to +9 %). The uncertainty map stayed calibrated "
    "(its 95 % interval held the truth in 98-100 % of informative voxels) and oSVD on the same dual-echo curves was "
    "further off (GM -31 to -40 % at SNR 50-100). On a noisy dual-echo run read a tumour's CBF as possibly up to a "
    "third high, and draw the AIF on a smaller artery or at an artery's edge, where the second echo stays above the "
    "noise floor (scripts/validate_phae_dual_echo.py)")


def trained_echo_times(card: dict | None) -> tuple[float, float] | None:
    """The TE range [s] a card says its training cases were written at (``training_distribution["te"]``), or None
    when it does not say (e.g. dsc-phae-sim, whose generator had no TE)."""
    te = ((card or {}).get("training_distribution") or {}).get("te")
    try:
        lo, hi = (float(v) for v in te)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if 0 < lo <= hi else None


def echo_time_warning(te: float, card: dict | None) -> str | None:
    """The report line for a single-echo run whose TE lies outside the card's trained TE range (None inside it, or
    where the card states none). TE is not one of ``training_domain``'s statistics: ΔR2* = -ln(S/S0)/TE does not
    depend on it, only its noise does (sigma/(S0·TE)), which ``curve_cnr`` and the run's contrast-to-noise already
    read. So the line says the run is outside what the weights saw and what was measured for it
    (scripts/validate_phae_te_domain.py, session 24): on the reference object, each run at TE 10, 15 or 60 ms against
    a run at TE 20-30 ms with the same SNR x TE (the same noise in ΔR2*; 8 pairs, SNR 10-200, two draws) read GM CBF
    within 2.8 points, WM and rim within 5.7 and CCC within 0.023; the larger differences only at SNR 10-20, where
    the magnitude floor (an artery near it at TE 60 ms) differs between the two."""
    trained = trained_echo_times(card)
    if trained is None or te is None or not np.isfinite(te) or trained[0] <= te <= trained[1]:
        return None
    lo, hi = trained
    short = te < lo
    return (f"the echo time {1000 * te:.3g} ms is outside the {1000 * lo:.3g}-{1000 * hi:.3g} ms the PHAE weights "
            f"{(card or {}).get('name', '')} were trained at. On the project's reference object TE itself did not move "
            "PHAE's maps much (TE 10-60 ms against runs at TE 20-30 ms of the same SNR x TE: GM CBF within 2.8 points, "
            "WM and tumour rim within 5.7, CCC within 0.023; scripts/validate_phae_te_domain.py); what it changes is "
            "the noise of ΔR2*, which grows as 1/TE"
            + (": at this short TE the curves' contrast-to-noise is lower, and the run's contrast-to-noise lines say "
               "what that costs" if short else
               ": a long TE lowers it, but brings a large artery's signal nearer the noise floor at the bolus peak "
               "(the AIF saturation check reads it)"))
