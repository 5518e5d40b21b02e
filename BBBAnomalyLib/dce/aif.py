"""Arterial input function for the DCE models: mean of an AIF mask (or of the arterial voxels of a
search region), automatic selection (:func:`auto_aif`), or a population AIF (Parker, Georgiou,
Fritz-Hansen, Weinmann, McGrath) shifted to the detected bolus arrival. All are returned as *plasma*
concentration Cp = Cb/(1 - Hct) (Weinmann and Fritz-Hansen are plasma curves already)."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from .conversion import concentration_from_ser, pooled_concentration

#: Automatic AIF: a voxel of the earliest cluster is arterial when its peak reaches this fraction of
#: the mean of the cluster's MIN_TOP_PEAKS highest peaks. Measured (the DCE reference object, 4 slices, SNR 40 and
#: 100, 1 and 5 s frames, 300 and 600 s; scripts/dce_unusual_acquisitions.py): the arteries' peaks 0.84-0.96 of
#: that mean, the small vessels' (5-50 % blood) at most 0.55, so 0.5 (the value before) let 1-12 of them into the AIF
#: once the clusters of the arterial timing were taken together (AIF peak -6 to -22 %, Ktrans +6 to +27 %); 0.7 lies
#: in the middle of the gap. A voxel half blood brings the AIF half its own shortfall.
TOP_PEAK_FRACTION = 0.7
MIN_TOP_PEAKS = 5
#: ... but in SPGR concentration the rule reads each voxel's level after the first pass (the mean of the frames
#: from the first pass's end; :func:`late_levels`), not its peak, where at least this many frames follow the first
#: pass. Why (session 20): each voxel's S0 is the mean of its baseline frames, and near the arterial signal's SPGR
#: maximum the inversion multiplies an S0 error several-fold, so the peak rule kept the arteries whose S0 read low.
#: On the DCE reference object (4 slices, an early bolus: 2 baseline frames, SNR 20, seed 4) the 16 arteries' peaks
#: spread over 0.42-1.40 of the top-5 mean (5 kept: AIF peak +71 %, Ktrans -18 %), their late levels over 0.73-1.09
#: (the small vessels' at most 0.55 in both): after the first pass the arterial signal is far from saturation and
#: the conversion nearly linear, and a partial volume of blood still scales the level by its fraction.
LATE_LEVEL_MIN_FRAMES = 3
#: Automatic AIF: the clusters whose first moment lies within this many frame intervals (those about the bolus
#: arrival) of the earliest cluster's are taken together as the earliest (the arterial timing), then chosen by peak
#: height. k-means split the DCE object's arteries and the small vessels that hold their blood (one timing, one
#: shape) into 3-4 clusters by noise, first moments 0.01-0.04 s apart at 5 s frames, and the earliest by that margin
#: held 0 of the 16 arteries at flip angle 25° (AIF peak -62 %, Ktrans +167 %, without a word); the vein passes
#: 6 s later (1.2 frames at 5 s, its cluster's moment 6 s later), and the tissue later still.
SAME_TIMING_FRAMES = 0.25
#: An AIF whose peak is below this many times the brain's median tissue peak looks like tissue, not an artery
#: (:func:`BBBAnomalyLib.perfusion.arterial.tissue_peak_ratio`), and is refused: fitted to it, the brain is all
#: plasma (a white-matter mask gave brain vp = 1, round 17's audit). Physics: whole blood (plasma fraction 1 - Hct
#: ≈ 0.58) against tissue whose plasma volume vp is 0.01-0.05, so an artery's concentration peaks 10-50 times the
#: brain's median, still several times with partial volume. Relative enhancement (no T10) compresses it: the
#: arterial SER saturates (SPGR), and the threshold is set for that case.
#: Measured (round 17, the DCE reference object, 4-12 slices, SNR 15-40, 2-10 s frames, Parker or Georgiou AIF):
#: its arterial mask 30-31 with the true T10 map (29-30 as concentration input, 61-108 with --t10 1.4) and 8.3-9.4
#: as relative enhancement; the automatic AIF 25-37 (T10 map); the arterial mask widened in-plane so that 25 % of
#: its voxels are artery 8.2-8.4 (T10 map) / 2.8-2.9 (relative), 11 % artery 9.6-11 (--t10 1.4) / 1.7-1.8
#: (relative; vp then ~10x too high); the bad-input tests' synthetic case 8.2 (relative). Tissue drawn as the AIF
#: (40 voxels): NAWM 0.6-0.7, WM 1.0-1.2, GM 2.1-2.7, enhancing rim 2.9-3.8 (grey matter and rim masks can pass).
#: 1.5 is 5.5x below a real arterial mask in relative enhancement (20x with a T10 map) and 1.9x below a
#: 25 %-arterial mask (5.5x with a T10 map).
MIN_AIF_TISSUE_PEAK_RATIO = 1.5


#: An AIF in mM whose plasma concentration peaks above this is refused: no bolus gives it, the conversion does.
#: Physiology: a 0.1 mmol/kg bolus peaks at about 3-10 mM in arterial blood (Parker's population AIF 6 mM), so
#: 5-17 mM in plasma (Hct 0.42); a double dose or a fast injection about twice that. Measured (round 17, the DCE
#: demo object): the arterial mask with the true T10 map 10.5 mM, with a scalar --t10 1.4 (blood's T10 there is
#: 1.6 s) 25 mM; the automatic AIF with --t10 1.4 1060 mM, because it chose voxels whose signal exceeds the SPGR
#: maximum for that T10, where the inversion blows up (its maps were meaningless: brain vp 0.0002). 100 mM is 4x
#: above the highest real case here and 10x below that failure.
MAX_PLASMA_PEAK_MM = 100.0


#: Arterial blood's pre-contrast T1 [s] at 1.5-3 T (about 1.4-1.5 s at 1.5 T, 1.6-1.9 s at 3 T in the literature:
#: 1.66 s for arterial blood of Hct 0.42 in vitro at 3 T, Lu et al., MRM 2004;52:679; 1.84 s in vivo in the internal
#: carotid at 3 T, Li et al., MRM 2017 (PMC5250597); about 1.44 s at 1.5 T, Stanisz et al., MRM 2005;54:507;
#: the DCE demo object uses 1.6 s). A single --t10 shorter than this, used for the AIF's voxels too, makes the
#: measured AIF's concentration too high: on the demo object --t10 1.4 gave 25 mM for the arterial mask where the
#: true T10 map gives 10.5 mM. --blood-t10 (DCEParameters.blood_t10) gives the AIF its own T10.
BLOOD_T10_S = (1.6, 2.0)


#: Frames further apart than this at the AIF's peak [s] sample the arterial first pass (about 8 s wide at half
#: maximum in the Parker AIF) on one or two frames: where they fall moves the sampled peak and area, and Ktrans with
#: them, a bias no fit undoes. Measured on the DCE reference object (4 slices, SNR 40, the bolus arriving at 8-10
#: phases across one frame interval; scripts/dce_unusual_acquisitions.py), the enhancing rim's median Ktrans error:
#: the arterial mask -3.9 to +2.1 % at 4-8 s frames, -10.9 to +9.1 % at 10 s. A population AIF is known between the
#: frames: evaluated and integrated exactly at every delay (.population_placement, session 20), the Parker AIF on the
#: object made with it read -4.6 to +4.5 % at 6-10 s frames and -4.2 to +3.5 % at 12 s, the bolus at 0-0.75 of a
#: frame and the tumour 0-15 s late (it had read -22.6 to +18.7 % at 8 s, -25.7 to +61.3 % at 10 s, when its samples
#: were shifted). But at 12 s frames the check for tissue later than --max-delay (run_report._check_delay_range)
#: missed 3 of 6 tumours 10-15 s late at --max-delay 6 (Ktrans +20 to +71 %; at 6-10 s it said every one that was
#: wrong), so the population AIF is warned above 10 s.
SLOW_FRAMES_S = {"measured": 8.0, "population": 10.0}


#: --refine's Levenberg-Marquardt convolves the AIF as piecewise linear between the frames (:mod:`.kinetics`), not
#: the population curve itself: on the object made with the Parker AIF it read the rim's Ktrans -2.5 to +3.8 % at 8 s
#: frames but -11 to +14 % at 10 s, where the linear fit (exact integrals) read within 2.3 %.
REFINE_POPULATION_MAX_FRAME_S = 8.0


def warn_slow_frames(aif: np.ndarray, times: np.ndarray, population: bool, warnings: list[str],
                     refine: bool = False) -> None:
    """A warning where the frames about the AIF's peak are further apart than SLOW_FRAMES_S (see there), or, for
    a population AIF refined by --refine, than REFINE_POPULATION_MAX_FRAME_S."""
    peak = int(np.argmax(aif))
    steps = np.diff(np.asarray(times, dtype=np.float64))
    if steps.size == 0:
        return
    interval = float(max(steps[max(peak - 1, 0)], steps[min(peak, steps.size - 1)]))
    kind = "population" if population else "measured"
    if population and refine and interval > REFINE_POPULATION_MAX_FRAME_S:
        warnings.append(f"--refine with a population AIF at {interval:.3g} s frames: the refinement convolves the AIF "
                        "as straight lines between the frames, which misses its first pass there (on the DCE "
                        "reference object tumour Ktrans read -11 % to +14 % refined at 10 s frames, within 2.3 % "
                        "without --refine, whose linear fit integrates the population curve exactly); leave out "
                        "--refine")
    if interval <= SLOW_FRAMES_S[kind]:
        return
    if population:
        warnings.append(f"the frames are {interval:.3g} s apart about the AIF's peak: the tissue's first pass (the "
                        "population AIF's is about 8 s wide) falls on one or two of them, and a tissue later than "
                        "--max-delay behind the arteries is no longer reliably detected (on the DCE reference object "
                        "at 12 s frames 3 of 6 tumours 10-15 s late went unnoticed at --max-delay 6, Ktrans +20 % to "
                        "+71 %; within it, Ktrans read within 5 %): give a --max-delay that covers the tumour's lag")
    else:
        warnings.append(f"the frames are {interval:.3g} s apart about the AIF's peak: the arterial first pass (about "
                        "8 s wide) falls on one or two of them, so its sampled peak and area, and Ktrans with them, "
                        "depend on where the frames fall (on the DCE reference object tumour Ktrans read -11 % to +9 % "
                        "at 10 s frames, -4 % to +2 % at 8 s)")


def blood_t10_warning(t10: float) -> str:
    return (f"the measured AIF was converted with the single T10 given ({t10:g} s), but arterial blood's T10 is about "
            f"{BLOOD_T10_S[0]:g}-{BLOOD_T10_S[1]:g} s: its concentration reads too high and Ktrans, ve and vp too low "
            "(on the demo object --t10 1.4 read the AIF 2.4 times high); give --blood-t10 SECONDS (arterial blood's "
            "T10, e.g. 1.65 at 3 T) for the AIF, or a T10 map or --vfa for quantitative maps")


def blood_t10_in_use(params, mode: str, warnings: list[str]) -> float | None:
    """``params.blood_t10`` where it converts a measured AIF from signal (``mode`` "spgr" and no population AIF;
    call it once the population AIF is decided), else None: a given value is then ignored, with a warning that says
    why (there is no conversion of the AIF for it to change). A warning, not a refusal: the Parker AIF is the
    default when no AIF mask is given, and a configuration file may set blood_t10 for all runs."""
    if params.blood_t10 is None:
        return None
    why = (f"the {params.population_aif} population AIF is already in mM (nothing of it is converted)"
           if params.population_aif is not None else
           "the input is concentration (nothing is converted)" if mode == "concentration" else
           "no tissue T10 was given, so the curves are relative enhancement, not mM; add --t10 (seconds or a map) or "
           "--vfa" if mode == "relative" else None)
    if why is None:
        return params.blood_t10
    warnings.append(f"--blood-t10 {params.blood_t10:g} was ignored: {why}")
    return None


def warn_single_t10(params, mode: str, have_map: bool, blood_t10: float | None, warnings: list[str]) -> None:
    """The warning of :func:`blood_t10_warning` for a measured AIF converted with a single --t10 shorter than blood's
    (not with --blood-t10, which gives the AIF its own T10, nor with a map, which holds the artery's own)."""
    if mode == "spgr" and not have_map and blood_t10 is None and params.t10 is not None and params.t10 < BLOOD_T10_S[0]:
        warnings.append(blood_t10_warning(params.t10))


def refuse_auto_aif_on_one_t10(params, mode: str, have_map: bool, have_aif_mask: bool) -> None:
    """The automatic AIF is refused on concentration from one --t10 for every voxel, before any work.

    Why: with a single T10, voxels whose own T10 is long (CSF, about 4 s) are converted with one far too short, and
    the SPGR inversion turns their noise into large "concentration" peaks that look arterial. On the DCE demo object
    (and the 4-slice test object) --aif auto chose no arterial voxel at all with --t10 1.6 or 1.8 (AIF peak 57 or
    13 mM, tumour Ktrans -55 % or +15 %, exit 0), and an AIF of 1,060 mM with 1.2 or 1.4; with the true T10 map it
    chose the artery (Ktrans -2 %). A T10 map (or --vfa) gives every voxel its own T10; a drawn mask or a search box
    does not depend on the choice."""
    if params.aif_auto and params.population_aif is None and not have_aif_mask and mode == "spgr" and not have_map:
        raise InputError("--aif auto needs a T10 map (--t10 MAP or --vfa): with one T10 for every voxel, voxels of "
                         "long T10 such as CSF look arterial (on the demo object it chose no artery voxel); draw "
                         "--aif-mask on an artery, give --aif-search around one, or use --population-aif parker")


def blood_aif(ser: np.ndarray, blood_t10: float, flip_angle: float, tr: float, relaxivity: float,
              hematocrit: float, warnings: list[str]) -> np.ndarray:
    """Plasma Cp (T,) of the measured AIF's voxels from their SER curves (n, T), converted with blood's T10 (every
    voxel the same: the artery's blood, whatever the tissue T10 or the T10 map holds there) and averaged as
    :func:`aif_from_mask` averages. The voxels were chosen, and checked to be arterial, on the tissue-T10
    concentration, as without --blood-t10: the option changes the AIF's values, never which voxels it averages
    (a search region's or the automatic AIF's choice is the tissue T10's; give a T10 map for the automatic AIF: with
    one --t10 for all, CSF-rich voxels of long T10 can look arterial)."""
    conc, clipped = concentration_from_ser(ser, blood_t10, flip_angle, tr, relaxivity)
    if clipped:
        warnings.append(f"{clipped} samples of the AIF lay above the SPGR maximum signal for --blood-t10 "
                        f"{blood_t10:g} s and were clipped before the inversion (noise on a saturated artery, or a "
                        "blood T10 that is too short)")
    return conc.mean(axis=0, dtype=np.float64) / (1.0 - hematocrit)


def aif_t10_record(params, mode: str, t10, in_aif: np.ndarray | None, blood_t10: float | None) -> dict:
    """The report's aif.t10: the T10 [s] the AIF was converted with (``value``; None when it was not converted) and
    its ``source`` ("--blood-t10", "scalar --t10", "map": the median of the map over the AIF voxels, each of which
    was converted with its own; or why nothing was converted). With --blood-t10, ``replaces`` is the tissue T10 that
    the AIF's voxels would have had (the scalar, or the map's median there)."""
    if params.population_aif is not None or mode != "spgr":
        why = (f"population AIF {params.population_aif}, already in mM" if params.population_aif is not None else
               "concentration input" if mode == "concentration" else "relative enhancement: no T10")
        return {"value": None, "source": f"not converted ({why})"}
    if np.ndim(t10) == 0:
        tissue = {"value": float(t10), "source": "scalar --t10"}
    else:
        tissue = {"value": float(np.median(np.asarray(t10)[in_aif])), "source": "map",
                  "statistic": "median over the AIF voxels"}
    if blood_t10 is None:
        return tissue
    return {"value": float(blood_t10), "source": "--blood-t10", "replaces": tissue}


def check_plasma_peak(cp: np.ndarray, mode: str, source: str, t10_given: str | None = None) -> None:
    """Refuse a plasma AIF (mM) that peaks above :data:`MAX_PLASMA_PEAK_MM` (``mode``: the conversion, "spgr" from
    signal with T10, "concentration" as given; relative enhancement has no such scale and is not checked).
    t10_given (SPGR): what the AIF was converted with, :func:`t10_given` ("map": a T10 map or --vfa; "blood":
    --blood-t10; "scalar": one --t10; None: not said). The advice fits it: a run given a T10 map is not asked for one
    (session 24: keyhole with the true T10 map and --aif auto was told "give a T10 map or --vfa")."""
    if mode == "relative" or cp.size == 0:
        return
    peak = float(np.nanmax(cp))
    if peak <= MAX_PLASMA_PEAK_MM:
        return
    ways_out = "draw --aif-mask on a large artery, or use --population-aif parker"
    if mode == "concentration":
        why = "is the concentration input in mM? (values in µM are 1000 times larger)"
    elif t10_given in ("map", "blood"):
        given = "the T10 map (given, or made by --vfa) where the AIF is" if t10_given == "map" else "--blood-t10"
        why = (f"its signal lies near or above the SPGR maximum for the T10 there, where the conversion to "
               f"concentration blows up: check {given} (blood's T10 is about "
               f"{BLOOD_T10_S[0]:g}-{BLOOD_T10_S[1]:g} s; report aif.t10); if it is right, the artery's signal is "
               "wrong (an artefact: a view-shared series such as keyhole/4D-TRAK or TWIST, motion, inflow): "
               f"{ways_out}")
    else:
        why = ("its signal lies near or above the SPGR maximum for the T10 given, where the conversion to "
               f"concentration blows up; give a T10 map or --vfa (blood's T10 is about 1.6-2.0 s), or {ways_out}")
    raise InputError(f"the AIF ({source}) peaks at {peak:.3g} mM of plasma concentration, more than any contrast "
                     f"bolus gives (about 5-30 mM; at most {MAX_PLASMA_PEAK_MM:g} is accepted): {why}")


def t10_given(t10_map, blood_t10: float | None) -> str:
    """What a measured AIF was converted with, for :func:`check_plasma_peak`'s advice."""
    return "blood" if blood_t10 is not None else "map" if t10_map is not None else "scalar"


def aif_from_mask(curves: np.ndarray, in_aif: np.ndarray, hematocrit: float, tissue=None,
                  tissue_in_aif: np.ndarray | None = None, n_baseline: int | None = None) -> np.ndarray:
    """Mean blood curve of the AIF voxels -> plasma Cp (T,). The other rows of ``curves`` (the brain's, when it
    holds them) are the tissue the AIF is compared with: a mask that peaks hardly above them is refused.

    ``tissue`` (with ``tissue_in_aif``, its rows that are the AIF's): the brain's rows to compare with when
    ``curves`` holds the AIF's rows alone (an AIF mask reaching outside the brain, gathered from both parts when the
    RLS or --blood-t10 keeps the SER first). Without them such a mask was compared with nothing and any drawing
    passed (round 18).

    ``n_baseline``: the run's pre-contrast frames, the check's baseline (else the first 5 % of the frames, at least
    2). The first 5 % of 600 frames of 1 s is 30 s: a bolus arriving at 6 s lay in it, the tissue median then rose
    above nothing, the check had no reference, and masks on white matter were taken as the AIF (Ktrans +4,000 %;
    scripts/dce_unusual_acquisitions.py)."""
    blood = _mean_blood(curves, in_aif)
    reference, reference_aif = (curves, in_aif) if tissue is None else (tissue, tissue_in_aif)
    baseline = _early_frames(blood.size) if n_baseline is None else slice(0, max(int(n_baseline), 1))
    check_aif_is_arterial(blood, reference, reference_aif, baseline, "the AIF mask's mean curve",
                          "draw the mask on a large artery (e.g. the MCA or ICA), or use --aif auto or "
                          "--population-aif parker")
    return blood / (1.0 - hematocrit)


def _mean_blood(curves: np.ndarray, in_aif: np.ndarray) -> np.ndarray:
    if not in_aif.any():
        raise InputError("the AIF mask has no voxel inside the analysed region; draw it on an artery in the image")
    blood = curves[in_aif].mean(axis=0, dtype=np.float64)
    if blood.max() <= 0:
        raise InputError("the AIF mask's mean curve does not enhance; is it drawn on an artery (e.g. a MCA branch "
                         "or the internal carotid)? Or use --population-aif parker")
    return blood


class PooledConversion:
    """The automatic AIF's blood curve in SPGR concentration: ``pool(rows, indices)`` of its voxels' (n, T)
    concentration rows (``indices``: the rows' places in the curves whose T10 ``t10`` holds, or a scalar T10) is
    their mean SER converted once with their median T10 (:func:`.conversion.pooled_concentration`: the mean of
    per-voxel concentrations reads the peak high where each voxel's S0 rests on few baseline frames).

    Only for voxels that hold the same blood: the automatic AIF keeps those whose level after the first pass reaches
    0.7 of the top ones. Not for a drawn mask, a search region or --blood-t10 (which still average per-voxel
    concentrations): a drawn mask holds partial volumes, whose mean SER is not the SER of their mean concentration
    (measured, session 20, scripts/aif_plausibility.py dce: masks 5-25 % artery pooled read their peak ratio
    1.5-10 instead of 1.6-292 and 12-52 of the 130 runs of each were refused by the tissue check)."""

    def __init__(self, t10, flip_angle: float, tr: float, relaxivity: float):
        self.t10 = np.asarray(t10, dtype=np.float64)
        self.args = (flip_angle, tr, relaxivity)

    def __call__(self, rows: np.ndarray, indices: np.ndarray) -> np.ndarray:
        t10 = self.t10[indices] if self.t10.ndim == 1 else self.t10
        return pooled_concentration(rows, t10, *self.args)


def _early_frames(n_frames: int) -> slice:
    """The frames taken as pre-contrast where the baseline is not given: the first 5 % (at least 2), as
    :func:`crossing_time` takes them."""
    return slice(0, max(2, n_frames // 20))


def check_aif_is_arterial(blood: np.ndarray, curves, in_aif: np.ndarray, baseline: slice, source: str,
                          fix: str) -> float | None:
    """Refuse an AIF (blood curve) that peaks hardly higher than the brain's tissue: Ktrans, ve and vp fitted to it
    would describe tissue against tissue. ``curves`` (n, T): the analysed rows (an array, or rows converted on
    demand), ``in_aif``: boolean (n,), the AIF's. Returns the measured ratio (None where there is no reference).

    Unlike DSC (dsc/aif.py, ``MIN_AIF_TISSUE_LEAD``), DCE does not check the AIF's timing or shape: measured (round 18,
    scripts/aif_plausibility.py: the DCE reference object, 4-6 slices, seeds 0-2, SNR 50 and 20, frames 2-6 s, Parker
    or Georgiou AIF, a delayed tumour; T10 map, scalar --t10 1.4 and 0.8, relative enhancement, concentration input),
    no statistic separates every real arterial mask from every wrong one that the peak ratio passes:

    * grey matter: the object's tissue is vp*Cp plus a little leakage, with no delay or dispersion, so a grey-matter
      mask (peak ratio 1.8-3.6) has the artery's timing and shape (with a T10 map or concentration input, its lead
      over the tissue median -0.02-0.12 of the tissue's bolus spread, the real arterial masks' -0.02-0.17);
    * the enhancing rim (ratio 2.8-7.9) keeps enhancing: its first-pass peak over the mean of its last 10 % of frames
      is 1.5-3.3, an artery's 9.7-13 with a T10 map, 9.7-12 as concentration, 14-86 with --t10 1.4 (the peak
      inflated near the SPGR maximum), 5.5-229 with --t10 0.8, but 2.7-5.3 as relative enhancement, where the
      arterial signal saturates; and the rim with --t10 0.8 reaches 3.3. Its bolus also passes after the tissue's
      (lead -2.4 to 0.01), but so does a saturated relative-enhancement artery (-1.4 to -0.15) and the vein;
    * CSF with one short scalar T10 (--t10 0.8 or 1.4, true ~4 s): the masks that pass the ratio hold small-vessel
      voxels whose conversion nears the SPGR singularity: one-frame spikes at the artery's time (width at half
      maximum 0.22-0.81 of the tissue's), as narrow as an artery converted with --t10 1.4 (0.33-0.87);
    * the vein (a venous input function, used in practice in DCE) passes after the tissue (lead -3.8 to -1.5; any
      sign with --t10 0.8, which also scatters the artery's: -5.0 to 2.5). As the AIF on the object (T10 map) it
      gave the leaky rim's Ktrans +25 % and grey matter's vp -44 % against the arterial mask's.

    Given the conversion, the rim would be separable: the peak-to-late ratio with a T10 map, concentration input or a
    scalar T10 near blood's (arteries 9.7 or more, rims 2.2 or less: 4.6 is 2.1x from each), as relative enhancement
    (2.7 against 1.8: 1.2x each side of 2.2). The conversion mode is not passed to this module (dce/pipeline.py calls
    aif_from_mask(curves, in_aif, hematocrit, n_baseline=...)), nor a warnings list for a warning short of a refusal."""
    from ..perfusion import arterial

    ratio = arterial.tissue_peak_ratio(blood, curves, in_aif, baseline)
    if ratio is not None and ratio < MIN_AIF_TISSUE_PEAK_RATIO:
        raise InputError(
            f"{source} looks like tissue, not an artery: its peak is only {ratio:.1f} times the brain's median tissue "
            f"peak (an artery's is 10 times or more in mM, 5 or more as relative enhancement; at least "
            f"{MIN_AIF_TISSUE_PEAK_RATIO:g} is needed); {fix}")
    return ratio


def aif_in_region(curves: np.ndarray, in_region: np.ndarray, n_baseline: int, hematocrit: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(plasma Cp (T,), boolean over ``in_region``'s voxels that were averaged) for a search region
    (e.g. a ROI box around an artery): its arterial voxels by
    :func:`BBBAnomalyLib.perfusion.arterial.arterial_in_region`, not every voxel of the box."""
    from ..perfusion.arterial import arterial_in_region

    region = curves[in_region]
    if region.shape[0] == 0:
        raise InputError("the AIF region has no voxel with signal inside the analysed region; draw it around an artery")
    peaks = region.max(axis=1) - region[:, :max(n_baseline, 1)].mean(axis=1)
    keep = arterial_in_region(peaks)
    blood = _mean_blood(region, keep)
    chosen = np.zeros(len(curves), bool)
    chosen[np.flatnonzero(in_region)[keep]] = True
    check_aif_is_arterial(blood, curves, chosen, slice(0, max(n_baseline, 1)),
                          "the AIF chosen in the --aif-search region",
                          "draw the region around a large artery (e.g. the MCA or ICA), or use --aif auto or "
                          "--population-aif parker")
    return blood / (1.0 - hematocrit), keep


def population_aif(times: np.ndarray, curves, brain_mean: np.ndarray, n_baseline: int, hematocrit: float,
                   max_delay: float, name: str = "parker", dose: float | None = None):
    """The named population plasma AIF placed in time (:func:`.population_placement.place_population_aif`: the
    delay search starts a margin before the arteries' arrival and reaches --max-delay past the later of theirs and
    the brain average's) and scaled to ``dose`` [mmol/kg] (None: the model's own; :mod:`.aif_dose`). Returns (Cp on
    ``times`` at delay 0, :class:`~.population_placement.ExactPopulationAIF` that the fit evaluates at every delay,
    :class:`~.population_placement.Placement`)."""
    from .aif_dose import dose_scale
    from .parameters import MAX_DELAY_S
    from .population_placement import ExactPopulationAIF, place_population_aif

    placement = place_population_aif(times, curves, brain_mean, n_baseline, max_delay, name, MAX_DELAY_S)
    exact = ExactPopulationAIF(name, hematocrit, placement.arrival, times, scale=dose_scale(name, dose))
    return exact.values(0.0), exact, placement


def auto_aif(curves: np.ndarray, times: np.ndarray, n_baseline: int, hematocrit: float, seed: int = 0,
             first_pass: tuple[int, np.ndarray] | None = None,
             pool: PooledConversion | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(plasma Cp (T,), indices of the chosen voxels) from (n, T) concentration curves with no mask:
    the arterial voxels chosen by :func:`BBBAnomalyLib.perfusion.arterial_auto.select_arterial_voxels`
    (Mouridsen's clustering as DSC uses it), averaged. The voxels are reported as the run's aif_mask.
    first_pass: :func:`first_pass_by_blocks` of the curves, which are then read by rows only (``curves[indices]``:
    a :class:`~.conversion.ConcentrationRows` converting them on demand).
    pool: SPGR concentration (:class:`PooledConversion`): the voxels are kept by their level after the first pass
    (:func:`late_levels`) and the AIF is their mean SER converted once; None (concentration input): by their peak,
    and the AIF is the mean of their curves.
    The choice is refused where its peak is hardly above the brain's tissue (:mod:`.aif_plausibility`: on a
    view-shared series the earliest cluster was tissue, the blurred artery passing later)."""
    from ..perfusion.arterial_auto import first_pass_areas, first_pass_stop, select_arterial_voxels
    from . import aif_plausibility

    arrival = min(n_baseline + 1, curves.shape[1] - 1)
    interval = float(np.median(np.diff(times[:min(len(times), arrival + 2)]))) if len(times) > 1 else 0.0
    if first_pass is None:  # (as select_arterial_voxels computes them: the areas are the plausibility check's too)
        stop = first_pass_stop(curves, arrival)
        first_pass = (stop, first_pass_areas(curves[:, :stop], times[:stop]))
    chosen = select_arterial_voxels(curves, times, slice(0, max(n_baseline, 1)), arrival, seed=seed, rounds=1,
                                    first_pass=first_pass, same_timing=SAME_TIMING_FRAMES * interval)
    if chosen is None or chosen.size == 0:
        raise InputError("automatic AIF selection found too few voxels with a contrast bolus; give --aif-mask "
                         "(or a box around an artery with --aif-search) or --population-aif parker")
    # The clustering separates by timing and shape. Voxels holding a partial volume of arterial blood
    # (small vessels) share both with the artery; only their peak is lower, and over a whole brain
    # they outnumber the arterial voxels (on the 12-slice DCE phantom Mouridsen's second round kept
    # 31 voxels, 2 of them arterial: AIF peak 0.46x, tumor Ktrans 2.2x). So the earliest cluster is
    # not split again; its voxels are kept when their peak (in SPGR concentration their level after the first
    # pass: LATE_LEVEL_MIN_FRAMES) reaches TOP_PEAK_FRACTION of the mean of its MIN_TOP_PEAKS highest.
    rows = np.asarray(curves[chosen])
    peaks = rows.max(axis=1) - rows[:, :max(n_baseline, 1)].mean(axis=1)
    if pool is not None:
        late = late_levels(rows, n_baseline, first_pass[0])
        peaks = peaks if late is None else late
    top = np.sort(peaks)[-min(MIN_TOP_PEAKS, peaks.size):].mean()
    high = peaks >= TOP_PEAK_FRACTION * top
    chosen = chosen[high]
    blood = rows[high].mean(axis=0, dtype=np.float64) if pool is None else pool(rows[high], chosen)
    base = blood[:max(n_baseline, 1)]
    noise = base.std() if base.size > 1 else 0.0
    if blood.max() - base.mean() <= 3.0 * noise:
        raise InputError("the automatically chosen AIF shows no contrast bolus; give --aif-mask on an artery "
                         "or --population-aif parker")
    in_aif = np.zeros(len(curves), bool)
    in_aif[chosen] = True
    check_aif_is_arterial(blood, curves, in_aif, slice(0, max(n_baseline, 1)), "the automatically chosen AIF",
                          "give --aif-mask on a large artery (e.g. the MCA or ICA) or --population-aif parker")
    aif_plausibility.check(curves, chosen, blood, first_pass[1], n_baseline, times)  # arterial area and timing
    return blood / (1.0 - hematocrit), chosen


def late_levels(rows: np.ndarray, n_baseline: int, stop: int) -> np.ndarray | None:
    """Each row's mean over the frames from ``stop`` (the first pass's end) less its baseline mean, or None where
    fewer than LATE_LEVEL_MIN_FRAMES frames follow the first pass (the automatic AIF's choice in SPGR
    concentration, see LATE_LEVEL_MIN_FRAMES)."""
    if rows.shape[1] - stop < LATE_LEVEL_MIN_FRAMES:
        return None
    return rows[:, stop:].mean(axis=1, dtype=np.float64) - rows[:, :max(n_baseline, 1)].mean(axis=1, dtype=np.float64)


#: The automatic AIF with this many pre-contrast frames or fewer gets a warning (see :func:`warn_short_auto_baseline`).
AUTO_AIF_SHORT_BASELINE_FRAMES = 2


def warn_short_auto_baseline(n_baseline: int, warnings: list[str]) -> None:
    """A warning for the automatic AIF when the baseline holds AUTO_AIF_SHORT_BASELINE_FRAMES frames or fewer.

    Why: the AIF's S0 is the mean of its voxels' baseline frames, and near the SPGR maximum (the arterial signal
    rises about 9-fold) the conversion multiplies an S0 error several-fold. Until session 20 the choice by peak
    height also kept the arteries whose S0 read low (DCE reference object, 4 slices, 2 baseline frames, SNR 20,
    seeds 0-7: AIF peak -1 to +83 %, rim Ktrans -18 to +3 %); it now chooses by the level after the first pass and
    converts the chosen voxels' mean SER once (:func:`auto_aif`, :func:`.conversion.pooled_concentration`), all 16
    arteries and nothing else. What is left is the pooled S0's own noise: held apart (seeds 4-7, frames 2-5 s, 2-3
    baseline frames) the peak read -8.7 to +16.4 % at SNR 20 and up to +10.2 % at SNR 30 (the area within 7.4 %, rim
    Ktrans within 4.6 %); with 1 baseline frame up to +20 %. The session's rule (peak within 15 % at SNR 20, 10 % at
    30) was not met, so the warning stays. (A drawn mask still averages per-voxel concentrations, see
    :class:`PooledConversion`: its peak read -5 to +31 % there, +815 % once with 1 baseline frame, unwarned.) The
    noise level is not estimated here (two frames do not give it per voxel), so the warning is given for every short
    baseline."""
    if n_baseline <= AUTO_AIF_SHORT_BASELINE_FRAMES:
        warnings.append(f"the automatic AIF rests on {n_baseline} pre-contrast frame(s): its baseline signal is that "
                        "noisy, and the conversion near the arterial signal's maximum multiplies its error several-"
                        "fold (on the DCE reference object at SNR 20 with 2 baseline frames the AIF peak read -9 % to "
                        "+16 %, its area and Ktrans within 7.5 % and 5 %; at SNR 30 the peak within 10 %): acquire a "
                        "longer baseline")


#: A drawn AIF mask or search region (SPGR) on this many pre-contrast frames or fewer is warned.
MEASURED_AIF_SHORT_BASELINE_FRAMES = 2


def warn_short_measured_baseline(n_baseline: int, source: str, warnings: list[str]) -> None:
    """A warning for an AIF measured in a drawn mask or search region when the baseline holds
    MEASURED_AIF_SHORT_BASELINE_FRAMES frames or fewer (SPGR conversion).

    Why: each voxel's S0 is the mean of those few frames, and near the arterial signal's SPGR maximum the conversion
    amplifies an S0 error convexly, so the mean of the voxels' concentrations reads the peak high (Jensen). On the
    DCE reference object's 16-voxel arterial mask at SNR 20 (scripts/dce_unusual_acquisitions.py --short-baseline)
    the peak read up to +31 % with 2 baseline frames (its mean over 4 seeds +7 to +17 %) and, with 1 frame, once
    +815 % (rim Ktrans -61 %), unwarned. Pooling the mask's SER (as :class:`PooledConversion` does for the automatic
    AIF) removes it for pure arteries but not for a drawn mask's partial volumes (scripts/aif_plausibility.py: 12-52
    of 130 real partial-volume masks then refused), so the user is told instead; the run is not refused (at SNR 40
    one frame read the peak within 7 %)."""
    if n_baseline <= MEASURED_AIF_SHORT_BASELINE_FRAMES:
        warnings.append(f"the AIF {source} rests on {n_baseline} pre-contrast frame(s): each voxel's baseline signal "
                        "is that noisy, and the conversion near the arterial signal's maximum reads the AIF peak high "
                        "(on the DCE reference object's arterial mask at SNR 20: up to +31 % with 2 frames, once "
                        "+815 % with 1, Ktrans then -61 %): check the AIF curve (aif.csv), acquire a longer baseline, "
                        "or give --baseline-frames if more frames are pre-contrast")


def first_pass_by_blocks(curves, times: np.ndarray, n_baseline: int, block: int = 8192) -> tuple[int, np.ndarray]:
    """(first-pass stop, first-pass areas) of :func:`auto_aif`'s curves, as
    :func:`~BBBAnomalyLib.perfusion.arterial_auto.select_arterial_voxels` computes them over the whole (n, T)
    float32 array, from the curves made block by block (``curves.blocks(block)``: a
    :class:`~.conversion.ConcentrationRows`), two passes: the brain-mean curve, then the areas. The same
    values: numpy's ``mean(axis=0)`` of a C-ordered float32 array adds the rows one after another into a float32
    row (each block is summed here after the running sum, as its first row), then divides by n as numpy does;
    the areas are per row."""
    from ..perfusion.arterial_auto import first_pass_areas, first_pass_stop

    n, frames = curves.shape
    total, buffer = None, np.empty((block + 1, frames), np.float32)
    for rows, values in curves.blocks(block):
        if total is None:
            total = values.sum(axis=0)
        else:  # the running sum as the first row: (((total + r0) + r1) + ...), numpy's order over the rows
            buffer[0] = total
            buffer[1:1 + values.shape[0]] = values
            total = buffer[:1 + values.shape[0]].sum(axis=0)
    mean = np.true_divide(total, np.intp(n), out=total, casting="unsafe")  # numpy's _mean, to the letter
    arrival = min(n_baseline + 1, frames - 1)
    stop = first_pass_stop(curves, arrival, mean_curve=mean)
    area = np.empty(n)
    for rows, values in curves.blocks(block):
        area[rows] = first_pass_areas(values[:, :stop], times[:stop])
    return stop, area
