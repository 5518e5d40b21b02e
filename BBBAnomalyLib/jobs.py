"""A pipeline run as a job: a JSON file in, a result folder and JSON-line events out.

The Slicer panel writes its inputs to files, describes the run as a :class:`Job`, and hands it
to a runner. Two runners share one interface (``start``, ``poll``, ``cancel``, ``finished``):

* :class:`WorkerProcess` runs ``python -m BBBAnomalyLib.worker JOB.json`` in a child process
  (PythonSlicer inside Slicer), so the GUI stays responsive and Cancel can stop it at any time;
* :class:`InProcessRunner` runs the same job synchronously in this process (tests, self-tests,
  scripting).

Events are dicts with an ``event`` key: ``progress`` (fraction, message), ``done`` (output_dir,
maps, warnings), ``error`` (message, kind = "input" | "internal", log) and ``cancelled``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import CancelledError, InputError

FINAL_EVENTS = ("done", "error", "cancelled")


@dataclass
class Job:
    pipeline: str  # a name in pipelines.PIPELINES
    inputs: dict[str, str]  # input key -> file (NRRD/NIfTI) written by the caller
    parameters: dict = field(default_factory=dict)  # fields of the pipeline's parameter dataclass
    output_dir: str = ""
    overwrite: bool = False
    suffix: str = ".nrrd"  # NRRD keeps float64 geometry exactly (NIfTI-1 stores float32)
    save_curves: bool = True  # curves.npz for the panel's curve plots
    torch_threads: int | None = None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=1)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Job":
        try:
            with open(path, encoding="utf-8") as fh:
                return cls(**json.load(fh))
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot read job file {path}: {exc}") from None


def run_job(job: Job, progress=None) -> dict:
    """Run a job in this process; returns the ``done`` event. Raises InputError / CancelledError."""
    from .io import read_volume
    from .pipelines import InputRole, get_pipeline

    spec = get_pipeline(job.pipeline)
    if not job.output_dir:
        raise InputError("the job has no output folder")
    report = progress or (lambda fraction, message: None)
    report(0.0, "reading the inputs")
    volumes = {}
    for key, path in job.inputs.items():
        spec.input(key)  # unknown keys are an error
        volumes[key] = read_volume(path)
    for key, vol in volumes.items():
        role = spec.input(key).role
        if role is InputRole.REGION and vol.is_4d and vol.n_frames > 1:
            raise InputError(f"the {spec.input(key).label} must be a 3D mask")
    options = dict(spec.extra.get("curve_options", {})) if job.save_curves else {}
    if job.torch_threads:
        import torch

        torch.set_num_threads(int(job.torch_threads))
    result = spec.run(volumes, job.parameters, progress=progress, **options)
    curves = result.curves() if job.save_curves else None
    out = result.write(job.output_dir, overwrite=job.overwrite, suffix=job.suffix)
    if curves is not None:  # a pipeline may have no curves to show (result.curves() is None)
        tmp = out / ".curves.partial.npz"
        curves.save(tmp)
        os.replace(tmp, out / "curves.npz")
    return {"event": "done", "output_dir": str(out), "maps": list(result.maps),
            "warnings": list(result.report.get("warnings", []))}


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
