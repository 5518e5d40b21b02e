"""A pipeline run as a job: a JSON file in, a result folder and JSON-line events out.

The Slicer panel writes its inputs to files, describes the run as a :class:`Job`, and hands it
to a runner. Two runners share one interface (``start``, ``poll``, ``cancel``, ``finished``):

* :class:`WorkerProcess` runs ``python -m BBBAnomalyLib.worker JOB.json`` in a child process
  (PythonSlicer inside Slicer), so the GUI stays responsive and Cancel can stop it at any time;
* :class:`InProcessRunner` runs the same job synchronously in this process (tests, self-tests,
  scripting).

Events are dicts with an ``event`` key: ``progress`` (fraction, message), ``done`` (output_dir,
maps, warnings), ``error`` (message, kind = "input" | "internal", log) and ``cancelled``.
The runners live in :mod:`BBBAnomalyLib.runners` (re-exported here).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InputError

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


from .runners import InProcessRunner, WorkerProcess  # noqa: E402,F401  (re-exported; runners import Job lazily)
