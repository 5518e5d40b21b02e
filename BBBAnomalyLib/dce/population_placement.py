"""A population AIF placed in time and evaluated exactly at every delay of the fit (session 20).

Why: a population AIF (Parker, Georgiou, ...) is a function of time, known between the frames. It used to be
sampled once on the frame times, placed so that its 10 % rise matched the brain-mean curve's less a lead of half
the delay search, and the per-voxel delay fit then shifted those *samples* by linear interpolation. At 8-10 s
frames that lost the first pass (a Gaussian of 3.4 s SD in Parker's curve) and tumour Ktrans read -26 to +61 %;
the lead took half the search, so a tumour 5 s behind the artery was outside it (Ktrans +55 %), and with
--max-delay 20 still one 15 s behind (+98 %; scripts/dce_unusual_acquisitions.py).

Now (:class:`ExactPopulationAIF`) each delay of the grid evaluates the curve at the frame times minus that delay,
so every shifted AIF is the population curve itself. The values are instantaneous: a Cartesian acquisition takes
a frame's contrast from the centre of k-space, acquired at one moment (the frame's time stamp, up to an offset
that the delay search absorbs), and the DCE reference object samples its curves so. (Radial or view-shared
acquisitions, where every readout passes the centre, average over the frame: not modelled here.)

The placement (:func:`place_population_aif`) starts the delay search at the arteries' arrival, as a measured AIF
does (tissue is never earlier than its artery): the 10 % crossing of the earliest tenth of the brain's largest
boluses (the arteries and vessels in the brain mask; the brain-mean curve where none shows a sustained bolus).
A crossing read between two frames lies anywhere between them (at 10 s frames the one read was 7-8 s before the
true one where the bolus rose just before the later frame), so the search starts at the frame before it and
reaches --max-delay past the frame after the later of the arteries' and the brain average's crossings, each with
ARRIVAL_PAD_S more for noise: a tissue that lags its arteries, or the brain's average, by up to --max-delay is
inside the search, wherever the frames fall."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..perfusion.population_aif import plasma_population_aif
from .conversion import ARRIVAL_FRACTION

#: The delay search reaches this much [s] beyond the frames that bracket the crossings (noise moves a crossing
#: read from a few voxels by a fraction of a frame, and the frames' own bracket is 1-2 s at fast sampling).
ARRIVAL_PAD_S = 2.0
#: The brain's largest boluses read for the arteries' arrival: this share of the brain's voxels (at least
#: MIN_BOLUS_VOXELS), and of their crossings the EARLY_QUANTILE one (veins and sinuses are among the largest too).
#: As :mod:`.arterial_baseline` reads them for the automatic AIF.
LARGEST_BOLUS_SHARE = 0.001
MIN_BOLUS_VOXELS = 5
EARLY_QUANTILE = 0.1
#: The population curve's integral is accumulated on this grid [s] (the trapezoid's error on Parker's first pass,
#: SD 3.4 s, is below 1e-4 of its area at 0.05 s).
FINE_STEP_S = 0.05
_BLOCK = 8192


class ExactPopulationAIF:
    """The named plasma population AIF on ``times`` [s], its own time zero at ``arrival`` [s]: ``values(delay)`` is
    the curve at times - arrival - delay (exactly 0 before it), ``integral(delay)`` its running integral from the
    arrival [mM·min], accumulated on a fine grid (not the trapezoid over the frames: the first pass falls between
    the frames at coarse sampling). ``scale``: dose / the model's dose (:func:`.aif_dose.dose_scale`; 1 leaves the
    curve exactly as published)."""

    def __init__(self, name: str, hematocrit: float, arrival: float, times: np.ndarray, scale: float = 1.0):
        self.name, self.hematocrit, self.arrival = name, float(hematocrit), float(arrival)
        self.scale = float(scale)
        self.times = np.asarray(times, dtype=np.float64)
        span = float(self.times.max() - min(self.times.min(), self.arrival)) + 2 * FINE_STEP_S
        self._u = np.arange(0.0, span + FINE_STEP_S, FINE_STEP_S)  # [s] after the curve's own arrival
        fine = self._scaled(plasma_population_aif(name, self._u / 60.0, self.hematocrit))
        steps = 0.5 * (fine[1:] + fine[:-1]) * (FINE_STEP_S / 60.0)
        self._running = np.concatenate([[0.0], np.cumsum(steps)])

    def _scaled(self, curve: np.ndarray) -> np.ndarray:
        return curve if self.scale == 1.0 else curve * self.scale  # (the model's own dose: bit-identical)

    def values(self, delay: float = 0.0) -> np.ndarray:
        return self._scaled(plasma_population_aif(self.name, self.times / 60.0, self.hematocrit,
                                                  delay=(self.arrival + float(delay)) / 60.0))

    def integral(self, delay: float = 0.0) -> np.ndarray:
        return np.interp(self.times - self.arrival - float(delay), self._u, self._running, left=0.0)


@dataclass
class Placement:
    """Where the population AIF was put: ``arrival`` [s] (the curve's own delay: its time zero), ``span`` [s] (the
    delay grid's extent, from 0), and what they were read from, all in s: the arteries' and the brain average's 10 %
    crossings and the population curve's own crossing after its time zero."""

    arrival: float
    span: float
    arteries_crossing: float | None
    brain_crossing: float
    own_crossing: float

    def record(self, max_delay: float) -> dict:
        return {"curve_arrival_s": round(self.arrival, 3), "arteries_crossing_s": None if self.arteries_crossing is
                None else round(self.arteries_crossing, 3), "brain_crossing_s": round(self.brain_crossing, 3),
                "own_crossing_s": round(self.own_crossing, 3), "delay_grid_s": [0.0, round(self.span, 3)],
                "beyond_max_delay_s": round(self.span - max_delay, 3)}


def crossing(curve: np.ndarray, times: np.ndarray, n_base: int) -> float | None:
    """Time [s] at which ``curve`` first reaches ARRIVAL_FRACTION of its rise above its first ``n_base`` frames'
    mean (linear between frames), or None where it shows no sustained bolus (the median of its frames after the
    crossing below that level: a noise spike, not contrast)."""
    c = np.asarray(curve, dtype=np.float64)
    rise = c - c[:max(int(n_base), 1)].mean()
    peak = int(np.argmax(rise))
    if rise[peak] <= 0:
        return None
    level = ARRIVAL_FRACTION * rise[peak]
    i = int(np.flatnonzero(rise[:peak + 1] >= level)[0])
    if np.median(rise[i:]) < level:
        return None
    if i == 0:
        return float(times[0])
    w = (level - rise[i - 1]) / max(rise[i] - rise[i - 1], 1e-12)
    return float(times[i - 1] + w * (times[i] - times[i - 1]))


def arteries_crossing(curves, times: np.ndarray, n_base: int) -> float | None:
    """The EARLY_QUANTILE crossing of the brain's largest boluses (rows of ``curves`` (n, T), concentration), or
    None where fewer than MIN_BOLUS_VOXELS show a sustained bolus."""
    n = curves.shape[0]
    base = max(int(n_base), 1)
    peak = np.empty(n)
    for start in range(0, n, _BLOCK):
        block = np.asarray(curves[start:start + _BLOCK], dtype=np.float64)
        peak[start:start + _BLOCK] = block.max(axis=1) - block[:, :base].mean(axis=1)
    peak[~np.isfinite(peak)] = -np.inf
    k = min(n, max(MIN_BOLUS_VOXELS, int(round(LARGEST_BOLUS_SHARE * n))))
    if k < MIN_BOLUS_VOXELS:
        return None
    rows = np.sort(np.argpartition(peak, n - k)[n - k:])
    found = [crossing(c, times, n_base) for c in np.asarray(curves[rows], dtype=np.float64)]
    found = np.array([t for t in found if t is not None])
    if found.size < MIN_BOLUS_VOXELS:
        return None
    return float(np.quantile(found, EARLY_QUANTILE, method="lower"))


def own_crossing(name: str) -> float:
    """The population curve's 10 % crossing [s] after its own time zero (read on a 0.06 s grid)."""
    fine = np.arange(0.0, 180.0, 0.06)
    curve = plasma_population_aif(name, fine / 60.0, 0.0)
    level = ARRIVAL_FRACTION * (curve.max() - curve[0])
    i = int(np.flatnonzero(curve - curve[0] >= level)[0])
    if i == 0:
        return 0.0
    w = (level - (curve[i - 1] - curve[0])) / max(curve[i] - curve[i - 1], 1e-12)
    return float(fine[i - 1] + w * (fine[i] - fine[i - 1]))


def place_population_aif(times: np.ndarray, curves, brain_mean: np.ndarray, n_base: int, max_delay: float,
                         name: str, max_span: float) -> Placement:
    """Where to put the population AIF and how far to search (see the module's docstring). ``curves``: the brain's
    concentration rows (n, T); ``brain_mean``: their mean curve; ``max_span``: the longest grid [s] allowed.
    With --max-delay 0 (no delay search) the curve is put at the brain average's arrival, as the one AIF of every
    voxel."""
    times = np.asarray(times, dtype=np.float64)
    own = own_crossing(name)
    brain = crossing(brain_mean, times, n_base)
    if brain is None:  # (the pipeline has refused a series with no bolus before this)
        brain = float(times[min(int(n_base), times.size - 1)])
    if max_delay <= 0:
        return Placement(brain - own, 0.0, None, brain, own)
    arteries = arteries_crossing(curves, times, n_base)
    first = min(brain, arteries) if arteries is not None else brain
    start = _frames_around(times, first)[0] - ARRIVAL_PAD_S
    end = _frames_around(times, max(brain, first))[1] + ARRIVAL_PAD_S + max_delay
    return Placement(start - own, min(max_span, float(np.ceil(end - start))), arteries, brain, own)


def _frames_around(times: np.ndarray, t: float) -> tuple[float, float]:
    """The frame times before and after ``t`` (the bracket its crossing was read in; the first or last frame's
    interval at the ends)."""
    after = int(np.clip(np.searchsorted(times, t), 1, times.size - 1))
    return float(min(times[after - 1], t)), float(max(times[after], t))
