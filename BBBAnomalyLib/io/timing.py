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

from ..errors import InputError
from ..volume import Volume
from ._common import check_times

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
            f"'{source}' is a 3D volume of shape {volume.data.shape}; frame times only apply to a 4D series"
        )
    n = volume.n_frames
    if times is not None:
        if isinstance(times, (str, Path)):
            t = read_times(times)
        else:
            t = check_times(times, "the given frame times")
        if t.size != n:
            raise InputError(
                f"{t.size} frame times given but '{source}' has {n} frames (shape {volume.data.shape}); "
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
    return Volume(volume.data, volume.affine, t, volume.acquisition)
