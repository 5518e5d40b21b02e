"""Whether a dynamic series is the kind a pipeline assumes: one contrast bolus that lowers the signal (DSC) or raises
it (DCE), read from the brain-mean curve the bolus arrival is detected on, and from what the file says.

Why: a series of another kind used to give a map without a word, or a refusal that sent the user to the wrong option
(session 23, docs/reliability.md, series built from the reference objects): a label/control ASL series and a BOLD
series run as DSC with an arterial mask gave brain CBV 7.2 and -74 ml/100 g with exit 0 (or the mask was blamed); a DSC
series and a diffusion series run as DCE gave Ktrans maps of fit R² -0.08 and -9.9 with exit 0; a DCE or diffusion
series run as DSC was refused for "too few pre-bolus frames, lower --skip-frames". Each is now one line naming what the
series looks like and what to run instead.

The rules (written before they were measured, amended where the first measurement showed a gap: see the notes of
session 23): the curve's early level b is the median of the frames the baseline detector reads as early (ended before
the bolus where they hold it); its drop b - m(t) and rise m(t) - b; σ its noise, from differences two frames apart (a
label/control alternation is not noise). A change *stands out*
above :data:`STANDS_OUT` σ. An *episode* is a stretch where the excursion exceeds half its maximum, ending only below a
quarter (hysteresis: noise at the half level does not split one bolus; a bolus's recirculation stays below half its
first pass). Used by :mod:`..dsc.pipeline` (DSC) and :mod:`..dce.conversion` (DCE): shared perfusion physics, so it
lives in neither pipeline's package.

Session 24: ΔR2* input and dual-echo ratios (ΔR2*-like: a bolus rises) are read by the same rules
(:func:`check_dsc_concentration_curve`), and a DCE series whose own metadata give a T2*-weighted EPI's echo and
repetition times is refused (:func:`check_series_metadata`): a DSC series cut mid-bolus reads by shape as an
enhancement. A DSC series after a preload (phantoms/dsc_preload.py) fires none of the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError

#: A change stands out of the brain-mean curve's noise above this many of its SDs.
STANDS_OUT = 10.0
#: One direction dominates the other by this factor (a DCE series' rise over its noise dips; a DSC bolus's drop over
#: the T1 rise of its leaky voxels in the brain mean).
DOMINATES = 2.0
#: Separate episodes that make a series periodic rather than one bolus (ASL pairs, BOLD blocks).
EPISODES = 3
#: A drop still this fraction of its largest over the last quarter of the frames has not come back (DSC).
STAYS_DOWN = 0.6
#: A frame-by-frame alternation of at least this fraction of the level (and standing out) is a label/control series.
ALTERNATES = 0.0005
#: A DSC curve whose largest drop is under this many noise SDs has no bolus that can be located (the drop of a
#: noise-only curve of 100-300 frames reaches 3-3.5 SDs; the reference objects' drops were 15 SDs and more, SNR 5).
DSC_NO_BOLUS = 5.0
#: A DCE curve whose largest rise is under this many noise SDs has no enhancement (the reference objects': 110+).
DCE_NO_ENHANCEMENT = 10.0
#: ... and only while that largest excursion is also under this fraction of the early level: on very coarse frames
#: (31.5 s, 9 frames) the two-frame differences the noise is read from hold the enhancement itself, and a 38 % rise
#: read as 6.3 "noise SDs" (the RLS domain test); a series without contrast, or BOLD (1-2 %), stays far below it.
NO_CONTRAST_LEVEL = 0.05
#: On a ΔR2*-like curve (ΔR2* input, a dual-echo ratio), whose level is 0, a frame-by-frame alternation counts (ASL)
#: above this share of the curve's largest excursion instead of a share of the level (a bolus's: under 1e-3).
ALTERNATES_EXCURSION = 0.25
#: A series whose own metadata give an echo time above this [s] AND a repetition time of at least
#: :data:`EPI_MIN_TR` is a T2*-weighted EPI (DSC) series, not a T1-weighted spoiled gradient echo DCE series (TE 1-5
#: ms, TR 3-10 ms; dce/aif_t2star.TE_RANGE_S already calls a TE above 20 ms "not an SPGR DCE echo time").
T2STAR_MIN_TE = 0.02
EPI_MIN_TR = 0.3
#: The largest b-value (s/mm²) that makes a series with several b-values a diffusion series.
DIFFUSION_B = 50.0


@dataclass
class CurveShape:
    """The brain-mean curve's excursions from its early level (see the module docstring)."""

    level: float
    drop: np.ndarray  # b - m(t), frames from the start on
    rise: np.ndarray
    sigma: float

    def stands_out(self, excursion: np.ndarray) -> bool:
        return float(excursion.max()) > STANDS_OUT * self.sigma

    def percent(self, value: float) -> str:
        """``value`` as a percentage of the early level, for a message ("130", "1.8", "0.021")."""
        share = 100.0 * max(value, 0.0) / abs(self.level) if self.level else float("inf")
        return f"{share:.0f}" if share >= 10 else f"{share:.2g}"


def curve_shape(curve: np.ndarray, start: int, early_stop: int, bolus: str | None = None) -> CurveShape:
    """The shape of ``curve`` from frame ``start`` on, its early level the median of [start, early_stop).

    ``bolus`` ("drop" or "rise"): the early frames end before that excursion's arrival where they hold it (its
    frames walking back from its largest value to under a tenth of it, at least 2 frames kept), as
    :func:`..dce.conversion.detect_baseline_frames` does: with an early bolus in a long series (DSC object, bolus at
    4-6 s, 120-180 s of 1-2 s frames) the detector's early frames held the first pass, the level fell with it, and the
    recovered signal read as a rise 1.2-1.5 times the drop with 2 episodes. None: the frames as given."""
    m = np.asarray(curve, dtype=np.float64)[start:]
    window = max(early_stop - start, 1)
    level = float(np.median(m[:window]))
    while bolus is not None and window > 2:
        excursion = (level - m) if bolus == "drop" else (m - level)
        peak = int(np.argmax(excursion))
        if excursion[peak] <= 0:
            break
        arrival = int(np.flatnonzero(excursion[:peak + 1] >= 0.1 * excursion[peak])[0])
        if arrival >= window:
            break
        window = max(2, arrival)
        level = float(np.median(m[:window]))
    # every other frame: a label/control alternation is not noise (differences of neighbours would read it as such)
    steps = m[2:] - m[:-2]
    sigma = 1.4826 * float(np.median(np.abs(steps - np.median(steps)))) / np.sqrt(2.0) if steps.size > 1 else 0.0
    return CurveShape(level, level - m, m - level, sigma)


def alternation(curve: np.ndarray, start: int) -> tuple[float, float]:
    """(A, z): the frame-by-frame alternating part of ``curve`` from ``start`` on, as a fraction of its median level,
    and how many of its own standard errors it stands out. A is the median of (-1)^t (m(t) - (m(t-1) + m(t+1))/2):
    the control-label difference of a label/control series; a smooth curve's (a bolus, a drift) is 0 but for a few
    frames at the bolus, which the median passes over, and noise has no sign."""
    m = np.asarray(curve, dtype=np.float64)[start:]
    a, z = alternating_part(m)
    level = abs(float(np.median(m))) if m.size >= 8 else 0.0
    return (abs(a) / level if level else 0.0), z


def alternating_part(m: np.ndarray) -> tuple[float, float]:
    """(a, z) of :func:`alternation` with ``a`` in the curve's own units (signed), for curves whose level means
    nothing (ΔR2*, whose baseline is 0)."""
    if m.size < 8:
        return 0.0, 0.0
    second = m[1:-1] - 0.5 * (m[:-2] + m[2:])
    signed = second * np.where(np.arange(1, m.size - 1) % 2 == 0, 1.0, -1.0)
    a = float(np.median(signed))
    spread = 1.4826 * float(np.median(np.abs(signed - a))) / np.sqrt(signed.size)
    return a, (abs(a) / spread if spread > 0 else (np.inf if a else 0.0))


def episodes(excursion: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) stretches where ``excursion`` exceeds half its maximum, each ending below a quarter of it."""
    peak = float(excursion.max())
    if peak <= 0:
        return []
    found, start = [], None
    for t, value in enumerate(excursion):
        if start is None and value > 0.5 * peak:
            start = t
        elif start is not None and value < 0.25 * peak:
            found.append((start, t))
            start = None
    if start is not None:
        found.append((start, excursion.size))
    return found


ASL = ("arterial spin labelling (ASL) series do; ASL perfusion needs its own processing (e.g. BASIL, ExploreASL)")


def _periodic(curve: np.ndarray, start: int, shape: CurveShape, what: str, run_instead: str) -> None:
    """Refuse a curve that alternates frame by frame (label/control pairs) or whose standing-out drop or rise comes in
    :data:`EPISODES` or more separate episodes (BOLD blocks)."""
    fraction, z = alternation(curve, start)
    if z > STANDS_OUT and fraction > ALTERNATES:
        raise InputError(f"{what} has no contrast bolus: the brain's mean signal alternates frame by frame by "
                         f"{100 * fraction:.2g} % ({z:.0f} times its noise), as the label and control images of an "
                         f"{ASL}; {run_instead}")
    for excursion, way in ((shape.drop, "drops"), (shape.rise, "rises")):
        if not shape.stands_out(excursion):
            continue
        found = episodes(excursion)
        if len(found) < EPISODES:
            continue
        raise InputError(f"{what} has no single contrast bolus: the brain's mean signal {way} {len(found)} separate "
                         f"times (by up to {shape.percent(float(excursion.max()))} %), as a BOLD fMRI series "
                         f"switches with its task blocks, where a bolus passes once; {run_instead}")


def check_dsc_curve(curve: np.ndarray, skip: int, baseline_frames: tuple[int, int] | None = None,
                    moved: bool = False, kind: str = "signal", dual_echo: bool = False) -> None:
    """Refuse a single-echo DSC signal series whose brain-mean ``curve`` (frames from ``skip`` on) is not one bolus
    that lowers the signal: alternating (ASL), periodic (BOLD), rising (DCE, BOLD), falling and staying down
    (diffusion, or a series that ends inside the bolus), or with no drop out of its noise at all.
    ``baseline_frames``: the user's [first, stop), read as the early level instead of the detector's early frames.
    ``moved``: head motion was found and left uncorrected (perfusion/motion.py; its warning says so). A head that
    moved shifts the brain's mean level for the rest of the series (a 2 mm step: 3 % on the motion test's object),
    which reads as a rise, or as a drop that stays: those two refusals are not made then.
    ``kind`` "concentration": ``curve`` is ΔR2*-like (ΔR2* input, or a dual-echo ratio with ``dual_echo``), where the
    bolus rises: :func:`check_dsc_concentration_curve`."""
    if kind != "signal":
        return check_dsc_concentration_curve(curve, skip, baseline_frames, moved, dual_echo)
    n = np.asarray(curve).size
    if np.median(curve) < 0:  # negative magnitudes: the signal checks name that (conversion.check_baseline_signal)
        return
    first, early_stop = baseline_frames if baseline_frames is not None else (skip, skip + max(3, n // 10))
    start = min(skip, first)
    shape = curve_shape(curve, start, early_stop,  # the early frames of conversion.detect_baseline, before the bolus
                        None if baseline_frames is not None else "drop")
    what = "the DSC series"
    _periodic(curve, start, shape, what, "give the dynamic susceptibility contrast (T2*-weighted) series")
    # the rise is read after the early frames: a first frame or two still above the T1 steady state (kept where
    # --baseline-frames is given) is brighter than the baseline, not a rise with the contrast
    early = max(early_stop - start, 3)
    later = shape.rise[early:] if shape.rise.size > early else shape.rise
    drop, rise = float(shape.drop.max()), float(later.max())
    if not moved and shape.stands_out(later) and rise > DOMINATES * max(drop, 0.0):
        at = int(np.argmax(later)) + start + (shape.rise.size - later.size)
        raise InputError(f"{what}' signal rises instead of dropping: the brain's mean signal is "
                         f"{shape.percent(rise)} % above its first frames at frame {at} and never "
                         f"{shape.percent(drop)} % below them; a T1-weighted DCE series (run `bbbanomaly "
                         "dce`), a BOLD series, or a DSC series that starts after its bolus arrived (its signal only "
                         "recovers), not a whole T2*-weighted bolus (whose signal drops as it passes and comes back)")
    if drop < DSC_NO_BOLUS * shape.sigma and drop < NO_CONTRAST_LEVEL * abs(shape.level):
        raise InputError(f"no contrast bolus found in {what}: the brain's mean signal never drops by more than "
                         f"{drop / shape.sigma if shape.sigma else 0:.1f} times its frame-to-frame noise "
                         f"({shape.percent(drop)} %), so no bolus arrival can be located; is this the "
                         "DSC series (a BOLD or other series without contrast has no bolus)?")
    if not moved and shape.stands_out(shape.drop):
        tail = float(np.median(shape.drop[-max(1, shape.drop.size // 4):]))
        if tail >= STAYS_DOWN * drop:
            given = (" (or --baseline-frames covers frames brighter than the rest, before the steady state)"
                     if baseline_frames is not None else "")
            raise InputError(f"{what}' signal falls and does not come back: the brain's mean signal is still "
                             f"{shape.percent(tail)} % below its first frames over the last quarter of the series "
                             f"(its largest drop {shape.percent(drop)} %), where a bolus passes and the signal "
                             "recovers; a diffusion series (b-values; run `bbbanomaly dmri`), a T1-weighted DCE series that starts "
                             "after its injection (its signal washes out; run `bbbanomaly dce` on a whole DCE series), "
                             "or a series that ends "
                             f"inside the bolus (acquire or give the whole first pass){given}")


def check_dsc_concentration_curve(curve: np.ndarray, skip: int, baseline_frames: tuple[int, int] | None = None,
                                  moved: bool = False, dual_echo: bool = False) -> None:
    """:func:`check_dsc_curve`'s rules for a ΔR2*-like brain-mean ``curve`` (ΔR2* input; a dual-echo series'
    ln(S̄1/S̄2)/(TE2 - TE1)), where a bolus rises and comes back; sizes in noise SDs and in the curve's largest
    excursion, as its level (0 for ΔR2*, an offset for the ratio) means nothing.

    Why (session 24): these inputs were not checked by shape at all (session 23 left them): a T1-weighted DCE
    concentration series given as ΔR2* (it rises and stays), a DSC signal series given with --input-kind
    concentration (it dips), or a flat one ran to maps."""
    m = np.asarray(curve, dtype=np.float64)
    if not np.isfinite(m).all():  # the finiteness checks name that
        return
    n = m.size
    first, early_stop = baseline_frames if baseline_frames is not None else (skip, skip + max(3, n // 10))
    start = min(skip, first)
    shape = curve_shape(m, start, early_stop, None if baseline_frames is not None else "rise")
    what = "the dual-echo DSC series" if dual_echo else "the ΔR2* series (--input-kind concentration)"
    run_instead = ("give both echoes of the dynamic susceptibility contrast series" if dual_echo else
                   "give the DSC series' ΔR2* (or its signal, without --input-kind concentration)")
    a, z = alternating_part(m[start:])
    largest = max(float(shape.rise.max()), float(shape.drop.max()), 0.0)
    if z > STANDS_OUT and abs(a) > ALTERNATES_EXCURSION * largest:
        raise InputError(f"{what} has no contrast bolus: the brain's mean ΔR2* alternates frame by frame ({z:.0f} "
                         f"times its noise, {abs(a) / largest if largest else 1:.0%} of its largest change), as the "
                         f"label and control images of an {ASL}; {run_instead}")
    for excursion, way in ((shape.rise, "rises"), (shape.drop, "falls")):
        found = episodes(excursion) if shape.stands_out(excursion) else []
        if len(found) >= EPISODES:
            raise InputError(f"{what} has no single contrast bolus: the brain's mean ΔR2* {way} {len(found)} separate "
                             "times, as a BOLD fMRI series switches with its task blocks, where a bolus passes once; "
                             f"{run_instead}")
    early = max(early_stop - start, 3)
    later = shape.drop[early:] if shape.drop.size > early else shape.drop
    rise, dip = float(shape.rise.max()), float(later.max())
    if not moved and shape.stands_out(later) and dip > DOMINATES * max(rise, 0.0):
        cause = ("the echoes swapped (the first series must be the shorter echo, --second-echo the longer)"
                 if dual_echo else "a signal series given as ΔR2* (leave out --input-kind concentration), or ΔR2* "
                 "with its sign reversed (ΔR2* = -ln(S/S0)/TE rises with the contrast)")
        cause += ", or a series that starts after its bolus arrived (its ΔR2* only falls back; give the whole bolus)"
        raise InputError(f"{what} falls instead of rising: the brain's mean ΔR2* dips {dip / shape.sigma if shape.sigma else 0:.0f} "
                         f"noise SDs below its first frames and never rises more than {rise / dip:.0%} of that; "
                         f"{cause}")
    # not for a dual-echo ratio: two noisy echoes (SNR 5, arterial peak 30 1/s) left a real bolus 5.4 noise SDs high,
    # inside the pre-set margin (1.5 x the rule); the AIF checks still refuse a ratio without a bolus (session 24)
    if not dual_echo and rise < DSC_NO_BOLUS * shape.sigma:
        raise InputError(f"no contrast bolus found in {what}: the brain's mean ΔR2* never rises by more than "
                         f"{rise / shape.sigma if shape.sigma else 0:.1f} times its frame-to-frame noise, so no "
                         "bolus arrival can be located; is this the DSC series (a BOLD or other series without "
                         "contrast has no bolus)?")
    if not moved and shape.stands_out(shape.rise):
        tail = float(np.median(shape.rise[-max(1, shape.rise.size // 4):]))
        if tail >= STAYS_DOWN * rise:
            raise InputError(f"{what} rises and does not come back: the brain's mean ΔR2* is still {tail / rise:.0%} "
                             "of its largest rise over the last quarter of the series, where a bolus passes and "
                             "recovers; a T1-weighted DCE concentration series (run `bbbanomaly dce --input-kind "
                             "concentration`), a diffusion series (run `bbbanomaly dmri`), or a series that ends "
                             "inside the bolus (acquire or give the whole first pass)")


def check_dce_curve(curve: np.ndarray, baseline_frames: int | None = None, moved: bool = False) -> None:
    """Refuse a DCE series whose brain-mean ``curve`` is not a rise: alternating (ASL), periodic (BOLD), dropping (a
    DSC bolus, a diffusion series, a series that starts after the injection) or with no rise out of its noise.
    ``baseline_frames``: the user's pre-contrast frame count, read as the early level. ``moved``: head motion found
    and left uncorrected: its level shift can read as a drop, which is then not refused (as in :func:`check_dsc_curve`)."""
    n = np.asarray(curve).size
    if np.median(curve) < 0:  # negative magnitudes: the signal checks name that (conversion.enhancement_ratio)
        return
    shape = curve_shape(curve, 0, baseline_frames or max(2, n // 20),  # conversion.detect_baseline_frames' early
                        None if baseline_frames else "rise")
    what = "the DCE series"
    _periodic(curve, 0, shape, what, "give the T1-weighted dynamic contrast-enhanced series")
    drop, rise = float(shape.drop.max()), float(shape.rise.max())
    if not moved and shape.stands_out(shape.drop) and drop > DOMINATES * max(rise, 0.0):
        tail = float(np.median(shape.drop[-max(1, shape.drop.size // 4):]))
        if tail < 0.5 * drop:
            at = int(np.argmax(shape.drop))
            raise InputError(f"{what}' signal drops and comes back instead of rising: the brain's mean signal dips "
                             f"{shape.percent(drop)} % below its first frames at frame {at} and never rises "
                             f"{shape.percent(rise)} % above them; a T2*-weighted DSC bolus (run "
                             "`bbbanomaly dsc`), not a T1-weighted DCE series (whose signal rises with the contrast)")
        raise InputError(f"{what}' signal falls and stays down instead of rising: the brain's mean signal is "
                         f"{shape.percent(tail)} % below its first frames over the last quarter and never "
                         f"{shape.percent(rise)} % above them; a diffusion series (b-values; run "
                         "`bbbanomaly dmri`), or a series that starts after the injection (a DCE series needs "
                         "pre-contrast frames)")
    if rise < DCE_NO_ENHANCEMENT * shape.sigma and rise < NO_CONTRAST_LEVEL * abs(shape.level):
        raise InputError(f"no contrast enhancement found in {what}: the brain's mean signal never rises by more than "
                         f"{rise / shape.sigma if shape.sigma else 0:.1f} times its frame-to-frame noise "
                         f"({shape.percent(rise)} %); is this the T1-weighted series acquired during and "
                         "after the injection (a BOLD or other series without contrast has none)?")


def check_series_metadata(acquisition, what: str) -> None:
    """Refuse a series whose metadata say it is not a contrast-bolus series: several b-values (diffusion), or a BIDS
    sidecar's ArterialSpinLabelingType (ASL). ``acquisition``: the series' :class:`..core.volume.Acquisition`."""
    if acquisition is None:
        return
    bvals = getattr(acquisition, "bvals", None)
    if bvals is not None:
        b = np.asarray(bvals, dtype=np.float64)
        b = b[np.isfinite(b)]
        if b.size and np.unique(np.round(b)).size >= 2 and b.max() >= DIFFUSION_B:
            raise InputError(f"{what} carries b-values ({b.min():g}-{b.max():g} s/mm² over {b.size} volumes): it is a "
                             "diffusion series, not a contrast bolus; run `bbbanomaly dmri` on it, or give the "
                             "dynamic series (a stale .bval beside it? remove it)")
    if "DCE" in what:  # the DCE pipeline's call (dce/pipeline.py): a T2*-weighted EPI series named by its TE and TR
        _check_t1_weighted(acquisition, what)
    sequence = (getattr(acquisition, "extra", None) or {}).get("sequence") or {}
    asl = sequence.get("arterial_spin_labeling_type") if isinstance(sequence, dict) else None
    if asl:
        raise InputError(f"{what} is an arterial spin labelling series (ArterialSpinLabelingType {asl} in its "
                         "sidecar), which has no contrast bolus; ASL perfusion needs its own processing (e.g. BASIL, "
                         "ExploreASL); give the contrast-bolus series")


def _check_t1_weighted(acquisition, what: str) -> None:
    """Refuse a DCE series whose own metadata say T2*-weighted EPI: echo time > :data:`T2STAR_MIN_TE` and repetition
    time >= :data:`EPI_MIN_TR`. Why (session 24): a DSC series cut to start after its bolus arrived reads by shape
    as an enhancement (its signal only recovers) and ran to Ktrans maps of fit R² 0.1 with exit 0 (session 23); no
    shape rule separates it from DCE without refusing real ones, but its file says what it is."""
    te, tr = getattr(acquisition, "echo_time", None), getattr(acquisition, "repetition_time", None)
    try:
        te, tr = float(te), float(tr)
    except (TypeError, ValueError):
        return
    if te > T2STAR_MIN_TE and tr >= EPI_MIN_TR:
        raise InputError(f"{what}'s own metadata give an echo time of {1000 * te:.0f} ms and a repetition time of "
                         f"{tr:g} s: a T2*-weighted EPI series such as DSC (run `bbbanomaly dsc`; a DSC series cut "
                         "to start after its bolus only recovers and looks like an enhancement), not a T1-weighted DCE "
                         "series (spoiled gradient echo, TE 1-5 ms, TR 3-10 ms)")
