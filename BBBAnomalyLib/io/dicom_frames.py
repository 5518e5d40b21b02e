"""The frames of a dynamic DICOM series: which file is which frame, and when each frame was acquired.

Moved out of :mod:`.dicom` (the reader) because it is the part with its own rules: grouping files by slice position,
the frame keys tried in order, the clocks and their resolution. The rules are described, for users, in the reader's
module docstring ("Frames", "Frame times"); the reader calls :func:`_frame_grid` and :func:`_frame_times` and builds
the affine with :func:`_column`, :func:`_vector` and :func:`_describe_steps`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ..core.errors import InputError

POSITION_TOL_MM = 0.01
ORIENTATION_TOL = 1e-4
#: The header field of each frame key (to quote the value in messages).
_KEY_FIELDS = {"TemporalPositionIdentifier": "temporal_id", "TriggerTime": "trigger",
               "AcquisitionDateTime": "acq_datetime", "AcquisitionTime": "acq_time", "ContentTime": "content_time",
               "InstanceNumber": "instance"}


def _first_name(paths) -> str:
    return min(Path(p).name for p in paths)


def _groups(keys) -> list[tuple[object, list[int]]]:
    """(key, indices) per distinct key, the most common first."""
    index: dict[object, list[int]] = {}
    for i, k in enumerate(keys):
        index.setdefault(k, []).append(i)
    return sorted(index.items(), key=lambda item: -len(item[1]))


def _vector(text: str | None, n: int) -> np.ndarray:
    try:
        v = np.asarray([float(x) for x in (text or "").split("\\")], dtype=np.float64)
        return v if v.size == n else np.full(n, np.nan)
    except ValueError:
        return np.full(n, np.nan)


def _column(headers, name: str, parse=None) -> np.ndarray:
    """One number per file (NaN where missing or unreadable)."""
    parse = parse or (lambda s: float(s.split("\\")[0]))
    out = np.full(len(headers), np.nan)
    for i, h in enumerate(headers):
        try:
            out[i] = parse(h[name]) if h.get(name) else np.nan
        except ValueError:
            pass
    return out


def _tm_seconds(tm: str) -> float:
    """DICOM TM 'HHMMSS.ffffff' (or 'HH:MM:SS.fff', or truncated 'HHMM') -> seconds after midnight."""
    tm = tm.replace(":", "").strip()
    whole, _, frac = tm.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        raise ValueError(tm)
    hh, mm, ss = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    return hh * 3600 + mm * 60 + ss + (float("0." + frac) if frac.isdigit() else 0.0)


def _dt_seconds(dt: str) -> float:
    """DICOM DT 'YYYYMMDDHHMMSS.ffffff[&ZZXX]' -> seconds since 0001-01-01 (only differences matter)."""
    dt = dt.split("+")[0].split("-")[0].strip()
    day = _dt.date(int(dt[0:4]), int(dt[4:6]), int(dt[6:8])).toordinal()
    return day * 86400.0 + (_tm_seconds(dt[8:]) if len(dt) > 8 else 0.0)


def _clocks(headers) -> list[tuple[str, np.ndarray]]:
    """Candidate per-file clocks in seconds, most trusted first, only those every file has."""
    def time_of_day(name):
        t = _column(headers, name, _tm_seconds)
        if np.all(np.isfinite(t)) and np.ptp(t) > 43200:  # crossed midnight: early-morning times move on a day
            t = np.where(t < 43200, t + 86400, t)
        return t

    candidates = [("TriggerTime", _column(headers, "trigger") / 1000.0),
                  ("AcquisitionDateTime", _column(headers, "acq_datetime", _dt_seconds)),
                  ("AcquisitionTime", time_of_day("acq_time")),
                  ("ContentTime", time_of_day("content_time"))]
    return [(name, c) for name, c in candidates if np.all(np.isfinite(c)) and np.ptp(c) > 0]


def _whole_seconds(clock: np.ndarray) -> bool:
    """A clock with one-second resolution: no value has a fractional second."""
    return bool(np.all(np.abs(clock - np.round(clock)) < 1e-3))


def _frame_grid(headers, files, directory) -> tuple[np.ndarray, str]:
    """(frames, slices) array of file indices, slices sorted along the normal; and how frames were found."""
    n = len(headers)
    names = [Path(f).name for f in files]
    pos = np.stack([_vector(h.get("position"), 3) for h in headers])
    iop = np.stack([_vector(h.get("orientation"), 6) for h in headers])
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(iop))):
        raise InputError(f"some files in '{directory}' lack ImagePositionPatient/ImageOrientationPatient; "
                         "the series has no 3D geometry (is it a localizer or a secondary capture?)")
    main = _groups(tuple(np.round(v, 3)) for v in iop)[0][1]
    reference = np.median(iop[main], axis=0)
    tilted = np.abs(iop - reference).max(axis=1) > ORIENTATION_TOL
    if tilted.any():
        odd = np.flatnonzero(tilted)
        raise InputError(f"the series in '{directory}' mixes slice orientations: {odd.size} of {n} files (e.g. "
                         f"'{_first_name([names[i] for i in odd])}') are not parallel to the others (a localizer or a "
                         "reformat?); it is not one volume series: move those files out of the folder")
    echo = _column(headers, "echo_time")
    echo = np.unique(echo[np.isfinite(echo)])
    if echo.size > 1:
        raise InputError(f"the series in '{directory}' has {echo.size} echo times ({echo.tolist()} ms); "
                         "`bbbanomaly dsc` reads a dual-echo DSC folder as both echoes, other analyses take one "
                         "echo: split the series into one folder per echo (or convert it with dcm2niix, which writes "
                         "one file per echo)")
    s = pos @ np.cross(reference[:3], reference[3:])
    order = np.argsort(s, kind="stable")
    gaps = np.diff(s[order])
    slice_id = np.empty(n, dtype=int)
    slice_id[order] = np.concatenate([[0], np.cumsum(gaps > POSITION_TOL_MM)])
    counts = np.bincount(slice_id)
    moved = _frames_moved(s[order], gaps)
    if moved is not None and (np.any(counts != counts[0]) or counts.max() == 1):
        nz, nt, spread = moved
        raise InputError(f"slice positions differ between frames by up to {spread:.4g} mm along the slice normal in "
                         f"'{directory}' ({nz} slices, each in {nt} frames at shifted positions: prospective motion "
                         "correction?); every frame must cover the same slices: export the series without per-frame "
                         "repositioning, or register the frames and give a 4D NIfTI")
    if np.any(counts != counts[0]):
        raise InputError(_uneven_positions(counts, slice_id, s, names, directory))
    nz, nt = counts.size, int(counts[0])
    frame, source = _group_frames(headers, names, slice_id, nz, nt, directory)
    grid = np.full((nt, nz), -1)
    grid[frame, slice_id] = np.arange(n)
    if np.any(grid < 0):  # cannot happen with a key distinct at every position; kept as a guard
        raise InputError(f"the series in '{directory}' has {n} files for {nt} frames x {nz} slices but some "
                         f"(frame, slice) pairs repeat (grouping by {source}); it may mix several acquisitions")
    shift = np.abs(pos[grid] - pos[grid[:1]]).max()
    if shift > POSITION_TOL_MM:
        raise InputError(f"slice positions differ between frames by up to {shift:.4g} mm in '{directory}' (more than "
                         f"{POSITION_TOL_MM:g} mm: prospective motion correction?); every frame must cover the same "
                         "slices: export the series without per-frame repositioning, or register the frames and give "
                         "a 4D NIfTI")
    return grid, source


def _frames_moved(sorted_s: np.ndarray, gaps: np.ndarray):
    """(slices, frames, spread in mm) when the positions along the normal form equal clusters of several files
    spread wider than the tolerance, far apart from each other (each frame shifted a little: PACE); else None."""
    if gaps.size == 0 or gaps.max() <= POSITION_TOL_MM:
        return None
    cluster = np.concatenate([[0], np.cumsum(gaps > 0.25 * gaps.max())])
    sizes = np.bincount(cluster)
    if sizes.min() < 2 or np.any(sizes != sizes[0]):
        return None
    spread = float(max(np.ptp(sorted_s[cluster == c]) for c in range(sizes.size)))
    return (sizes.size, int(sizes[0]), spread) if spread > POSITION_TOL_MM else None


def _uneven_positions(counts, slice_id, s, names, directory) -> str:
    """The line for slice positions that do not all hold the same number of files."""
    values, how_often = np.unique(counts, return_counts=True)
    usual = int(values[how_often == how_often.max()].max())  # the most common count (the frames)

    def files_at(p):
        return sorted(names[i] for i in np.flatnonzero(slice_id == p))

    where = np.array([s[slice_id == p].mean() for p in range(counts.size)])
    more = np.flatnonzero(counts > usual)
    if more.size:
        a, b = files_at(more[0])[:2]
        return (f"the series in '{directory}' has {counts[more[0]]} images at one slice position where the others have "
                f"{usual} (e.g. '{a}' and '{b}'): some slice is there twice (a copy with another SOPInstanceUID, or images "
                "of another acquisition); remove the extra files")
    fewer = np.flatnonzero(counts < usual)
    regular = where[counts == usual]
    step = np.median(np.diff(regular)) if regular.size > 1 else 0.0
    if usual > 1 and np.all(counts[fewer] == 1) and step > 0:
        off_grid = [p for p in fewer if abs((where[p] - regular[0]) / step - round((where[p] - regular[0]) / step))
                    * step > max(POSITION_TOL_MM, 0.05 * step)]
        if off_grid:
            name = files_at(off_grid[0])[0]
            return (f"the image '{name}' in '{directory}' lies at a slice position ({where[off_grid[0]]:.4g} mm along "
                    f"the slice normal) that none of the other {usual} frames has, between the series' slices: it does not "
                    "belong to this series (a reformat or another acquisition?); move it out of the folder")
    return (f"the series in '{directory}' has {counts.size} slice positions but {fewer.size} of them are in fewer files "
            f"than the others ({int(counts[fewer].min())} instead of {usual}, e.g. the slice of "
            f"'{files_at(fewer[0])[0]}'): some frames miss slices. Check that the export is complete")


def _distinct_per_slice(values: np.ndarray, slice_id: np.ndarray, nz: int) -> np.ndarray:
    order = np.lexsort((values, slice_id))
    v, s = values[order], slice_id[order]
    new = np.concatenate([[True], (np.diff(s) != 0) | (np.diff(v) != 0)])
    return np.bincount(s[new], minlength=nz)


def _first_tie(values: np.ndarray, slice_id: np.ndarray, names) -> tuple[int, int]:
    """Two files at one slice position with the same value (the first such pair by file name)."""
    pairs = {}
    for i in sorted(range(len(names)), key=lambda i: names[i]):
        key = (slice_id[i], values[i])
        if key in pairs:
            return pairs[key], i
        pairs[key] = i
    return 0, 0


def _group_frames(headers, names, slice_id, nz: int, nt: int, directory) -> tuple[np.ndarray, str]:
    """The frame of each file: its rank at its slice position by the first key that takes a different value for
    every frame at every slice position (see the module docstring). A TemporalPositionIdentifier or a sub-second
    acquisition time that repeats at a slice position where it also varies means two images of one slice at one
    moment: refused."""
    n = len(headers)
    if nt == 1:
        return np.zeros(n, dtype=int), "single frame"
    tpi = _column(headers, "temporal_id")
    instance = _column(headers, "instance")
    candidates = []
    if np.all(np.isfinite(tpi)) and np.unique(tpi).size > 1:
        candidates.append(("TemporalPositionIdentifier", tpi, True))
    for name, clock in _clocks(headers):
        candidates.append((name, clock, name in ("AcquisitionDateTime", "AcquisitionTime") and not _whole_seconds(clock)))
    if np.all(np.isfinite(instance)):
        candidates.append(("InstanceNumber", instance, False))
    for name, values, strict in candidates:
        distinct = _distinct_per_slice(values, slice_id, nz)
        if np.all(distinct == nt) and (name != "TemporalPositionIdentifier" or np.unique(values).size == nt):
            frame = np.empty(n, dtype=int)
            frame[np.lexsort((values, slice_id))] = np.tile(np.arange(nt), nz)
            return frame, name
        # A key constant at each slice position is no frame clock (GE's per-slice TriggerTime; an acquisition time
        # per location): skipped. One that repeats only partly at a position is two images of one moment.
        if strict and np.any(distinct < nt) and not np.all(distinct == 1):
            a, b = _first_tie(values, slice_id, names)
            raise InputError(f"the series in '{directory}' holds one slice twice at {name} "
                             f"{headers[a].get(_KEY_FIELDS[name], '?')}: '{names[a]}' and '{names[b]}' lie at the same "
                             "position (the series copied with other SOPInstanceUIDs, or images of another kind in "
                             "it); keep one copy of each image in the folder")
    a, b = _first_tie(instance if np.all(np.isfinite(instance)) else np.zeros(n), slice_id, names)
    raise InputError(f"the frames of the series in '{directory}' cannot be told apart: '{names[a]}' and '{names[b]}' "
                     "lie at one slice position and no TemporalPositionIdentifier, acquisition time or InstanceNumber "
                     "orders them; remove duplicate files, or export the series with its timing (or convert it with "
                     "dcm2niix)")


def _describe_steps(gaps: np.ndarray) -> str:
    """Slice steps in a few words: all of them when few, else the usual step and the first odd ones."""
    if gaps.size <= 8:
        return f"steps {np.round(gaps, 3).tolist()} mm"
    usual = float(np.median(gaps))
    odd = np.flatnonzero(np.abs(gaps - usual) > max(POSITION_TOL_MM, 1e-2 * usual))
    shown = ", ".join(f"{gaps[i]:.3g} mm after slice {i + 1}" for i in odd[:3])
    return f"{gaps.size} steps of {usual:.3g} mm except {odd.size}: {shown}{', ...' if odd.size > 3 else ''}"


def _rounded_steps(steps: np.ndarray) -> bool:
    """Frame steps of a whole-second clock that differ by one second (1, 2, 1, 2 ... or 0, 1, 1, 0 ...): the
    rounding of a frame interval that is not a whole number of seconds."""
    values = np.unique(np.round(steps))
    return values.size > 1 and bool(np.any(np.diff(values) == 1))


def _uniform_intervals(start: np.ndarray) -> tuple[float, float] | None:
    """The frame intervals dt (lo, hi) for which some offset a gives floor(a + k dt) = start[k] - start[0] for every
    frame k (truncated or rounded whole-second times of a uniform series); None when none does."""
    t = start - start[0]
    k = np.arange(t.size)
    dk = k[None, :] - k[:, None]
    dt = t[None, :] - t[:, None]
    later = dk > 0
    lo, hi = float(((dt - 1) / np.where(later, dk, 1))[later].max()), float(((dt + 1) / np.where(later, dk, 1))[later].min())
    return (lo, hi) if lo < hi else None


def _frame_times(headers, grid, repetition_time) -> tuple[np.ndarray | None, str, tuple[str, str] | None]:
    """(times, their source, None) or (None, why, (what makes the clock unusable, a hint) or None)."""
    if grid.shape[0] < 2:
        return None, "single frame", None
    unusable = None
    for name, clock in _clocks(headers):
        per_slice = clock[grid]  # (frames, slices)
        start = per_slice.min(axis=1)  # a frame starts with its first acquired slice
        if _whole_seconds(clock) and _rounded_steps(np.diff(start)):
            unusable = unusable or _coarse_clock(name, start, repetition_time)
            continue
        if np.all(np.diff(per_slice, axis=0) > 0):  # the clock moves on at every slice position
            return start - start[0], name, None
    if unusable:
        return None, f"unknown: {unusable[0]}", unusable
    return None, "unknown (no per-frame clock in the headers)", None


def _coarse_clock(name: str, start: np.ndarray, repetition_time: float | None) -> tuple[str, str]:
    steps = np.unique(np.round(np.diff(start))).astype(int)
    span = _uniform_intervals(start)
    interval = (span[0] + span[1]) / 2 if span else (start[-1] - start[0]) / (start.size - 1)
    shown = " and ".join(str(v) for v in steps[:3]) + (" ..." if steps.size > 3 else "")
    why = (f"the DICOM {name} has whole-second resolution (frame steps of {shown} s), too coarse for frames "
           f"about {interval:.2g} s apart")
    hint = ""
    if repetition_time and span and span[0] - 1e-6 <= repetition_time <= span[1] + 1e-6:
        hint = f"RepetitionTime {repetition_time:g} s fits these times"
    return why, hint


#: Slice times that differ from frame to frame by more than this [s] (beyond the clocks' 1-2.5 ms rounding) are no
#: fixed slice order within the frame: left unknown rather than used.
SLICE_TIME_JITTER_S = 0.01


def _slice_times(headers, grid, time_source: str, directory) -> tuple[dict | None, str]:
    """The acquisition time of each slice within its frame from the clock that gave the frame times
    (``Acquisition.extra['slice_timing']``: BIDS SliceTiming order along k, the slices sorted along the normal), and
    why not when not: a whole-second clock, a clock that gave no frame times, slice times that change from frame
    to frame. All zeros for a series whose slices share each frame's time (a 3D acquisition)."""
    if grid.shape[0] < 2:
        return None, "single frame"
    clock = dict(_clocks(headers)).get(time_source)
    if clock is None:
        return None, f"no per-slice clock ({time_source})"
    if _whole_seconds(clock) and time_source in ("AcquisitionTime", "ContentTime", "AcquisitionDateTime"):
        return None, f"the DICOM {time_source} has whole-second resolution"
    per_slice = clock[grid]  # (frames, slices)
    offsets = per_slice - per_slice.min(axis=1, keepdims=True)
    typical = np.median(offsets, axis=0)
    jitter = float(np.abs(offsets - typical).max())
    if jitter > SLICE_TIME_JITTER_S:
        return None, (f"the slices' {time_source} within a frame changes from frame to frame by up to {jitter:.3g} s "
                      "(no fixed slice order)")
    return {"times_s": [round(float(t), 6) for t in typical], "direction": "k",
            "source": f"the DICOM {time_source} of each slice within its frame in '{directory}'"}, time_source
