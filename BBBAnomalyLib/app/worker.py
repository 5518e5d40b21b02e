"""The background worker: ``python -m BBBAnomalyLib.app.worker JOB.json``, or warm: ``--wait``.

Started by the Slicer panel (in a PythonSlicer child process) to run one pipeline job while the
GUI stays responsive. It reads the job (see :class:`BBBAnomalyLib.app.jobs.Job`), runs it, and
writes one JSON object per line on stdout.

**Warm** (``python -m BBBAnomalyLib.app.worker --wait [--preload PIPELINE]``): the panel starts the
worker before the user presses Apply. It imports what a run needs (numpy, scipy, SimpleITK, the
library, the pipeline's own modules, torch where the pipeline needs it), says ``ready`` and waits for one line on its
stdin: the path of a job file. Then it runs that job exactly as ``worker JOB.json`` would, and
exits: one job per process, so nothing of a run outlives it and Cancel still ends a process. An
empty line or the end of stdin (the panel closed it, or Slicer has gone) ends it without a run.

  {"event": "ready", "pid": 12345, "python": "...", "modules": [...]}  (warm only: imports done, waiting)
  {"event": "started", "pid": 12345, "python": "...", "priority": "nice 5"}   (first: the pid the panel's
                                                         Cancel must end; the worker runs below the GUI's priority)
  {"event": "log", "message": "device: CUDA (NVIDIA ...)"}  (lines for the panel's log box)
  {"event": "progress", "fraction": 0.42, "message": "deconvolving (osvd)"}
  {"event": "maps", "output_dir": "...", "maps": ["cbv", ...], "warnings": [...]}  (the panel's output:
                                                         maps complete, curves being written)
  {"event": "done", "output_dir": "...", "maps": ["cbv", ...], "warnings": [...], "curves": "..." or null}
  {"event": "error", "kind": "input", "message": "the AIF mask is empty ..."}
  {"event": "cancelled"}                                  (+ "published": [...] when a result folder was already
                                                         complete: a cancel held while it was put in place)

A user error (bad input) is one readable message (kind "input"); anything else is kind
"internal", with the traceback in stderr (the runner sends it to worker.log). SIGTERM cancels:
the run stops, the partial output folder is removed, and the worker exits with status 130.
The compute device is described here, in the worker, because that imports torch (seconds):
never in the panel's GUI thread.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback


class JsonLinePrinter:
    """Progress callback that writes JSON lines, at most every 0.1 s unless the message changes."""

    def __init__(self, stream=None, min_interval: float = 0.1):
        self.stream = stream or sys.stdout
        self.min_interval = min_interval
        self._last = (0.0, None)

    def emit(self, event: dict) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.stream.flush()

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        last_time, last_message = self._last
        if message == last_message and now - last_time < self.min_interval and fraction < 1.0:
            return
        self._last = (now, message)
        self.emit({"event": "progress", "fraction": round(float(fraction), 4), "message": str(message)})


def _cancel(signum, frame):
    from ..core.errors import CancelledError

    raise CancelledError("cancelled by the user")


def describe_device(job) -> str | None:
    """The device a torch pipeline will use ("CPU", "CUDA (NVIDIA H100 ...)"); None when the run
    does not use torch (nothing is imported then)."""
    from .pipelines import get_pipeline

    try:
        spec = get_pipeline(job.pipeline)
    except Exception:  # noqa: BLE001 - run_job reports an unknown pipeline properly
        return None
    if not spec.uses_device or not spec.torch_needed(job.parameters):
        return None
    from ..core.devices import device_summary

    try:
        return f"{job.parameters.get('device', 'auto')}; {device_summary()}"
    except Exception as exc:  # noqa: BLE001 - a device problem is reported by the run itself
        return f"unknown ({type(exc).__name__}: {exc})"


def preload(pipeline: str | None) -> tuple[list[str], list[str]]:
    """Import what a run of ``pipeline`` will need, before it is asked for (the warm worker): the
    I/O stack, the pipeline's own modules and those it imports while running (its spec's
    ``extra["preload"]``), and torch for the pipelines that need it (``needs_torch``: seconds of
    import that would otherwise follow Apply). Returns (modules imported, what could not be
    imported: a package not installed yet; the run itself then reports it properly)."""
    import importlib

    modules = ["numpy", "scipy.ndimage", "SimpleITK", "threadpoolctl", "BBBAnomalyLib.io", "BBBAnomalyLib.app.jobs",
               "BBBAnomalyLib.app.handover", "BBBAnomalyLib.app.curves", "BBBAnomalyLib.core.outputs",
               "BBBAnomalyLib.core.report", "BBBAnomalyLib.core.checks"]
    failed = []
    if pipeline:
        try:
            from .pipelines import get_pipeline

            spec = get_pipeline(pipeline)
            if spec.available:
                modules += [spec.runner.split(":")[0], spec.parameters_class.split(":")[0]]
                modules += list(spec.extra.get("preload", ()))
                if spec.needs_torch:
                    modules.append("torch")
        except Exception as exc:  # noqa: BLE001 - an unknown pipeline is the job's error, not ours
            failed.append(f"{pipeline}: {exc}")
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - e.g. a package not installed yet
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    for line in failed:
        print(f"preload: {line}", file=sys.stderr, flush=True)
    return done, failed


def _wait_for_job(argv: list[str], printer: JsonLinePrinter) -> str | None:
    """Warm start: preload, say ``ready``, and read the job file's path from stdin (None: no job)."""
    pipeline = None
    if len(argv) == 3 and argv[1] == "--preload":
        pipeline = argv[2]
    elif len(argv) != 1:
        return "usage"
    modules, _failed = preload(pipeline)
    printer.emit({"event": "ready", "pid": os.getpid(), "python": sys.executable, "modules": modules})
    line = sys.stdin.readline()
    return line.strip() or None


USAGE = "usage: python -m BBBAnomalyLib.app.worker JOB.json, or --wait [--preload PIPELINE]"


#: How far below Slicer the worker process runs (a POSIX nice increment; "below normal" on Windows): the run takes
#: the CPU time the GUI leaves, so the views stay responsive while it computes on every core. On an idle machine
#: it changes nothing (nothing else wants the cores).
WORKER_NICE = 5
#: This process's priority as set when it started as a program (``lower_priority``); None when ``main`` is called
#: in-process (tests, the in-process runner), which must not lower its caller's priority.
PRIORITY: str | None = None


def lower_priority(increment: int = WORKER_NICE) -> str:
    """Lower this process's CPU priority; returns what it is now ("nice 5", "below normal", or "normal" where the
    platform refused). A process cannot raise it again without privileges: call it only in the worker's own process."""
    try:
        if hasattr(os, "nice"):
            return f"nice {os.nice(increment)}"
        if sys.platform == "win32":
            import ctypes

            kernel32 = ctypes.windll.kernel32
            if kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), 0x00004000):  # BELOW_NORMAL_PRIORITY_CLASS
                return "below normal"
    except (OSError, AttributeError):
        pass
    return "normal"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    printer = JsonLinePrinter()
    warm = bool(argv) and argv[0] == "--wait"
    if not warm and len(argv) != 1:
        printer.emit({"event": "error", "kind": "input", "message": USAGE})
        return 2
    signal.signal(signal.SIGTERM, _cancel)
    if hasattr(signal, "SIGBREAK"):  # Windows console break
        signal.signal(signal.SIGBREAK, _cancel)
    from ..core.errors import CancelledError, InputError

    if warm:
        try:
            job_file = _wait_for_job(argv, printer)
        except (CancelledError, KeyboardInterrupt):  # ended while waiting: nothing ran
            return 130
        if job_file == "usage":
            printer.emit({"event": "error", "kind": "input", "message": USAGE})
            return 2
        if job_file is None:  # the panel closed our stdin without a job (or has gone)
            return 0
        argv = [job_file]
    from ..core import outputs
    from .jobs import Job, run_job

    started = {"event": "started", "pid": os.getpid(), "python": sys.executable}
    if PRIORITY is not None:
        started["priority"] = PRIORITY
    printer.emit(started)
    try:
        job = Job.load(argv[0])
        device = describe_device(job)
        if device:
            printer.emit({"event": "log", "message": f"device: {device}"})
        printer.emit(run_job(job, printer, emit=printer.emit))
        return 0
    except InputError as exc:
        printer.emit({"event": "error", "kind": "input", "message": str(exc)})
        return 2
    except (CancelledError, KeyboardInterrupt):
        # a cancel that came after a folder was complete says which (the runner passes it on to the panel)
        printer.emit({"event": "cancelled", **({"published": [str(p) for p in outputs.PUBLISHED]}
                                                if outputs.PUBLISHED else {})})
        return 130
    except Exception as exc:  # noqa: BLE001 - reported to the panel, traceback to the log
        traceback.print_exc(file=sys.stderr)
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        printer.emit({"event": "error", "kind": "internal", "message": f"{type(exc).__name__}: {message}"})
        return 1


if __name__ == "__main__":
    PRIORITY = lower_priority()  # this process only: below the GUI that started it
    sys.exit(main())
