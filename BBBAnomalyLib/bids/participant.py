"""One participant of a BIDS dataset: every pipeline job, written complete-or-absent into sub-<label>/.

Each job runs through the same argparse command as on the command line (``bbbanomaly dsc ...``),
so its report records the exact configuration and `bbbanomaly rerun` can repeat it. Per-pipeline
settings come from ``--pipeline-config NAME=FILE`` files, validated like ``--config``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import traceback
from pathlib import Path

from ..core.errors import InputError
from .derivatives import place_outputs, roi_ratios, target_folder, prefix, write_text_atomic
from .layout import PIPELINES, discover

COMMAND = {"dsc": ["dsc"], "dce": ["dce"], "dmri": ["dmri"], "t1flair": ["t1flair"]}
#: options the BIDS app sets itself (a pipeline config may not)
MANAGED = {"series", "second_echo", "dwi", "bval", "bvec", "t1", "flair", "out", "overwrite", "quiet", "format",
           "aif_mask", "mask", "nawm_mask", "tumor_mask"}


def load_pipeline_configs(items: list[str] | None) -> dict[str, dict]:
    """--pipeline-config dsc=dsc.json dce=dce.toml -> {pipeline: validated values}."""
    from ..cli import build_parser
    from ..config import leaf_parser, load_file, validate

    out: dict[str, dict] = {}
    parser = build_parser()
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or name not in PIPELINES:
            raise InputError(f"--pipeline-config takes NAME=FILE with NAME one of {', '.join(PIPELINES)}, not '{item}'")
        values = validate(leaf_parser(parser, COMMAND[name]), load_file(path), source=f"pipeline config {path}")
        clash = sorted(set(values) & MANAGED)
        if clash:
            raise InputError(f"pipeline config {path}: key '{clash[0]}' is set by `bbbanomaly bids` from the "
                             "dataset; leave it out")
        out[name] = values
    return out


def run_participant(bids_dir: str, root: str, label: str, pipelines: list[str], masks_dir: str | None,
                    pipeline_configs: dict[str, dict], overwrite: bool = False, verbose: bool = False) -> dict:
    """Run every job of `label`; returns {"participant", "jobs": [...], "error": None | one line}.

    Never raises for a problem of this participant (the caller goes on with the others): the error
    is the return value's one line; a traceback, for bugs, goes into the status file.
    """
    from ..core.outputs import atomic_output_dir

    bids_dir, root = Path(bids_dir), Path(root)
    status = {"participant": f"sub-{label}", "pipeline": "", "jobs": [], "error": None}
    try:
        jobs = discover(bids_dir, label, pipelines, Path(masks_dir) if masks_dir else None)
        if not jobs:
            raise InputError(f"no input for {', '.join(pipelines)} (see `bbbanomaly bids --help` for the names read)")
        log = io.StringIO()
        with atomic_output_dir(root / f"sub-{label}", overwrite=overwrite) as tmp:
            for i, job in enumerate(jobs):
                status["pipeline"] = job.pipeline
                with contextlib.redirect_stdout(log if not verbose else _Tee(log)):
                    status["jobs"].append(_run_job(job, i, tmp, bids_dir, pipeline_configs.get(job.pipeline, {})))
            shutil.rmtree(tmp / ".work", ignore_errors=True)
            (tmp / "log").mkdir(exist_ok=True)
            (tmp / "log" / f"sub-{label}_log.txt").write_text(log.getvalue(), encoding="utf-8")
        status["pipeline"] = ""
    except InputError as exc:
        status["error"] = str(exc)
    except Exception as exc:  # a bug: one line here, the traceback in the status file
        status["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        status["traceback"] = traceback.format_exc()
    _write_status(root, label, status)
    return status


class _Tee(io.TextIOBase):
    def __init__(self, log):
        import sys

        self.log, self.out = log, sys.__stdout__

    def write(self, text):
        self.log.write(text)
        return self.out.write(text)


def _run_job(job, index: int, tmp: Path, bids_dir: Path, extra: dict) -> dict:
    from ..cli import build_parser
    from ..config import apply_values, leaf_parser

    work = tmp / ".work" / f"{prefix(job)}_{job.pipeline}-{index}"
    parser = build_parser()
    leaf = leaf_parser(parser, COMMAND[job.pipeline])
    found = dict(job.options)
    if job.pipeline == "dce" and {"t10", "vfa"} & set(extra):  # the user's own T10 choice beats the dataset's
        for key in ("t10", "vfa", "vfa_flip_angles", "vfa_tr"):
            found.pop(key, None)
    options = {**extra, **found, "out": str(work), "quiet": True}
    apply_values(leaf, options, source=f"{job.pipeline} job of {job.source.path.name}")
    args = parser.parse_args(COMMAND[job.pipeline])
    args.run(args)
    participant_root = tmp
    from ..roistats import map_caveat

    caveats = {name: map_caveat(name, work) for name in _report_maps(work)}  # read before the report moves
    maps, desc = place_outputs(work, participant_root, job, bids_dir)
    dest = target_folder(participant_root, job)
    brain = next(iter(dest.glob(f"{prefix(job)}_label-brain_desc-{desc}_mask.nii*")), None)
    stats = roi_ratios(maps, job, brain, caveats)
    if stats is not None:
        (dest / f"{prefix(job)}_desc-{desc}_roistats.json").write_text(json.dumps(stats, indent=2) + "\n",
                                                                       encoding="utf-8")
    return {"pipeline": job.pipeline, "source": job.source.path.name, "maps": sorted(maps)}


def _report_maps(work: Path) -> list[str]:
    try:
        maps = json.loads((work / "report.json").read_text(encoding="utf-8")).get("maps", {})
    except (OSError, ValueError):
        return []
    return list(maps) if isinstance(maps, dict) else []


def _write_status(root: Path, label: str, status: dict) -> None:
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    write_text_atomic(logs / f"sub-{label}_status.json", json.dumps(status, indent=2) + "\n")


def collect_failures(root: Path) -> list[dict]:
    """Every participant whose last run failed (from logs/sub-*_status.json)."""
    failed = []
    for path in sorted((root / "logs").glob("sub-*_status.json")):
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if status.get("error"):
            failed.append(status)
    return failed


def write_failures(root: Path) -> Path:
    """failures.tsv: participant, pipeline, error (one line each) of every participant failing now."""
    rows = ["participant_id\tpipeline\terror"]
    for s in collect_failures(root):
        error = " ".join(str(s["error"]).split()).replace("\t", " ")
        rows.append(f"{s['participant']}\t{s.get('pipeline') or '-'}\t{error}")
    path = root / "failures.tsv"
    write_text_atomic(path, "\n".join(rows) + "\n")
    return path
