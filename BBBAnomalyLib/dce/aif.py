"""Arterial input function for the DCE models: mean of an AIF mask (or of the arterial voxels of a
search region), automatic selection (:func:`auto_aif`), or a population AIF (Parker, Georgiou,
Fritz-Hansen, Weinmann, McGrath) shifted to the detected bolus arrival. All are returned as *plasma*
concentration Cp = Cb/(1 - Hct) (Weinmann and Fritz-Hansen are plasma curves already)."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..perfusion.population_aif import plasma_population_aif
from .conversion import ARRIVAL_FRACTION

#: A population AIF is placed this much earlier than the detected tissue arrival, as a fraction of
#: the delay search range (tissue can only be later than its AIF, and the brain-mean curve crosses
#: 10 % of its rise later than an artery would).
POPULATION_LEAD_FRACTION = 0.5
#: Automatic AIF: a voxel of the earliest cluster is arterial when its peak reaches this fraction of
#: the mean of the cluster's MIN_TOP_PEAKS highest peaks.
TOP_PEAK_FRACTION = 0.5
MIN_TOP_PEAKS = 5


def aif_from_mask(curves: np.ndarray, in_aif: np.ndarray, hematocrit: float) -> np.ndarray:
    """Mean blood curve of the AIF voxels -> plasma Cp (T,)."""
    if not in_aif.any():
        raise InputError("the AIF mask has no voxel inside the analysed region; draw it on an artery in the image")
    blood = curves[in_aif].mean(axis=0, dtype=np.float64)
    if blood.max() <= 0:
        raise InputError("the AIF mask's mean curve does not enhance; is it drawn on an artery (e.g. a MCA branch "
                         "or the internal carotid)? Or use --population-aif parker")
    return blood / (1.0 - hematocrit)


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
    return aif_from_mask(region, keep, hematocrit), keep


def crossing_time(curve: np.ndarray, times: np.ndarray, fraction: float = ARRIVAL_FRACTION) -> float:
    """Time [s] at which a curve first reaches ``fraction`` of its peak rise (linear between frames)."""
    c = np.asarray(curve, dtype=np.float64)
    rise = c - np.median(c[: max(2, c.size // 20)])
    peak = int(np.argmax(rise))
    level = fraction * rise[peak]
    i = int(np.flatnonzero(rise[: peak + 1] >= level)[0])
    if i == 0:
        return float(times[0])
    w = (level - rise[i - 1]) / max(rise[i] - rise[i - 1], 1e-12)
    return float(times[i - 1] + w * (times[i] - times[i - 1]))


def population_aif(times: np.ndarray, tissue_mean: np.ndarray, hematocrit: float, max_delay: float,
                   name: str = "parker") -> tuple[np.ndarray, float]:
    """The named population plasma AIF on ``times`` [s], shifted so that its 10 % rise coincides with
    the brain-mean curve's, minus a lead of half the delay search range. Returns (Cp, bolus delay [s])."""
    fine = np.arange(0.0, 3.0, 0.001)  # [min]
    own = crossing_time(plasma_population_aif(name, fine, 0.0), fine * 60.0)
    tissue = crossing_time(tissue_mean, times)
    delay = max(tissue - own - POPULATION_LEAD_FRACTION * max_delay, 0.0)
    return plasma_population_aif(name, times / 60.0, hematocrit, delay=delay / 60.0), delay


def auto_aif(curves: np.ndarray, times: np.ndarray, n_baseline: int, hematocrit: float, seed: int = 0,
             first_pass: tuple[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(plasma Cp (T,), indices of the chosen voxels) from (n, T) concentration curves with no mask:
    the arterial voxels chosen by :func:`BBBAnomalyLib.perfusion.arterial_auto.select_arterial_voxels`
    (Mouridsen's clustering as DSC uses it), averaged. The voxels are reported as the run's aif_mask.
    first_pass: :func:`first_pass_by_blocks` of the curves, which are then read by rows only (``curves[indices]``:
    a :class:`~.conversion.ConcentrationRows` converting them on demand)."""
    from ..perfusion.arterial_auto import select_arterial_voxels

    arrival = min(n_baseline + 1, curves.shape[1] - 1)
    chosen = select_arterial_voxels(curves, times, slice(0, max(n_baseline, 1)), arrival, seed=seed, rounds=1,
                                    first_pass=first_pass)
    if chosen is None or chosen.size == 0:
        raise InputError("automatic AIF selection found too few voxels with a contrast bolus; give --aif-mask "
                         "(or a box around an artery with --aif-search) or --population-aif parker")
    # The clustering separates by timing and shape. Voxels holding a partial volume of arterial blood
    # (small vessels) share both with the artery; only their peak is lower, and over a whole brain
    # they outnumber the arterial voxels (on the 12-slice DCE phantom Mouridsen's second round kept
    # 31 voxels, 2 of them arterial: AIF peak 0.46x, tumor Ktrans 2.2x). So the earliest cluster is
    # not split again; its voxels are kept when their peak reaches half the mean of its 5 highest.
    rows = np.asarray(curves[chosen])
    peaks = rows.max(axis=1) - rows[:, :max(n_baseline, 1)].mean(axis=1)
    top = np.sort(peaks)[-min(MIN_TOP_PEAKS, peaks.size):].mean()
    high = peaks >= TOP_PEAK_FRACTION * top
    chosen = chosen[high]
    blood = rows[high].mean(axis=0, dtype=np.float64)
    base = blood[:max(n_baseline, 1)]
    noise = base.std() if base.size > 1 else 0.0
    if blood.max() - base.mean() <= 3.0 * noise:
        raise InputError("the automatically chosen AIF shows no contrast bolus; give --aif-mask on an artery "
                         "or --population-aif parker")
    return blood / (1.0 - hematocrit), chosen


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
