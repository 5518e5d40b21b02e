"""Progress reporting for long runs: a callable ``progress(fraction, message)``.

Pipelines call it; the command line prints it (this module), the Slicer worker turns it into
JSON lines. Raising :class:`~BBBAnomalyLib.core.errors.CancelledError` from it stops a run cleanly.
"""

from __future__ import annotations

import sys
import time


class ConsolePrinter:
    """Prints ``[ 42%] message (3.1 s)`` to stderr when the message changes or 10 % has passed."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.start = time.perf_counter()
        self._last = (-1.0, "")

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        last_fraction, last_message = self._last
        if message == last_message and fraction - last_fraction < 0.1 and fraction < 1.0:
            return
        self._last = (fraction, message)
        elapsed = time.perf_counter() - self.start
        # one write of the whole line: print() writes the text and its newline separately, and a Ctrl-C or SIGTERM
        # handled between the two glued "cancelled; nothing was written" to the end of this progress line
        self.stream.write(f"[{100 * fraction:3.0f}%] {message} ({elapsed:.1f} s)\n")
        self.stream.flush()


def sub_progress(progress, start: float, stop: float):
    """Map a stage's [0, 1] progress onto [start, stop] of the caller's bar."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (stop - start) * fraction, message)
