"""Value checks shared by the pipelines' parameter dataclasses.

A parameter reaches a pipeline from the command line, a worker job (JSON: any type), the Slicer
panel or Python. Checking it in the dataclass's ``__post_init__`` means every one of those gets
the same one-line :class:`~BBBAnomalyLib.core.errors.InputError`: ``--kh nan`` must not become an
all-NaN map, ``--max-delay 1e6`` must not ask for 769 GiB, ``--threads -2`` must not be a
traceback from torch. Comparisons alone let NaN through (``nan <= 0`` is False), hence these.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

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


def parameters(params, cls, function: str):
    """A private copy of a pipeline's parameter dataclass (None: the defaults); anything else (a dict, a
    method name) is one InputError instead of an AttributeError from deep inside the run."""
    if params is None:
        return cls()
    if not isinstance(params, cls):
        raise InputError(f"{function} takes its parameters as {cls.__name__}(...), got {type(params).__name__}; "
                         f"e.g. {function}(..., {cls.__name__}(...)) (fields: see help({cls.__name__}))")
    return dataclasses.replace(params)


def curve(values, what: str):
    """A 1D finite float64 curve (an AIF, frame times), else InputError naming ``what``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"the {what} must be a sequence of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        raise InputError(f"the {what} must be one curve, a 1D array; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"the {what} holds NaN or infinite values; give finite numbers")
    return arr


def aif_and_times(aif, times):
    """A plasma AIF (T,) and its frame times (T,) in s, strictly increasing, else InputError."""
    aif, times = curve(aif, "AIF"), curve(times, "frame times")
    if aif.size != times.size:
        raise InputError(f"the AIF has {aif.size} values but {times.size} frame times were given; give one AIF "
                         "value per frame")
    if np.any(np.diff(times) <= 0):
        raise InputError("the frame times are not strictly increasing; give them in seconds, in acquisition order")
    return aif, times


def curve_matrix(curves, n_frames: int):
    """Curves as an (n_voxels, n_frames) real array (a list is accepted), else InputError."""
    try:
        arr = np.asarray(curves)
    except ValueError:
        raise InputError(f"curves must be an (n_voxels, {n_frames}) array of numbers") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"curves must be an (n_voxels, {n_frames}) array of real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != n_frames:
        hint = "; for one curve pass curves[None]" if arr.ndim == 1 and arr.size == n_frames else ""
        raise InputError(f"curves must be an (n_voxels, {n_frames}) array, one row per voxel and one column per "
                         f"frame; got shape {arr.shape}{hint}")
    return arr
