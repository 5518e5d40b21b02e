"""Memory between a pipeline's steps (issue 17: peak RSS <= 2x the input series)."""

from __future__ import annotations

import sys


def release_freed_memory() -> None:
    """Give freed heap memory back to the operating system: glibc's ``malloc_trim(0)``; nothing elsewhere.

    glibc keeps freed memory below its dynamic thresholds resident (the mmap threshold rises to the largest
    block freed, up to 32 MiB, and the trim threshold to twice that), and later allocations of other sizes
    do not all fit the holes: on the whole-brain DCE object each 16,384-row RLS inference block left 2-3 MiB
    more resident and the step 35 MiB (0.29x the series), which the fit after it then added to. Called
    between blocks and steps (a few milliseconds), never inside a numeric kernel; it changes no value.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass
