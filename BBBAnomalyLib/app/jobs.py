"""A pipeline run as a job: a JSON file in, a result folder and JSON-line events out.

The Slicer panel writes its inputs to files, describes the run as a :class:`Job`, and hands it
to a runner. Two runners share one interface (``start``, ``poll``, ``cancel``, ``finished``):

* :class:`WorkerProcess` runs ``python -m BBBAnomalyLib.app.worker JOB.json`` in a child process
  (PythonSlicer inside Slicer), so the GUI stays responsive and Cancel can stop it at any time;
* :class:`InProcessRunner` runs the same job synchronously in this process (tests, self-tests,
  scripting).

Inputs are NRRD/NIfTI files, DICOM folders (a DSC series folder holding two echoes is dual-echo input,
:mod:`.echoes`), or the raw ``.npy`` arrays the panel hands over
(:mod:`BBBAnomalyLib.app.handover`). ``output_format="volumes"`` writes the pipeline's own result
folder (``<map><suffix>``, masks, report, ``curves.npz``); ``"arrays"`` (the panel) writes what the
panel loads, without compression: ``<map>.npy`` + header, masks and ``report.json``, announced by a
``maps`` event as soon as they are complete, then the curves as memory-mappable arrays in a
folder of their own (:func:`curves_dir`). Every folder is complete or absent.

Events are dicts with an ``event`` key: ``progress`` (fraction, message), ``maps`` (output_dir,
maps, warnings: the maps are complete, the curves follow; arrays output only), ``done``
(output_dir, maps, warnings, curves), ``error`` (message, kind = "input" | "internal", log) and ``cancelled``.
The runners live in :mod:`BBBAnomalyLib.app.runners` (re-exported here).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..core.errors import InputError

FINAL_EVENTS = ("done", "error", "cancelled")


#: File names a job may give its maps: the suffix is appended to map names inside the output folder.
JOB_SUFFIXES = (".nrrd", ".nii.gz", ".nii")
#: "volumes": the pipeline's result files (``suffix``); "arrays": the panel's raw hand-over (see above).
OUTPUT_FORMATS = ("volumes", "arrays")


@dataclass
class Job:
    """One pipeline run. Every field is checked when the job is made or loaded (a job file can come
    from anywhere): paths are absolute, inputs exist, the output folder is not an input's folder,
    and the suffix cannot steer a file out of the output folder."""

    pipeline: str  # a name in pipelines.PIPELINES
    inputs: dict[str, str]  # input key -> file (NRRD/NIfTI) written by the caller
    parameters: dict = field(default_factory=dict)  # fields of the pipeline's parameter dataclass
    output_dir: str = ""
    overwrite: bool = False
    suffix: str = ".nrrd"  # NRRD keeps float64 geometry exactly (NIfTI-1 stores float32)
    save_curves: bool = True  # curves.npz (or the curves folder) for the panel's curve plots
    torch_threads: int | None = None
    output_format: str = "volumes"  # one of OUTPUT_FORMATS

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise InputError (one line) for anything a runner must not act on."""
        if not isinstance(self.pipeline, str) or not self.pipeline:
            raise InputError("the job's 'pipeline' must be a pipeline name such as \"dsc\"")
        if not isinstance(self.inputs, dict) or not self.inputs:
            raise InputError("the job's 'inputs' must be an object {input name: file path}, e.g. "
                             "{\"series\": \"/abs/path/series.nrrd\"}")
        for key, path in self.inputs.items():
            if not isinstance(key, str) or not isinstance(path, str) or not path:
                raise InputError(f"job input {key!r} must be a file path (a string), not {type(path).__name__}")
            if not os.path.isabs(path):
                raise InputError(f"job input {key!r} must be an absolute path, not {path!r}")
            if not _exists(path, f"job input {key!r}"):
                raise InputError(f"job input {key!r}: {path} does not exist")
        if not isinstance(self.parameters, dict):
            raise InputError("the job's 'parameters' must be an object {name: value}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise InputError("the job has no output folder ('output_dir')")
        if not os.path.isabs(self.output_dir):
            raise InputError(f"the job's output_dir must be an absolute path, not {self.output_dir!r} (a relative "
                             "one would depend on the worker's working folder)")
        _exists(self.output_dir, "the job's output_dir")  # a NUL, an over-long name, a symlink loop: one line
        for name, value in self.parameters.items():
            # a weights file given by path resolves like the inputs: a relative one would depend on the worker's
            # working folder (bundled names have no folder part and no .pt)
            if (isinstance(name, str) and name.endswith("weights") and isinstance(value, str)
                    and ("/" in value or "\\" in value or value.endswith(".pt")) and not os.path.isabs(value)):
                raise InputError(f"the job's parameter {name!r} must be a bundled weights name or an absolute path to "
                                 f"a .pt file, not {value!r}")
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(f"the job's output_format {self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        if self.suffix not in JOB_SUFFIXES:
            raise InputError(f"the job's suffix {self.suffix!r} is not one of {', '.join(JOB_SUFFIXES)}")
        for name in ("overwrite", "save_curves"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"the job's {name!r} must be true or false")
        threads = self.torch_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= 1024):
            raise InputError(f"the job's torch_threads must be a whole number from 1 to 1024 (or null), not {threads!r}")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=1)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Job":
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read job file {path}: {exc}") from None
        except RecursionError:  # JSON nested thousands deep: no job looks like that
            raise InputError(f"cannot read job file {path}: it is nested too deeply to be a job") from None
        if not isinstance(data, dict):
            raise InputError(f"job file {path} must hold a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"job file {path} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "pipeline" not in data or "inputs" not in data:
            raise InputError(f"job file {path} needs at least 'pipeline' and 'inputs'")
        return cls(**data)


def _exists(path: str, what: str) -> bool:
    """Whether ``path`` is a file or a folder (False when nothing is there). A path the system cannot even look up
    (a NUL byte, a name too long, a symbolic-link loop, a folder we may not enter) and something that is neither
    (a device, a pipe) are one InputError line naming ``what``."""
    try:
        p = Path(path)
        if p.is_file() or p.is_dir():
            return True
        if p.exists():
            raise InputError(f"{what}: {path} is not a file or a folder (a device or a pipe?)")
        return False
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{what} {path!r} cannot be used: {getattr(exc, 'strerror', None) or exc}") from None


def read_job_input(path: str):
    """A job input as a Volume: a handed-over ``.npy`` array (with its header) or any file
    :func:`BBBAnomalyLib.io.read_volume` reads."""
    try:
        if path.endswith(".npy"):
            from . import handover

            return handover.read_volume(path)
        from ..io import read_volume

        return read_volume(path)
    except PermissionError as exc:  # a folder or file this worker's user may not read
        raise InputError(f"cannot read job input {path}: {exc.strerror or 'permission denied'}; give a file this "
                         "user can read") from None


def curves_dir(output_dir) -> Path:
    """Where the panel's output keeps its curves: ``<output_dir>.curves`` beside the maps, a folder
    of its own (complete or absent), written after the maps are announced."""
    out = Path(output_dir)
    return out.with_name(out.name + ".curves")


def write_arrays(result, job: Job) -> Path:
    """The panel's output folder, complete or absent: ``<map>.npy`` with headers (Slicer's voxel
    order, uncompressed), the masks the run used (as the pipeline's own ``write`` keeps them) and
    ``report.json``."""
    import numpy as np

    from ..core.outputs import atomic_output_dir
    from ..core.report import dump_json
    from ..core.volume import Volume
    from . import handover

    with atomic_output_dir(job.output_dir, overwrite=job.overwrite) as tmp:
        template = next(iter(result.maps.values()))
        for name, volume in result.maps.items():
            handover.write_volume(volume, tmp / f"{name}.npy")
        for name in ("aif_mask", "brain_mask", "tumor_roi"):
            mask = getattr(result, name, None)
            if isinstance(mask, np.ndarray) and name not in result.maps:
                handover.write_volume(Volume(mask, template.affine), tmp / f"{name}.npy")
        dump_json(result.report, tmp / "report.json")
    return Path(job.output_dir).resolve()


def run_job(job: Job, progress=None, emit=None) -> dict:
    """Run a job in this process; returns the ``done`` event. Raises InputError / CancelledError.

    The output folder is claimed before any work (see :mod:`BBBAnomalyLib.core.outputs`).
    ``output_format="volumes"``: the curves (``curves.npz``) are written inside the same
    all-or-nothing folder as the maps. ``"arrays"`` (the panel): the maps folder is written first
    and announced with a ``maps`` event through ``emit`` (the panel loads them at once), then the
    curves go to :func:`curves_dir`, a complete-or-absent folder of their own, and ``done`` names it.
    """
    from ..core.outputs import atomic_output_dir, claim_output_dir
    from .pipelines import InputRole, get_pipeline

    job.validate()  # fields may have been changed after the job was made
    spec = get_pipeline(job.pipeline)
    for key in job.inputs:
        try:
            spec.input(key)
        except KeyError:
            raise InputError(f"the {spec.label} pipeline takes no input named {key!r}; it takes "
                             f"{', '.join(s.key for s in spec.inputs)}") from None
    report = progress or (lambda fraction, message: None)
    with contextlib.ExitStack() as claims:
        claim = claims.enter_context(claim_output_dir(job.output_dir, overwrite=job.overwrite,
                                                      inputs=job.inputs.values()))
        if job.output_format == "arrays" and job.save_curves:
            # the curves' own folder is checked and locked with the maps' before any work: claimed only when they
            # were written, a user's folder there failed the job after its maps were out, and a folder holding an
            # input could be replaced (the inputs were not checked against it)
            claims.enter_context(claim_output_dir(curves_dir(job.output_dir), overwrite=job.overwrite,
                                                  inputs=job.inputs.values()))
        report(0.0, "reading the inputs")
        from .echoes import read_job_inputs

        volumes, input_notes = read_job_inputs(spec, job)  # a dual-echo DICOM folder gives both echoes
        for key, vol in volumes.items():
            role = spec.input(key).role
            if role is InputRole.REGION and vol.is_4d and vol.n_frames > 1:
                raise InputError(f"the {spec.input(key).label} must be a 3D mask")
        options = dict(spec.extra.get("run_options", {}))  # volumes are this run's own: it may free them
        if job.save_curves:
            options.update(spec.extra.get("curve_options", {}))
        if job.torch_threads:
            import torch

            torch.set_num_threads(int(job.torch_threads))
        result = spec.run(volumes, job.parameters, progress=progress, **options)
        del volumes
        if input_notes:  # said in the report as the command line says it (report.json input.second_echo_source)
            result.report.setdefault("input", {}).update(input_notes)
        warnings = list(result.report.get("warnings", []))
        curves_path = None
        if job.output_format == "arrays":
            out = write_arrays(result, job)
            if emit is not None:
                emit({"event": "maps", "output_dir": str(out), "maps": list(result.maps), "warnings": warnings})
            curves = result.curves() if job.save_curves else None
            if curves is not None:  # a pipeline may have no curves to show (result.curves() is None)
                with atomic_output_dir(curves_dir(out), overwrite=job.overwrite) as tmp:
                    curves.save_arrays(tmp)
                curves_path = str(curves_dir(out))
        else:
            curves = result.curves() if job.save_curves else None
            if curves is not None:
                claim.add_writer(lambda folder: curves.save(folder / "curves.npz"))
            out = result.write(job.output_dir, overwrite=job.overwrite, suffix=job.suffix)
            curves_path = str(Path(out) / "curves.npz") if curves is not None else None
    return {"event": "done", "output_dir": str(out), "maps": list(result.maps), "warnings": warnings,
            "curves": curves_path}


from .runners import InProcessRunner, WorkerProcess  # noqa: E402,F401  (re-exported; runners import Job lazily)
