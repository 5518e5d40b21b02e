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
