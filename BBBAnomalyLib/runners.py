"""Runners for a :class:`~BBBAnomalyLib.jobs.Job`: in this process, or in a background worker process.

Both share one interface (``start``, ``poll``, ``cancel``, ``finished``); events are the dicts
described in :mod:`BBBAnomalyLib.jobs`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CancelledError, InputError

if TYPE_CHECKING:
    from .jobs import Job

FINAL_EVENTS = ("done", "error", "cancelled")


class InProcessRunner:
    """Runs a job synchronously when started; events are available at once."""

    def __init__(self, job: Job):
        self.job = job
        self._events: list[dict] = []
        self.result: dict | None = None

    def start(self) -> "InProcessRunner":
        def progress(fraction, message):
            self._events.append({"event": "progress", "fraction": float(fraction), "message": str(message)})

        try:
            from .jobs import run_job

            self.result = run_job(self.job, progress)
            self._events.append(self.result)
        except InputError as exc:
            self._events.append({"event": "error", "kind": "input", "message": str(exc)})
        except CancelledError:
            self._events.append({"event": "cancelled"})
        return self

    def poll(self) -> list[dict]:
        events, self._events = self._events, []
        return events

    def cancel(self) -> None:  # nothing runs after start() returned
        pass

    @property
    def finished(self) -> bool:
        return True


class WorkerProcess:
    """``python -m BBBAnomalyLib.worker JOB.json`` in a child process, read without blocking.

    ``python``: the interpreter (PythonSlicer inside Slicer; this interpreter by default); ``env``
    its environment (Slicer's startup environment inside Slicer; this process's by default). The
    child's stderr goes to ``worker.log`` beside the job file, so a traceback never fills a pipe
    or the user's screen; errors arrive as one ``error`` event with a readable message.
    """

    def __init__(self, job: Job, job_file: str | Path, python: str | None = None, env: dict | None = None):
        self.job = job
        self.env = env
        self.job_file = Path(job_file)
        self.log_file = self.job_file.with_name("worker.log")
        self.python = python or sys.executable
        self._queue: queue.Queue = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._final: dict | None = None
        self._cancelled = False

    def start(self) -> "WorkerProcess":
        self.job.save(self.job_file)
        env = dict(self.env if self.env is not None else os.environ)
        lib_parent = str(Path(__file__).resolve().parent.parent)  # so the child imports this very library
        env["PYTHONPATH"] = os.pathsep.join(p for p in (lib_parent, env.get("PYTHONPATH", "")) if p)
        env["PYTHONIOENCODING"] = "utf-8"
        log = open(self.log_file, "w", encoding="utf-8")
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "BBBAnomalyLib.worker", str(self.job_file)], stdout=subprocess.PIPE,
                stderr=log, stdin=subprocess.DEVNULL, env=env, text=True, encoding="utf-8", errors="replace")
        finally:
            log.close()  # the child holds its own handle
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:  # stray prints from a library: keep them out of the event stream
                continue
            if isinstance(event, dict) and "event" in event:
                self._queue.put(event)
        self._proc.wait()
        self._queue.put({"event": "_exit", "code": self._proc.returncode})

    def poll(self) -> list[dict]:
        """Events since the last call (never blocks). Ends with exactly one final event."""
        events = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return events
            if event["event"] == "_exit":
                if self._final is None:  # died without saying why (killed, crashed interpreter)
                    self._final = ({"event": "cancelled"} if self._cancelled else
                                   {"event": "error", "kind": "internal", "log": str(self.log_file),
                                    "message": f"the worker stopped unexpectedly (exit code {event['code']}); "
                                               f"details in {self.log_file}"})
                    events.append(self._final)
                continue
            if event["event"] in FINAL_EVENTS:
                if self._final is not None:
                    continue
                self._final = event
            events.append(event)

    def cancel(self) -> None:
        """Stop the worker; it removes its partial output and reports ``cancelled``."""
        if self._proc is not None and self._proc.poll() is None:
            self._cancelled = True
            self._proc.terminate()

    @property
    def finished(self) -> bool:
        return self._final is not None

    def wait(self, timeout: float | None = None) -> list[dict]:
        """Block until the worker ends (for scripts and tests); returns all remaining events."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        events = []
        while not self.finished:
            events += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"the worker did not finish within {timeout} s")
            time.sleep(0.05)
        return events
