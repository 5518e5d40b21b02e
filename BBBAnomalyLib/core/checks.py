"""Value checks shared by the pipelines' parameter dataclasses.

A parameter reaches a pipeline from the command line, a worker job (JSON: any type), the Slicer
panel or Python. Checking it in the dataclass's ``__post_init__`` means every one of those gets
the same one-line :class:`~BBBAnomalyLib.core.errors.InputError`: ``--kh nan`` must not become an
all-NaN map, ``--max-delay 1e6`` must not ask for 769 GiB, ``--threads -2`` must not be a
traceback from torch. Comparisons alone let NaN through (``nan <= 0`` is False), hence these.
"""

from __future__ import annotations

import math

from .errors import InputError


def number(value, flag: str, low: float, high: float, *, hint: str = "", low_open: bool = False,
           high_open: bool = False) -> float:
    """``value`` as a finite float within [low, high] (open ends where asked), else InputError.

    flag: how the user set it (``--kh``); hint: what a sensible value is (``0.73 clinically``).
    """
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float (10**400)
        raise InputError(f"{flag} must be a number, got {value!r}{'; ' + hint if hint else ''}") from None
    inside = (math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    if not inside:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InputError(f"{flag} must be a finite number in {span}, got {value!r}{'; ' + hint if hint else ''}")
    return v


def integer(value, flag: str, low: int, high: int, *, hint: str = "") -> int:
    """``value`` as an int within [low, high] (bools and non-integral floats refused), else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{flag} must be a whole number, got {value!r}{'; ' + hint if hint else ''}")
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{flag} must be a whole number, got {value!r}{'; ' + hint if hint else ''}") from None
    if not low <= v <= high:
        raise InputError(f"{flag} must lie between {low} and {high}, got {v}{'; ' + hint if hint else ''}")
    return v


def optional_number(value, flag: str, low: float, high: float, **kw) -> float | None:
    return None if value is None else number(value, flag, low, high, **kw)
