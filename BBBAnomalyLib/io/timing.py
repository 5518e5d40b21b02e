"""Frame times from text files, and overriding the times a reader found.

Many DCE/DSC exports carry no usable timing (NIfTI with pixdim[4] = 1, sequences numbered by
frame), so the user supplies it: a times file, explicit times, or a frame interval. Times are
validated here once, with messages that say which frame is wrong, because a silently wrong
time axis gives plausible-looking but wrong Ktrans/CBF.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.volume import Volume
from ._common import check_times

#: Plausible timing of a dynamic (DSC/DCE) series. Outside these the numbers are almost surely in
#: the wrong unit (ms) or mistyped, and a silently wrong time axis gives CBF ~1e-6 or asks a
#: resampling grid for terabytes: refused with a message rather than computed.
MIN_FRAME_INTERVAL_S = 0.05
MAX_FRAME_INTERVAL_S = 120.0
MAX_DURATION_S = 4 * 3600.0
#: A single gap longer than this many median intervals (and than the longest plausible interval)
#: is taken for one mistyped frame time.
MAX_GAP_RATIO = 50.0

_MS_HEADER = re.compile(r"(^|[^a-z])(ms|msec|millisec\w*)([^a-z]|$)")


def read_times(path) -> np.ndarray:
    """Frame times in seconds from a text/CSV file.

    Accepted: one time per line, or values separated by commas, semicolons or whitespace. A
    first line that is not numeric is a header and is skipped; ``#`` starts a comment. With
    several columns per line and a header, the column whose name contains ``time`` (or
    ``onset``) is used. A header naming milliseconds (``time_ms``, ``time (ms)``) converts to s.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"times file '{path}' not found; give a text file with one frame time (s) per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"could not read times file '{path}' as text: {e}") from e
    rows = []  # (line number, tokens)
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = [t for t in re.split(r"[,;\s]+", line.split("#", 1)[0].strip()) if t]
        if tokens:
            rows.append((number, tokens))
    if not rows:
        raise InputError(f"times file '{path}' is empty; give one frame time in seconds per line")
    header = None
    if not _is_number(rows[0][1][0]):
        header, rows = [t.lower() for t in rows[0][1]], rows[1:]
    if not rows:
        raise InputError(f"times file '{path}' has a header but no times")
    column = None
    if header and len(header) > 1:  # a table: take its time column
        matches = [i for i, h in enumerate(header) if "time" in h or "onset" in h]
        if len(matches) != 1 or any(len(t) != len(header) for _, t in rows):
            raise InputError(
                f"times file '{path}' has columns {header} but not exactly one named 'time' with a value "
                "on every line; give one frame time (s) per line"
            )
        column = matches[0]
    values = []
    for number, tokens in rows:
        for token in [tokens[column]] if column is not None else tokens:
            if not _is_number(token):
                raise InputError(
                    f"times file '{path}', line {number}: cannot read '{token}' as a number of seconds; "
                    "write one number per line (a single header line is allowed)"
                )
            values.append(float(token))
    scale = 1e-3 if header and any(_MS_HEADER.search(h) for h in header) else 1.0
    return check_times(np.asarray(values) * scale, f"times file '{path}'")


def check_dynamic_timing(times, what: str) -> np.ndarray:
    """Frame times that a dynamic series can plausibly have, else one InputError line saying what was
    read and how to fix it (``--frame-interval SECONDS`` or ``--times FILE``).

    Checked: strictly increasing and finite (:func:`check_times`), a median interval within
    0.05-120 s, a duration within 4 h, and no single gap over both 50 median intervals and 120 s.
    """
    t = check_times(times, what)
    if t.size < 2:
        return t
    steps = np.diff(t)
    dt = float(np.median(steps))
    fix = "give the right --frame-interval SECONDS or --times FILE (one time per frame, in seconds)"
    if dt > MAX_FRAME_INTERVAL_S:
        ms = dt / 1000
        hint = (f"; if they are milliseconds, use --frame-interval {ms:g}"
                if MIN_FRAME_INTERVAL_S <= ms <= MAX_FRAME_INTERVAL_S else "")
        raise InputError(f"{what}: frames are {dt:g} s apart, outside the {MIN_FRAME_INTERVAL_S:g}-"
                         f"{MAX_FRAME_INTERVAL_S:g} s of a dynamic series{hint}; {fix}")
    if dt < MIN_FRAME_INTERVAL_S:
        raise InputError(f"{what}: frames are {dt:g} s apart, outside the {MIN_FRAME_INTERVAL_S:g}-"
                         f"{MAX_FRAME_INTERVAL_S:g} s of a dynamic series (minutes instead of seconds?); {fix}")
    duration = float(t[-1] - t[0])
    if duration > MAX_DURATION_S:
        raise InputError(f"{what}: the series would last {duration:g} s ({duration / 3600:.3g} h), more than "
                         f"{MAX_DURATION_S / 3600:g} h; {fix}")
    worst = int(np.argmax(steps))
    if steps[worst] > MAX_GAP_RATIO * dt and steps[worst] > MAX_FRAME_INTERVAL_S:
        raise InputError(f"{what}: frame {worst + 1} is at {t[worst + 1]:g} s, {steps[worst]:g} s after frame {worst} "
                         f"while frames are {dt:g} s apart elsewhere: a mistyped frame time? {fix}")
    return t


def missing_times_message(volume: Volume, what: str) -> str:
    """The line for a dynamic series without frame times: why the file's clock was not usable when the reader
    knows (``acquisition.extra["frame_times_unusable"]``, e.g. a DICOM AcquisitionTime in whole seconds), and
    how to give the timing."""
    extra = getattr(volume.acquisition, "extra", None) or {}
    why = extra.get("frame_times_unusable")
    if why:
        hint = extra.get("frame_interval_hint")
        return (f"{what} has no usable frame times: {why}; give --frame-interval SECONDS"
                f"{f' ({hint})' if hint else ''} or --times FILE")
    return f"{what} has no frame times; give --times FILE or --frame-interval SECONDS"


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def override_times(volume: Volume, times, frame_interval, source: str) -> Volume:
    """Apply user-given `times` or `frame_interval` (s) to a read volume; validate what is kept.

    Without an override the file's own times must be increasing; with one, the file's times are
    ignored (that is the point of overriding bad or missing header timing).
    """
    if times is not None and frame_interval is not None:
        raise InputError("give either frame times or a frame interval, not both")
    if times is None and frame_interval is None:
        if volume.times is not None:
            check_times(volume.times, f"frame times stored in '{source}' (override with times= or frame_interval=)")
        return volume
    if not volume.is_4d:
        raise InputError(
            f"'{source}' is a 3D volume of shape {volume.shape}; frame times only apply to a 4D series"
        )
    n = volume.n_frames
    if times is not None:
        if isinstance(times, (str, Path)):
            t = read_times(times)
        else:
            t = check_times(times, "the given frame times")
        if t.size != n:
            raise InputError(
                f"{t.size} frame times given but '{source}' has {n} frames (shape {volume.shape}); "
                "give exactly one time per frame"
            )
    else:
        try:
            dt = float(frame_interval)
        except (TypeError, ValueError):
            raise InputError(f"frame interval must be a number of seconds, got {frame_interval!r}") from None
        if not np.isfinite(dt) or dt <= 0:
            raise InputError(f"frame interval must be a positive number of seconds, got {frame_interval!r}")
        t = np.arange(n) * dt
    # The user told us the timing of a dynamic series: it must be plausible (ms for s, typos).
    what = f"--frame-interval {frame_interval!r}" if times is None else (
        f"times file '{times}'" if isinstance(times, (str, Path)) else "the given frame times")
    check_dynamic_timing(t, what)
    return volume.with_times(t)  # a lazily read series stays unread
