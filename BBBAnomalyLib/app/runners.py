"""Runners for a :class:`~BBBAnomalyLib.app.jobs.Job`: in this process, or in a background worker process.

Both share one interface (``start``, ``poll``, ``cancel``, ``finished``); events are the dicts
described in :mod:`BBBAnomalyLib.app.jobs`, plus ``started`` (pid of the process doing the work) and
``log`` (a line for the panel's log box) from the worker.

**Cancel is final.** Once ``cancel()`` is called, ``poll()`` drops every later event, a ``done``
included, and ends with exactly one ``cancelled``: whatever the worker manages to print while
dying, the panel imports nothing after Cancel.

**Cancel ends the whole process tree.** Inside Slicer the interpreter is ``PythonSlicer``, the CTK
launcher: it sets up the environment and starts ``python-real`` as its child, and it does not
forward signals, so terminating the launcher alone leaves the worker running (SlicerMONAIAuto3DSeg
kills ``psutil.Process(pid).children(recursive=True)`` for the same reason). The worker is
therefore started in a new session / process group and cancel signals the group (POSIX) or the
tree (``taskkill /T`` on Windows); what still lives after a grace period is killed.

**Warm workers.** :meth:`WorkerProcess.warm` starts the worker before there is a job
(``worker --wait``): it does its imports while the user is still choosing inputs, then waits for
a job file's path on its stdin (:meth:`WorkerProcess.submit`). It is the same kind of child (own
session / process group, under the launcher inside Slicer; CTK's launcher forwards stdin to
``python-real``), its ``ready`` event gives the pid Cancel must end, and it runs one job and
exits, so Cancel and the events behave exactly as for a worker started with its job.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import CancelledError, InputError
from ..core.processes import pid_alive

if TYPE_CHECKING:
    from .jobs import Job

FINAL_EVENTS = ("done", "error", "cancelled")
#: Seconds a cancelled worker gets to remove its partial output before it is killed.
CANCEL_GRACE_S = 5.0
# Windows process-creation flags (numbers, so this module imports on every platform).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


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

            self.result = run_job(self.job, progress, emit=self._events.append)
            self._events.append(self.result)
        except InputError as exc:
            self._events.append({"event": "error", "kind": "input", "message": str(exc)})
        except CancelledError:
            self._events.append({"event": "cancelled"})
        except Exception as exc:  # noqa: BLE001 - as the worker reports it: an event, never a traceback in Slicer
            import traceback

            traceback.print_exc(file=sys.stderr)  # for the Python console, as the worker's goes to worker.log
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            self._events.append({"event": "error", "kind": "internal", "message": f"{type(exc).__name__}: {message}"})
        return self

    def poll(self) -> list[dict]:
        events, self._events = self._events, []
        return events

    def cancel(self) -> None:  # nothing runs after start() returned
        pass

    @property
    def finished(self) -> bool:
        return True


def popen_options(os_name: str | None = None) -> dict:
    """Keyword arguments for ``subprocess.Popen`` that start the worker hidden and killable as a tree.

    Windows: no console window (the flags ``slicer.util.launchConsoleProcess`` sets through
    STARTUPINFO, plus CREATE_NO_WINDOW) and a new process group. POSIX: a new session, so that
    the launcher and every process it starts share one process group that cancel can signal.
    """
    if (os_name or os.name) == "nt":
        options = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
        if hasattr(subprocess, "STARTUPINFO"):
            info = subprocess.STARTUPINFO()
            info.dwFlags |= getattr(subprocess, "STARTF_USESHOWWINDOW", 1)
            info.wShowWindow = 0  # SW_HIDE
            options["startupinfo"] = info
        return options
    return {"start_new_session": True}


def kill_tree(root_pid: int, worker_pid: int | None = None, force: bool = False) -> None:
    """Signal the process tree started as ``root_pid`` (and ``worker_pid``, the process that said it
    does the work, wherever it is): SIGTERM first (the worker then removes its partial output and
    says ``cancelled``), SIGKILL with ``force``. Windows has no SIGTERM for a windowless tree:
    ``taskkill /T /F`` ends it."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        for pid in {root_pid, worker_pid} - {None}:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True,
                           creationflags=CREATE_NO_WINDOW)
        return
    sig = signal.SIGKILL if force else signal.SIGTERM
    try:
        os.killpg(root_pid, sig)  # the session started for the launcher: launcher, python-real, helpers
    except (ProcessLookupError, PermissionError):
        pass
    if worker_pid is not None and worker_pid != root_pid:
        try:
            os.kill(worker_pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class WorkerGone(RuntimeError):
    """A warm worker ended before it was given its job (start a new one)."""


class WorkerProcess:
    """``python -m BBBAnomalyLib.app.worker JOB.json`` in a child process, read without blocking.

    ``python``: the interpreter (PythonSlicer inside Slicer; this interpreter by default); ``env``
    its environment (Slicer's startup environment inside Slicer; this process's by default). The
    child's stderr goes to ``worker.log`` beside the job file, so a traceback never fills a pipe
    or the user's screen; errors arrive as one ``error`` event with a readable message.
    """

    def __init__(self, job: Job | None, job_file: str | Path, python: str | None = None, env: dict | None = None,
                 command: list[str] | None = None):
        self.job = job  # None for a warm worker until submit()
        self.env = env
        self.job_file = Path(job_file)
        self.log_file = self.job_file.with_name("worker.log")
        self.python = python or sys.executable
        #: the command line; by default ``[python, -m, BBBAnomalyLib.app.worker, JOB.json]``
        self.command = command or [self.python, "-m", "BBBAnomalyLib.app.worker", str(self.job_file)]
        self.worker_pid: int | None = None  # the process doing the work (python-real under the launcher)
        self._queue: queue.Queue = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._final: dict | None = None
        self._cancelled = False
        #: result folders the worker reported complete after Cancel was pressed (its events are not passed on)
        self._published: list[str] = []
        self._warm = False
        self.preload: str | None = None  # the pipeline a warm worker imported ahead for
        self.ready: dict | None = None  # a warm worker's "ready" event (pid, modules it imported)
        self._lock = threading.Lock()

    @classmethod
    def warm(cls, work_dir: str | Path, python: str | None = None, env: dict | None = None,
             preload: str | None = None) -> "WorkerProcess":
        """Start a worker that imports ahead and waits for its job (``worker --wait``); give it the
        job with :meth:`submit`. ``work_dir`` (absolute, existing) receives ``job.json`` and
        ``worker.log``; ``preload``: the pipeline whose modules to import while waiting."""
        python = python or sys.executable
        command = [python, "-m", "BBBAnomalyLib.app.worker", "--wait"] + (["--preload", preload] if preload else [])
        runner = cls(None, Path(work_dir).resolve() / "job.json", python, env, command)
        runner._warm = True
        runner.preload = preload
        return runner.start()

    @property
    def prestarted(self) -> bool:
        """Started before its job (warm), rather than with it."""
        return self._warm

    @property
    def work_dir(self) -> Path:
        return self.job_file.parent

    @property
    def idle(self) -> bool:
        """A warm worker still waiting for its job (its process alive, not cancelled)."""
        return (self._warm and self.job is None and not self._cancelled and self._proc is not None
                and self._proc.poll() is None)

    def submit(self, job: Job) -> "WorkerProcess":
        """Give a warm worker its one job: the job file is written and its path sent on stdin.
        Raises :class:`WorkerGone` when the worker has already ended (nothing was handed over)."""
        if not self._warm or self.job is not None:
            raise RuntimeError("submit() is for a warm worker that has no job yet")
        if not self.idle:
            raise WorkerGone("the warm worker has ended")
        job.save(self.job_file)
        try:
            self._proc.stdin.write(str(self.job_file) + "\n")
            self._proc.stdin.flush()
            self._proc.stdin.close()
        except (OSError, ValueError) as exc:  # BrokenPipeError: it ended just now
            raise WorkerGone(f"the warm worker has ended ({exc})") from None
        self.job = job
        return self

    def discard(self) -> None:
        """End a warm worker that will not get a job (panel closed, scene closed): its stdin is
        closed (it exits at once) and its tree signalled like a Cancel."""
        if self._proc is None:
            return
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self.cancel()

    @property
    def pid(self) -> int | None:
        """The directly started process (the launcher inside Slicer)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "WorkerProcess":
        if self.job is not None:
            self.job.save(self.job_file)
        env = dict(self.env if self.env is not None else os.environ)
        lib_parent = str(Path(__file__).resolve().parents[2])  # BBBAnomalyLib's parent: the child imports this very library
        env["PYTHONPATH"] = os.pathsep.join(p for p in (lib_parent, env.get("PYTHONPATH", "")) if p)
        env["PYTHONIOENCODING"] = "utf-8"
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.log_file, "w", encoding="utf-8")
        try:
            self._proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE if self._warm else subprocess.DEVNULL,
                env=env, text=True,
                encoding="utf-8", errors="replace", **popen_options())
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
                if event["event"] in ("started", "ready") and isinstance(event.get("pid"), int):
                    self.worker_pid = event["pid"]
                if event["event"] == "ready":  # the warm worker's imports are done: nothing for the panel
                    self.ready = event
                else:
                    self._queue.put(event)
        self._proc.wait()  # stdout closes when the last process holding it (python-real) has ended
        # python-real closes stdout a moment before it is gone: the final event waits for that.
        deadline = time.monotonic() + CANCEL_GRACE_S
        while self.worker_pid not in (None, self._proc.pid) and pid_alive(self.worker_pid) \
                and time.monotonic() < deadline:
            time.sleep(0.002)
        self._queue.put({"event": "_exit", "code": self._proc.returncode})

    def poll(self) -> list[dict]:
        """Events since the last call (never blocks). Ends with exactly one final event; after
        ``cancel()`` nothing but that final ``cancelled``."""
        events = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return events
            self._take(event, events)

    def _take(self, event: dict, events: list) -> None:
        if self._final is not None:
            return
        if event["event"] == "_exit":
            if self._cancelled:
                self._final = {"event": "cancelled", **({"published": list(self._published)} if self._published else {})}
            else:  # died without saying why (killed, crashed interpreter)
                self._final = {"event": "error", "kind": "internal", "log": str(self.log_file),
                               "message": f"the worker stopped unexpectedly (exit code {event['code']}); "
                                          f"details in {self.log_file}"}
            events.append(self._final)
            return
        if self._cancelled:  # Cancel is final: no progress, no done, no error after it
            # ... but a folder the worker had already completed is there: the final "cancelled" names it
            done = event.get("published", []) if event["event"] == "cancelled" else (
                [event["output_dir"]] if event["event"] in ("maps", "done") and event.get("output_dir") else [])
            self._published += [str(p) for p in done if str(p) not in self._published]
            return
        if event["event"] in FINAL_EVENTS:
            self._final = event
        events.append(event)

    def cancel(self) -> None:
        """Stop the worker and every process it started; nothing it reports afterwards is passed on."""
        with self._lock:
            if self._proc is None or self._final is not None or self._cancelled:
                self._cancelled = self._cancelled or self._proc is not None
                return
            self._cancelled = True
        if self._proc.poll() is None or (self.worker_pid and pid_alive(self.worker_pid)):
            kill_tree(self._proc.pid, self.worker_pid)
            timer = threading.Timer(CANCEL_GRACE_S, self._force_kill)
            timer.daemon = True
            timer.start()

    def _force_kill(self) -> None:
        if self._proc.poll() is None or (self.worker_pid and pid_alive(self.worker_pid)):
            kill_tree(self._proc.pid, self.worker_pid, force=True)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def finished(self) -> bool:
        return self._final is not None

    def wait(self, timeout: float | None = None) -> list[dict]:
        """Block until the worker ends (for scripts and tests); returns all remaining events."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events = []
        while not self.finished:
            try:  # wakes up on the event itself, not on a polling tick
                self._take(self._queue.get(timeout=0.1), events)
            except queue.Empty:
                pass
            if not self.finished and deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"the worker did not finish within {timeout} s")
        return events
