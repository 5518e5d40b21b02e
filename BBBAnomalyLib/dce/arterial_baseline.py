"""The DCE baseline ended before the arteries' own bolus (session 19's acquisition audit): the pipeline's
:func:`_arterial_baseline` and its helpers. Held apart from :mod:`.pipeline` because it is one step's concern.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from .conversion import ARRIVAL_FRACTION, concentration_from_ser, detect_baseline_frames
from .parameters import DCEParameters


#: The brain's largest boluses read by :func:`_arterial_baseline` for the automatic AIF: this share of the brain's
#: voxels (at least 5), as DSC's EARLY_ARTERY_SHARE (dsc/pipeline.py).
EARLY_BOLUS_SHARE = 0.001
#: ... of which the baseline of the earliest this fraction is taken (each voxel's own).
EARLY_BOLUS_QUANTILE = 0.1
#: The arteries' own baseline ends up to this many seconds before the brain average's with no delay between them:
#: the arterial signal's foot (SPGR: a little contrast raises it most) crosses 10 % of its rise a frame or two
#: earlier. Measured on the DCE reference object with no delay (frames 1-5 s, flip 10-25°, SNR 20-100; the mask and
#: the automatic AIF): at most 4 s (2 frames of 2 s at flip 10°), or one frame. A longer lead is said (the tissue
#: lags the artery); either way only the baseline changes.
ARTERIAL_FOOT_LEAD_S = 4.0


def _arterial_baseline(raw, n_base: int, in_brain, in_aif, t10, flip, tr, params: DCEParameters, mode: str, times,
                       warnings: list[str]) -> int:
    """The baseline (pre-contrast frames) ended before the bolus of the AIF's voxels as well as the brain average's.

    Why: the baseline is detected on the brain-mean curve, whose bolus is the tissue's; an artery sees it earlier,
    and in T1-weighted signal its foot is large (0.14 mM of plasma raised the object's arterial signal by 50 %).
    Averaged into an arterial S0 it reads the AIF low and Ktrans, vp high, without a word: on the DCE reference
    object the arterial mask's AIF peak read 21 % low at 1 s frames (14 % at 2 s: the brain average crosses 10 %
    of its rise a frame or two after the artery), 31-86 % low with the whole brain one or two 5 s frames behind the
    artery (Ktrans +12 % and +350 %; scripts/dce_unusual_acquisitions.py). The arteries' own arrival is read on the
    raw curves, before any conversion: the drawn AIF mask's mean curve, or the mean curve of the arterial voxels of
    an --aif-search region (by peak height, as :func:`aif_mod.aif_in_region` chooses them); for the automatic AIF,
    each of the brain's largest boluses in concentration (EARLY_BOLUS_SHARE of its voxels, at least 5: the arteries
    it chooses among; by relative enhancement CSF voxels holding a little blood ranked above the arteries, whose
    signal saturates), of which the earliest tenth's baseline is taken (the largest boluses hold veins too). A
    population AIF reads no voxel's S0: the brain's baseline stands. Each baseline is :func:`detect_baseline_frames`'
    (one frame of margin before the crossing), read only from a curve that stays enhanced after its arrival (a
    contrast bolus, not noise spikes), and taken where it is shorter than the brain average's.
    Returns the frames kept, with a warning where the arteries lead by more than one frame and ARTERIAL_FOOT_LEAD_S
    (at 1-2 s frames the arterial foot alone is a frame or two ahead)."""
    if in_aif is None and not (params.aif_auto and params.population_aif is None):
        return n_base
    n = raw.shape[0]
    if in_aif is not None and not params.aif_region:
        rows = np.flatnonzero(in_aif)
        source = "the AIF mask's voxels"
    else:
        # each voxel's peak rise above its brain-baseline mean: as concentration (the SER's peak converted with the
        # voxel's T10), or as given for concentration input and relative enhancement
        peak = np.empty(n, np.float64)
        for start in range(0, n, 8192):
            block = raw[start:start + 8192]
            # the lowest baseline frame: T1 contrast raises the signal, and an early artery's bolus can lie in the
            # brain's baseline, whose mean would then hide it
            level = block[:, :n_base].min(axis=1).astype(np.float64)
            top = block.max(axis=1).astype(np.float64)
            if mode == "concentration":
                peak[start:start + 8192] = top - level
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                ser = np.where(level > 0, top / level - 1.0, np.nan)
            if mode == "spgr":
                rows_t10 = t10[start:start + 8192] if np.ndim(t10) == 1 else t10
                ser = concentration_from_ser(ser[:, None], rows_t10, flip, tr, params.relaxivity)[0][:, 0]
            peak[start:start + 8192] = ser
        peak[~np.isfinite(peak)] = -np.inf
        if in_aif is not None:  # an --aif-search region: its arterial voxels by peak height
            from ..perfusion.arterial import arterial_in_region

            region = np.flatnonzero(in_aif & np.isfinite(peak))
            if region.size == 0:
                return n_base
            rows = region[arterial_in_region(peak[region])]
            source = "the --aif-search region's arteries"
        else:
            brain_rows = np.flatnonzero(in_brain & np.isfinite(peak))
            k = min(brain_rows.size, max(5, int(round(EARLY_BOLUS_SHARE * brain_rows.size))))
            if k < 5:
                return n_base
            rows = np.sort(brain_rows[np.argpartition(peak[brain_rows], brain_rows.size - k)[brain_rows.size - k:]])
            # each one's own baseline, and the earliest tenth of them: the largest boluses hold veins and sinuses
            # too (the object's vein ranked among its arteries), whose later bolus would lengthen a mean's baseline
            own = [_bolus_baseline(curve) for curve in raw[rows].astype(np.float64)]
            own = np.array([b for b in own if b is not None])
            if own.size == 0:
                return n_base
            early = int(np.quantile(own, EARLY_BOLUS_QUANTILE, method="lower"))
            return _shortened(n_base, early, "the brain's largest boluses (arteries)", times, warnings)
    early = _bolus_baseline(raw[rows].mean(axis=0, dtype=np.float64))
    if early is None:
        return n_base
    return _shortened(n_base, early, source, times, warnings)


def _bolus_baseline(curve: np.ndarray) -> int | None:
    """:func:`detect_baseline_frames` of one curve where it shows a sustained enhancement (the median of its frames
    after the baseline at least ARRIVAL_FRACTION of its peak rise: a contrast bolus, not noise spikes), else None."""
    try:
        early = detect_baseline_frames(curve)
    except InputError:  # no bolus, or none after a baseline
        return None
    rise = curve - np.median(curve[:early])
    if not np.median(rise[early + 1:]) >= ARRIVAL_FRACTION * rise.max():
        return None
    return early


def _shortened(n_base: int, early: int, source: str, times, warnings: list[str]) -> int:
    """The shorter of the two baselines, with a warning where the arteries lead by more than one frame and
    ARTERIAL_FOOT_LEAD_S."""
    if early >= n_base:
        return n_base
    lead = float(times[n_base] - times[early])
    if n_base - early > 1 and lead > ARTERIAL_FOOT_LEAD_S:
        warnings.append(f"{source} enhance about {lead:.0f} s before the brain average: the pre-contrast "
                        f"baseline was shortened from {n_base} to {early} frames (those before {times[early]:.1f} s), "
                        "so that it holds no arterial bolus")
    return early
