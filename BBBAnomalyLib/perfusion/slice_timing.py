"""Slice timing of a 2D multi-slice dynamic series (DSC, 2D DCE): each slice's acquisition time within its frame.

Why: a 2D multi-slice EPI (DSC) or gradient-echo (2D DCE) series acquires the slices of one frame one after the other
(often interleaved: 0, 2, 4, ..., 1, 3, 5, ...; with multiband several at once), so slice z's samples lie at the frame
time plus its offset, up to almost one frame interval. The AIF is drawn in a few (usually low) slices and the tissue is
in all of them, so every slice carries its own delay relative to the AIF: the tissue of a slice acquired d s after the
AIF's slices shows the bolus d s EARLY on the frame grid. Read so, each slice's Tmax is off by its offset (up to 1.9 s
at 2 s frames, striped slice by slice for an interleaved order), sSVD's and Tikhonov's CBF by up to 40 % (oSVD 14 %),
a 2D DCE's vp by up to 25 % at 5 s frames; CBV and rCBV are not affected (session 22, ``scripts/dsc_slice_timing.py``).

The fix (``--slice-timing auto``): the AIF (an average of many voxels, smooth) is moved to each slice's acquisition
time, d = (slice offset) - (the AIF voxels' mean offset), by a cubic spline of its samples (half a 1.5 s frame kept the
peak within 0.2 % where linear interpolation lost 3 %), and the voxels of each distinct offset are deconvolved (DSC:
:func:`fit_by_acquisition_time`) or fitted (DCE: :class:`SliceGroupedModel`) with their own AIF: one matrix per offset,
one per slice or per band with multiband, at most :data:`MAX_GROUPS`. Noisy tissue curves are never interpolated. With
every offset equal to the AIF's there is one group with the AIF as it is: the old path, bit for bit. Not corrected,
with a warning: PHAE (one model per offset, measured and not adopted: :data:`PHAE_BY_OFFSET`), DCE's exchange models
(one AIF for every voxel) and a population AIF (no slice of its own). The AIF's own voxels are averaged as they are
(their alignment before the average, :class:`AIFByOffset`, was measured and not adopted: :data:`ALIGN_AIF_VOXELS`).
'none' is the default: see :data:`DEFAULT_WHY`.

Where the times come from, kept in ``Acquisition.extra[EXTRA_KEY]`` as ``{"times_s": [...], "direction": "k",
"source": "..."}`` (BIDS ``SliceTiming`` order along ``direction``, its ``SliceEncodingDirection``): a BIDS sidecar's
``SliceTiming`` (io/nifti.py), a DICOM series' per-slice acquisition clock within each frame (io/dicom_frames.py), the
``BBBAnomaly.Acquisition`` JSON of a NRRD file (io/nrrd.py). :func:`from_extra` refuses a list of the wrong length, a
non-finite or negative value, or a time outside the frame interval in one line that names its file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError

#: ``Acquisition.extra`` key of the slice times: {"times_s": [...], "direction": BIDS SliceEncodingDirection, "source"}
EXTRA_KEY = "slice_timing"
#: The choices of ``--slice-timing``: 'auto' uses the slice times the file gives (none given: nothing changes),
#: 'none' ignores them (the maps as before the fix; a warning says what that costs where they differ).
MODES = ("auto", "none")
#: Why 'none' is the default (session 22's rule, written before the fix was measured: on by default if it changes
#: nothing at zero offsets, removes 75 % of the worst per-slice GM Tmax AND CBF error for oSVD, cSVD, sSVD and
#: Tikhonov in 90 % of the settings where it is material, leaves CBV alone and costs under 25 % of the run):
#: Tmax held (27-30 of 30 per method), CBF held for sSVD only (28 of 30; oSVD 0 of 10, cSVD 0 of 3, Tikhonov 10 of
#: 15: 2-8 % is left, as much against the object acquired wholly at the slice's time: the spline-moved AIF differs
#: from a sampled one by 0.3-0.5 % rms, which the truncated deconvolutions turn into a few % of CBF; cSVD at 2 s
#: frames and SNR 50 read 2-3 % worse slices 7-8 % off), and the cost held except oSVD (+24-28 % of a 0.2-1 s run;
#: since its groups share one sampled scan start, +1 % at 12 slices: docs/benchmarks.md).
DEFAULT_WHY = "the session 22 rule missed on CBF (oSVD, cSVD, Tikhonov)"
#: What 'auto' does, for the warning that says 'none' left known slice times out (scripts/dsc_slice_timing.py)
AUTO_REMEDY = ("--slice-timing auto reads each slice against the AIF at its own time (measured: the worst slice's "
               "Tmax error from up to 1.9 s to under 0.3 s in 114 of 120 runs, sSVD's CBF from up to 40 % to under "
               "7.5 %; oSVD's, cSVD's and Tikhonov's CBF then within 2-8 % slice to slice, noiseless Tikhonov 15 %)")
DCE_REMEDY = ("--slice-timing auto fits each slice with the AIF at its own time (measured at 3-5 s frames: every "
              "slice's Ktrans and vp within 5 %)")
#: Offsets closer than this [s] share one deconvolution matrix: DICOM clocks are rounded to 1 or 2.5 ms, and moving
#: the AIF by 2.5 ms changes it by far less than 1 %.
GROUP_RESOLUTION_S = 0.0025
#: At most this many groups (one matrix each): more distinct offsets (a clock's jitter) are put on a grid of
#: frame interval / MAX_GROUPS.
MAX_GROUPS = 64
#: What leaving known slice times out does (scripts/dsc_slice_timing.py: the DSC object, 12 slices, 1-2 s frames, the
#: AIF in the two lowest slices; DCE: 5 s frames), said in the warning; and why PHAE leaves them out: it reads one AIF
#: for every voxel, and adding the offsets to its Tmax overshot at SNR 50, where its delay follows part of each offset
DSC_ERRORS = ("each slice's Tmax is off by up to its offset (striped slice by slice in an interleaved order; up to "
              "1.9 s at 2 s frames) and its CBF by up to 40 % (sSVD, Tikhonov; oSVD 14 %)")
DSC_PHAE = ("PHAE reads one AIF for every voxel and is not corrected for it", "read PHAE's Tmax and slice-to-slice "
            "CBF with that in mind (on the reference object its Tmax was off by up to 1.9 s and its CBF by up to 12 % "
            "slice to slice at 1-2 s frames), or use --method osvd with --slice-timing auto, which reads each slice "
            "with the AIF at its time (measured: worst slice's Tmax within 0.17 s, CBF within 5.5 %)")
#: PHAE with one model per acquisition offset (dsc/phae_step._fit_by_offset: each bound to the AIF moved to its
#: slices' time, pooled delays told each block's mean offset, guided pooling within an offset group). Off: session 22's
#: PHAE rule, written before it was measured (scripts/dsc_slice_timing.py PHAE_RULE), was missed on CBF. On the
#: 12-slice object (30 runs: five orders, 1-2 s frames, noiseless and SNR 50) it removed >= 75 % of the worst slice's
#: GM Tmax error in 30 of 30 runs (0.19-1.92 s -> 0.02-0.15 s) but of its CBF error in 0 of 30 (2.6-12.3 % ->
#: 1.9-12.4 %, worse in 7 runs), cost +0-13 %. scripts/dsc_slice_timing.py --methods phae --phae-by-offset measures it.
PHAE_BY_OFFSET = False
#: With 'auto', an AIF whose voxels lie in slices acquired at different times (the two lowest slices of an interleaved
#: order: about half a frame apart) kept per offset group, each group moved from its own time straight to each slice's
#: (:class:`AIFByOffset`) instead of their plain mean moved. Off: measured and not adopted (session 22,
#: scripts/dsc_slice_timing.py --align-aif, the 30-run DSC sweep, against the rule in the script): the AIF itself came
#: closer to the one acquired wholly at each slice's time (peak within 0.1 % where the plain mean read ~1 % low, rms
#: 0.1-0.5 % of the peak where it read 0.3-0.7 %) and Tikhonov's worst-slice CBF met the rule in 14 of 15 runs (10 of 15
#: plain; noiseless worst 14.9 -> 6.1 %), but oSVD still met it in 0 of 10 and cSVD in 0 of 3, and sSVD fell from 28 to
#: 23 of 30: at SNR 50 and 1.5 s frames (interleaved, multiband) its slices acquired after the AIF's second slice read
#: 4.5-8 % high (1 % plain), although their AIF was closer by peak and rms. 2D DCE (5 s frames, interleaved and mb2):
#: rim Ktrans 3.5-4.7 % -> 1.5-3.0 %, rim vp 3.9-4.3 % -> 1.6-1.8 %, GM vp 3.0-3.3 % -> 1.0-1.4 %; at 3 s frames and
#: SNR 40 rim vp 0.5-0.6 % -> 1.4 % and GM vp 0.2 % -> 1.1 % (no rule was written for DCE).
ALIGN_AIF_VOXELS = False
DCE_ERRORS = "at 5 s frames each slice's vp was off by up to 28 % and Ktrans by up to 16 %"
#: BIDS SliceEncodingDirection -> array axis
_AXES = {"i": 0, "j": 1, "k": 2}


@dataclass
class SliceTiming:
    """The acquisition time [s] of each slice within its frame (index order along ``axis``), and where it came from."""

    times: np.ndarray
    axis: int = 2
    source: str = ""

    def voxel_offsets(self, flat_indices: np.ndarray, spatial_shape) -> np.ndarray:
        """The acquisition offset [s] of each voxel given by its flat (C-order) index in ``spatial_shape``."""
        along = np.unravel_index(np.asarray(flat_indices), tuple(spatial_shape))[self.axis]
        return self.times[along]

    def to_json(self) -> dict:
        """The times in voxel index order along ``axis`` (0, 1, 2)."""
        return {"times_s": [round(float(t), 6) for t in self.times], "axis": int(self.axis), "source": self.source}


def encoding_axis(direction, where: str) -> tuple[int, bool]:
    """(axis, reversed) of a BIDS ``SliceEncodingDirection`` ('i', 'j', 'k', 'i-', 'j-', 'k-'; None = 'k')."""
    if direction is None:
        return 2, False
    text = str(direction).strip()
    if not isinstance(direction, str) or text.rstrip("-") not in _AXES or text.count("-") > 1 or (
            "-" in text and not text.endswith("-")):
        raise InputError(f"SliceEncodingDirection in {where} must be one of i, j, k, i-, j-, k-, got "
                         f"{str(direction)[:40]!r}; correct it or delete it (k, the third axis, is the default)")
    return _AXES[text.rstrip("-")], text.endswith("-")


def check_slice_times(values, n_slices: int, interval: float | None, where: str, fix: str) -> np.ndarray:
    """``values`` as one finite time [s] per slice within [0, interval), else one InputError line naming
    ``where`` (the file and field) and ``fix`` (what to do)."""
    shown = str(values) if not isinstance(values, (list, tuple, np.ndarray)) else str(list(values)[:6])[:-1] + (
        ", ...]" if len(values) > 6 else "]")
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or any(
            isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        raise InputError(f"{where} must be a list of slice acquisition times in seconds, got {shown[:80]}; {fix}")
    times = np.asarray(values, dtype=np.float64)
    if times.size != n_slices:
        raise InputError(f"{where} lists {times.size} slice times but the series has {n_slices} slices along the "
                         f"slice axis; {fix}")
    if not np.all(np.isfinite(times)):
        raise InputError(f"{where} holds a value that is not a finite number ({shown[:80]}); {fix}")
    if times.min() < -1e-6:
        raise InputError(f"{where} holds a negative slice time ({times.min():.4g} s): the times are seconds after the "
                         f"start of each frame (0 for the first slice acquired); {fix}")
    if interval is not None and times.max() >= interval - 1e-6:
        scale = " (milliseconds? they are seconds)" if times.max() > max(10.0, 50 * interval) else ""
        raise InputError(f"{where} holds a slice time of {times.max():.4g} s, not within the {interval:.4g} s frame "
                         f"interval{scale}: every slice is acquired within its frame; {fix}")
    return np.clip(times, 0.0, None)


def from_extra(extra: dict, spatial_shape, interval: float | None, where: str, fix: str | None = None
               ) -> SliceTiming | None:
    """The :class:`SliceTiming` kept in an Acquisition's ``extra`` (None when absent), checked against the grid and
    the frame interval; a bad one is refused in one line naming where it came from (its ``source``)."""
    entry = (extra or {}).get(EXTRA_KEY)
    if entry is None:
        return None
    source = entry.get("source") if isinstance(entry, dict) else None
    field = str(source or f"the {EXTRA_KEY} of {where}")
    fix = fix or ("correct it (one time in seconds per slice along the slice axis, each within the frame) or delete "
                  "it, or run with --slice-timing none, which does not use it")
    if not isinstance(entry, dict) or "times_s" not in entry:
        raise InputError(f"the {EXTRA_KEY} of {where} must be an object with 'times_s' (one time per slice, s) and "
                         f"'direction' (i, j, k, i-, j-, k-), got {str(entry)[:60]}; {fix}")
    axis, reverse = encoding_axis(entry.get("direction", "k"), field)
    times = check_slice_times(entry["times_s"], int(spatial_shape[axis]), interval, field, fix)
    return SliceTiming(times[::-1].copy() if reverse else times, axis, str(source or "metadata"))


def relative_offsets(timing: SliceTiming | None, voxels: np.ndarray, aif_voxels: np.ndarray, spatial_shape):
    """(per voxel: its acquisition time minus the AIF's, the AIF's offset): the AIF's offset is its voxels' mean
    (the AIF is their average). (None, None) without slice timing."""
    if timing is None:
        return None, None
    aif_offset = float(timing.voxel_offsets(aif_voxels, spatial_shape).mean()) if np.size(aif_voxels) else 0.0
    return timing.voxel_offsets(voxels, spatial_shape) - aif_offset, aif_offset


def shifted_curve(curve: np.ndarray, times: np.ndarray, shift: float) -> np.ndarray:
    """``curve`` (sampled at ``times``) read at ``times + shift`` by a cubic spline, the end values held beyond the
    series; exactly ``curve`` for a zero shift."""
    curve = np.asarray(curve)
    if shift == 0.0:
        return curve
    from scipy.interpolate import CubicSpline

    spline = CubicSpline(np.asarray(times, np.float64), np.asarray(curve, np.float64))
    at = np.clip(np.asarray(times, np.float64) + shift, times[0], times[-1])
    return spline(at).astype(curve.dtype)


@dataclass
class AIFByOffset:
    """An AIF whose voxels were acquired at different offsets within the frame (two or three low slices of an
    interleaved order: about half a frame apart), kept as each offset group's mean curve. Read at a time, each group's
    mean is moved by the cubic spline of :func:`shifted_curve` from its own offset straight to that time and the
    groups are averaged (weighted by their voxels): one spline per group, none for the group acquired at that time.

    Why: their plain mean is the bolus blurred over the spread (its peak low, its shape wide), and moving that to each
    slice's time (session 22's auto) left 2-8 % of oSVD's, cSVD's and Tikhonov's CBF and 3-4.7 % of a 2D DCE's Ktrans
    and vp. Each group is moved once, straight to the slice's time: the aligned mean moved a second time (two splines)
    read the same rule tallies, and 10 of 120 runs' worst-slice CBF differed by over 0.5 % (most of them lower with one
    spline). Used only with :data:`ALIGN_AIF_VOXELS`."""

    means: np.ndarray  # (groups, N) float64: each offset group's mean curve
    weights: np.ndarray  # (groups,) each group's share of the voxels
    offsets: np.ndarray  # (groups,) [s] each group's offset minus the voxels' mean offset (the reference)
    dtype: np.dtype

    @classmethod
    def of(cls, curves: np.ndarray, times: np.ndarray, offsets: np.ndarray, dtype=np.float64) -> "AIFByOffset":
        curves, offsets = np.asarray(curves), np.asarray(offsets, np.float64)
        values, rows = _groups(offsets - offsets.mean(), np.asarray(times))
        means = np.stack([curves[group].mean(axis=0, dtype=np.float64) for group in rows])
        return cls(means, np.array([group.size for group in rows], np.float64) / offsets.size, values, np.dtype(dtype))

    def at(self, times: np.ndarray, shift: float) -> np.ndarray:
        """The AIF at ``shift`` [s] from the reference (a voxel sampled at t + o reads t + shift at t + shift - o)."""
        total = np.zeros(self.means.shape[1], np.float64)
        for mean, weight, offset in zip(self.means, self.weights, self.offsets):
            total += weight * shifted_curve(mean, times, float(shift) - float(offset))
        return total.astype(self.dtype, copy=False)


def aif_at(aif, times: np.ndarray, shift: float) -> np.ndarray:
    """The AIF (an array, or an :class:`AIFByOffset`) at ``shift`` [s] from its time; an array as it is for 0."""
    return aif.at(times, shift) if isinstance(aif, AIFByOffset) else shifted_curve(aif, times, shift)


def aligned_aif(curves: np.ndarray, times: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The mean of the AIF voxels' curves (rows of ``curves``, each acquired ``offsets`` [s] into its frame), each
    moved to the voxels' mean offset before it is averaged (float64); every voxel at one offset: the plain mean."""
    offsets = np.asarray(offsets, np.float64)
    if offsets.size == 0 or np.ptp(offsets) <= GROUP_RESOLUTION_S:
        return np.asarray(curves).mean(axis=0, dtype=np.float64)
    return AIFByOffset.of(curves, times, offsets).at(times, 0.0)


def aif_at_one_time(timing: SliceTiming | None, mode: str, aif: np.ndarray, aif_curves, aif_voxels: np.ndarray,
                    spatial_shape, times: np.ndarray):
    """The AIF for the per-slice correction: ``aif`` (the plain mean of ``aif_curves``, rows of the voxels at flat
    indices ``aif_voxels``) where the fix or :data:`ALIGN_AIF_VOXELS` is off or every AIF voxel was acquired at one
    time, else an
    :class:`AIFByOffset` referred to the AIF voxels' mean offset (the reference :func:`relative_offsets` measures
    from). ``aif_curves``: the rows, or a callable that returns them (read only where needed)."""
    if not ALIGN_AIF_VOXELS or mode != "auto" or timing is None or np.size(aif_voxels) < 2:
        return aif
    offsets = timing.voxel_offsets(aif_voxels, spatial_shape)
    if np.ptp(offsets) <= GROUP_RESOLUTION_S:
        return aif
    rows = aif_curves() if callable(aif_curves) else aif_curves
    return AIFByOffset.of(rows, times, offsets, np.asarray(aif).dtype)


def offset_groups(offsets: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """(distinct offsets, each voxel's group): offsets within :data:`GROUP_RESOLUTION_S` share a group, and at most
    :data:`MAX_GROUPS` groups (then on a grid of interval / MAX_GROUPS)."""
    step = GROUP_RESOLUTION_S
    while True:
        keys = np.round(np.asarray(offsets, np.float64) / step)
        values, labels = np.unique(keys, return_inverse=True)
        if values.size <= MAX_GROUPS:
            return values * step, labels.ravel()
        step = max(step * 2, interval / MAX_GROUPS)


def fit_by_acquisition_time(fit_group, aif: np.ndarray, times: np.ndarray, curves: np.ndarray,
                            offsets: np.ndarray | None, progress=None, with_rows: bool = False):
    """``fit_group(aif, curves, progress)`` (a fit whose array fields hold one row per curve) for each group of
    curves acquired at one offset [s] relative to the AIF, with the AIF moved to that time; the groups' fits put
    back together in the curves' order. Offsets None or all 0: one call with the AIF as it is (the old path).
    ``with_rows``: ``fit_group(aif, curves, progress, rows)`` with the group's rows (ascending; None: all), for a fit
    that reads per-curve inputs besides the curves (PHAE's pooled delays and guided pooling)."""
    progress = progress or (lambda fraction: None)
    if offsets is None or not np.any(offsets):
        return fit_group(aif_at(aif, times, 0.0), curves, progress, *((None,) if with_rows else ()))
    values, rows = _groups(offsets, times)
    n, done, fits = curves.shape[0], 0, []
    for shift, group in zip(values, rows):
        share = group.size / max(n, 1)
        fits.append(fit_group(aif_at(aif, times, float(shift)), curves[group],
                              lambda f, done=done, share=share: progress(done + share * f),
                              *((group,) if with_rows else ())))
        done += share
    return _merged(fits, rows, n)


class SliceGroupedModel:
    """One model per group of curves acquired at one offset from the AIF's, each bound to the AIF moved to that
    time, used where the one model was: :meth:`fit`, :meth:`curves`, :meth:`ve_backflux_snr` (DCE's PKModel) and
    ``delays`` (the groups share the delay grid). ``offsets``: per curve, in the order of the curves it fits."""

    def __init__(self, make_model, aif: np.ndarray, times: np.ndarray, offsets: np.ndarray):
        values, self._rows = _groups(offsets, np.asarray(times))
        self._n = int(np.size(offsets))
        self.models = [make_model(aif_at(aif, times, float(shift))) for shift in values]
        self.delays = self.models[0].delays

    def fit(self, curves: np.ndarray, progress=None, **kwargs):
        progress = progress or (lambda fraction: None)
        fits, done = [], 0.0
        for model, rows in zip(self.models, self._rows):
            share = rows.size / max(self._n, 1)
            fits.append(model.fit(np.asarray(curves)[rows], progress=lambda f, done=done, share=share:
                                  progress(done + share * f), **kwargs))
            done += share
        return _merged(fits, self._rows, self._n)

    def curves(self, fit) -> np.ndarray:
        return self._per_group(lambda model, part, rows: model.curves(part), fit)

    def ve_backflux_snr(self, curves: np.ndarray, fit) -> np.ndarray:
        return self._per_group(lambda model, part, rows: model.ve_backflux_snr(np.asarray(curves)[rows], part), fit)

    def _per_group(self, call, fit) -> np.ndarray:
        out = None
        for model, rows in zip(self.models, self._rows):
            value = np.asarray(call(model, _subset(fit, rows, self._n), rows))
            if out is None:
                out = np.empty((self._n,) + value.shape[1:], value.dtype)
            out[rows] = value
        return out


def grouped(make_model, aif: np.ndarray, times: np.ndarray, offsets: np.ndarray | None):
    """``make_model(aif)`` where every curve was acquired at the AIF's time (offsets None or all 0), else a
    :class:`SliceGroupedModel` of one such model per offset."""
    if offsets is None or not np.any(offsets):
        return make_model(aif_at(aif, times, 0.0))
    return SliceGroupedModel(make_model, aif, times, offsets)


def _groups(offsets: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(distinct offsets, the rows of each) (:func:`offset_groups`)."""
    interval = float(times[1] - times[0]) if np.size(times) > 1 else 1.0
    values, labels = offset_groups(offsets, interval)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(values.size + 1))
    return values, [order[bounds[g]:bounds[g + 1]] for g in range(values.size)]


def _merged(fits: list, rows: list[np.ndarray], n: int):
    """The groups' fits (dataclasses whose arrays hold one row per curve) as one fit of ``n`` rows."""
    first = fits[0]
    fields = [f.name for f in dataclasses.fields(first) if _per_row(getattr(first, f.name), rows[0].size)]
    merged = dataclasses.replace(first, **{name: _full(getattr(first, name), n) for name in fields})
    for fit, group in zip(fits, rows):
        for name in fields:
            getattr(merged, name)[group] = getattr(fit, name)
    return merged


def _subset(fit, rows: np.ndarray, n: int):
    """The rows ``rows`` of a fit of ``n`` rows (its per-row array fields sliced, the rest as they are)."""
    return dataclasses.replace(fit, **{f.name: getattr(fit, f.name)[rows] for f in dataclasses.fields(fit)
                                       if _per_row(getattr(fit, f.name), n)})


def _per_row(value, n: int) -> bool:
    return isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n


def _full(value: np.ndarray, n: int) -> np.ndarray:
    return np.empty((n,) + value.shape[1:], value.dtype)


# --- what the run says ----------------------------------------------------------------------------------------
def report_entry(timing: SliceTiming | None, mode: str, applied: bool, aif_offset: float | None,
                 offsets: np.ndarray | None, interval: float) -> dict:
    """``report["slice_timing"]``: where the times came from, the offsets, whether the fix was applied."""
    if timing is None:
        return {"source": None, "applied": False, "mode": mode,
                "note": "slice acquisition times unknown (no SliceTiming in the file): each slice is taken as acquired "
                        "at its frame's time; in a 2D multi-slice series Tmax is then off by up to one frame interval "
                        f"({interval:.3g} s) slice by slice"}
    entry = {**timing.to_json(), "mode": mode, "applied": bool(applied)}
    if aif_offset is not None:
        entry["aif_offset_s"] = round(float(aif_offset), 6)
    if offsets is not None and offsets.size:
        entry["relative_offsets_s"] = [round(float(offsets.min()), 4), round(float(offsets.max()), 4)]
        entry["groups"] = int(offset_groups(offsets, interval)[0].size)
    return entry


def not_applied_warning(timing: SliceTiming, offsets: np.ndarray | None, cause: str, remedy: str) -> str | None:
    """The warning for slice times known but left out (``cause``: why; ``remedy``: what to do), or None where they
    all agree with the AIF's."""
    if offsets is None or not np.any(np.abs(offsets) > GROUP_RESOLUTION_S):
        return None
    spread = float(np.abs(offsets).max())
    return (f"the slices were acquired at different times within each frame ({timing.source}: up to {spread:.2f} s "
            f"from the AIF's slices) and {cause}: {remedy}")


# --- the pipelines' two calls ---------------------------------------------------------------------------------
def series_timing(acquisition, spatial_shape, interval: float | None, mode: str, where: str,
                  warnings: list | None = None) -> SliceTiming | None:
    """The checked slice times of a series (None when it gives none). A bad list is refused in one line with
    ``mode`` 'auto'; with 'none' (which does not use it) it is left out with a warning that says what is wrong."""
    extra = getattr(acquisition, "extra", None) or {}
    if mode == "auto":
        return from_extra(extra, spatial_shape, interval, where)
    try:
        return from_extra(extra, spatial_shape, interval, where, fix="correct it or delete it; --slice-timing none "
                          "(the default) does not use it")
    except InputError as exc:
        if warnings is not None:
            warnings.append(f"the slice times were not read: {exc}")
        return None


def plan(timing: SliceTiming | None, mode: str, voxels: np.ndarray, aif_voxels: np.ndarray, spatial_shape,
         interval: float, warnings: list, unsupported: tuple[str, str] | None = None,
         errors: str = "", remedy: str = AUTO_REMEDY) -> tuple[np.ndarray | None, dict]:
    """(each analysed voxel's acquisition time relative to the AIF's, or None where nothing is to be done; the
    report entry). ``voxels``/``aif_voxels``: flat indices of the analysed voxels and of the AIF's voxels.
    ``unsupported``: (why, what to do) where the run cannot use them (PHAE, a population AIF). ``errors``: what
    leaving them out does to the maps (the measured sizes), for the warning when they are known, differ, and are not
    applied; ``remedy``: what --slice-timing auto does instead."""
    offsets, aif_offset = relative_offsets(timing, voxels, aif_voxels, spatial_shape)
    applied = mode == "auto" and unsupported is None and offsets is not None and bool(np.any(offsets))
    if timing is not None and not applied:
        cause, remedy = unsupported or ("--slice-timing none (the default) left that out", remedy)
        line = not_applied_warning(timing, offsets, f"{cause}: {errors}" if errors else cause, remedy)
        if line:
            warnings.append(line)
    entry = report_entry(timing, mode, applied, aif_offset, offsets, interval)
    if unsupported is not None and timing is not None:
        entry["not_applied_because"] = unsupported[0]
    return (offsets if applied else None), entry
