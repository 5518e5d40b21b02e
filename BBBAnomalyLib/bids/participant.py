"""One participant of a BIDS dataset: every pipeline job, written complete-or-absent into sub-<label>/.

Each job runs through the same argparse command as on the command line (``bbbanomaly dsc ...``),
so its report records the exact configuration and `bbbanomaly rerun` can repeat it. Per-pipeline
settings come from ``--pipeline-config NAME=FILE`` files, validated like ``--config``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import traceback
from pathlib import Path

from ..core.errors import InputError
from .derivatives import (check_description, check_folder, check_own_file, place_outputs, prefix, roi_ratios,
                          target_folder, write_own_file)
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
            raise InputError(f"--pipeline-config takes NAME=FILE with NAME one of {', '.join(PIPELINES)}, not {item!r}")
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
        kept = _earlier_results(root / f"sub-{label}", overwrite)
        if kept is not None:  # not a failure: its status file (of the run that wrote them) stays as it is
            return dict(status, kept=kept)
        jobs = discover(bids_dir, label, pipelines, Path(masks_dir) if masks_dir else None)
        if not jobs:
            raise InputError(f"no input for {', '.join(pipelines)} (see `bbbanomaly bids --help` for the names read)")
        final = root / f"sub-{label}"
        log = []
        with atomic_output_dir(final, overwrite=overwrite) as tmp:
            for i, job in enumerate(jobs):
                status["pipeline"] = job.pipeline
                record, printed = _run_job(job, i, tmp, final, bids_dir, pipeline_configs.get(job.pipeline, {}))
                status["jobs"].append(record)
                log.append(printed)
            shutil.rmtree(tmp / ".work", ignore_errors=True)
            (tmp / "log").mkdir(exist_ok=True)
            (tmp / "log" / f"sub-{label}_log.txt").write_text("".join(log), encoding="utf-8")
        if verbose:  # once the folder is in place: the summaries name its files
            print("".join(log), end="", flush=True)
        status["pipeline"] = ""
    except InputError as exc:
        status["error"] = str(exc)
    except Exception as exc:  # a bug: one line here, the traceback in the status file
        status["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        status["traceback"] = traceback.format_exc()
    record_status(root, label, status)
    return status


def _earlier_results(folder: Path, overwrite: bool) -> str | None:
    """Without --overwrite, a participant whose complete, unedited results are already there is kept, not run
    again and not reported as failed (a BIDS app is rerun over a dataset to add participants): the line to
    report. A folder that holds anything else is refused with what to do (the bids command has no --out)."""
    from ..core.outputs import changed_entries, foreign_entries

    try:
        if overwrite or not folder.is_dir() or folder.is_symlink() or not any(folder.iterdir()):
            return None
    except OSError:
        return None  # the claim in run_participant says what is wrong with it
    odd = foreign_entries(folder) + changed_entries(folder)
    if not odd:
        return f"kept its results from an earlier run in {folder} (pass --overwrite to compute them again)"
    example = ", ".join(odd[:3]) + (f" and {len(odd) - 3} more" if len(odd) > 3 else "")
    raise InputError(f"{folder} already exists and holds files bbbanomaly did not write or that were changed "
                     f"({example}); move them out (or the folder away), then run again")


def _run_job(job, index: int, tmp: Path, final: Path, bids_dir: Path, extra: dict) -> tuple[dict, str]:
    """Run one job in ``tmp`` (the partial folder that becomes ``final``): (its status entry, what it printed).

    The pipeline writes its usual folder under tmp/.work and its report and summary name that folder; both
    are rewritten to name the files where they will be once the participant's folder is in place (the
    partial folder is gone by then)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        record, work, renamed = _run_pipeline(job, index, tmp, bids_dir, extra)
    moved = {name: final / path.relative_to(tmp) for name, path in renamed.items()}
    folder = final / target_folder(tmp, job).relative_to(tmp)
    if "report.json" in renamed:
        _report_names_final_folder(renamed["report.json"], work, folder)
    return record, final_paths(printed.getvalue(), work, tmp, final, folder, moved)


def final_paths(text: str, work: Path, tmp: Path, final: Path, folder: Path, moved: dict[str, Path]) -> str:
    """``text`` (what a pipeline printed about its folder ``work``, inside the partial folder ``tmp``) naming the
    files where they are once ``tmp`` became ``final``: a file of ``work`` -> its new path in ``folder``, ``work``
    itself -> ``folder``, any other path in ``tmp`` -> the same in ``final``, a bare output name (the
    summary's "maps: cbv.nii.gz, ...; report.json") -> its BIDS name."""
    import os
    import re

    paths: dict[str, str] = {}
    for top in dict.fromkeys((tmp, Path(os.path.realpath(tmp)))):  # as given and as a pipeline may print it
        base = top / work.relative_to(tmp)
        paths.update({str(base / name): str(new) for name, new in moved.items()})
        paths[str(base)] = str(folder)
        paths[str(top)] = str(final)
    names = {name: new.name for name, new in moved.items()}
    end = r"(?![\w-]|\.\w)"  # not inside a longer name (a full stop after it ends a sentence)
    pattern = "|".join([re.escape(p) + end for p in sorted(paths, key=len, reverse=True)]
                       + [r"(?<![\w./\\-])" + re.escape(n) + end for n in sorted(names, key=len, reverse=True)])
    return re.sub(pattern, lambda m: paths.get(m.group(0)) or names[m.group(0)], text)


def _report_names_final_folder(report_path: Path, work: Path, folder: Path) -> None:
    """The report's recorded --out (the pipeline's folder in the partial folder, gone once the participant's
    folder is in place) -> the folder its outputs went to; the rest of the report is left as it is."""
    from ..core.report import dump_json

    report = json.loads(report_path.read_text(encoding="utf-8"))
    options = (report.get("configuration") or {}).get("options") if isinstance(report, dict) else None
    out = options.get("out") if isinstance(options, dict) else None
    if isinstance(out, str) and out and Path(out).resolve() == work.resolve():
        options["out"] = str(folder)
        dump_json(report, report_path)


def _run_pipeline(job, index: int, tmp: Path, bids_dir: Path, extra: dict) -> tuple[dict, Path, dict[str, Path]]:
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
    renamed: dict[str, Path] = {}
    maps, desc = place_outputs(work, participant_root, job, bids_dir, renamed)
    dest = target_folder(participant_root, job)
    brain = next(iter(dest.glob(f"{prefix(job)}_label-brain_desc-{desc}_mask.nii*")), None)
    stats = roi_ratios(maps, job, brain, caveats)
    if stats is not None:
        (dest / f"{prefix(job)}_desc-{desc}_roistats.json").write_text(json.dumps(stats, indent=2) + "\n",
                                                                       encoding="utf-8")
    return {"pipeline": job.pipeline, "source": job.source.path.name, "maps": sorted(maps)}, work, renamed


def _report_maps(work: Path) -> list[str]:
    try:
        maps = json.loads((work / "report.json").read_text(encoding="utf-8")).get("maps", {})
    except (OSError, ValueError):
        return []
    return list(maps) if isinstance(maps, dict) else []


# --- the status files and failures.tsv (see derivatives: the app's own files beside the participants) --
STATUS_KEYS = ("participant", "pipeline", "jobs", "error", "traceback")
FAILURES_HEADER = "participant_id\tpipeline\terror"


def status_path(root: Path, label: str) -> Path:
    return root / "logs" / f"sub-{label}_status.json"


def is_status(text: str, label: str | None = None) -> bool:
    """True when ``text`` is a status file exactly as :func:`_write_status` writes it (of ``label``)."""
    try:
        status = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return (isinstance(status, dict) and set(status) <= set(STATUS_KEYS) and {"participant", "error"} <= set(status)
            and isinstance(status["participant"], str) and re.fullmatch(r"sub-[A-Za-z0-9]+", status["participant"])
            is not None and (label is None or status["participant"] == f"sub-{label}")
            and text == json.dumps(status, indent=2) + "\n")


def is_failures(text: str) -> bool:
    """True when ``text`` is a failures.tsv exactly as :func:`write_failures` writes it."""
    lines = text.split("\n")
    if lines[0] != FAILURES_HEADER or lines[-1] != "":
        return False
    for line in lines[1:-1]:
        fields = line.split("\t")
        if (len(fields) != 3 or not re.fullmatch(r"sub-[A-Za-z0-9]+", fields[0])
                or fields[1] not in (*PIPELINES, "-") or fields[2] != " ".join(fields[2].split())):
            return False
    return True


def check_outputs(root: Path, labels: list[str]) -> None:
    """Before any participant runs: every file of the derivatives folder this run will write beside the
    participants' folders is absent or the app's own (InputError, one line, otherwise)."""
    check_folder(root, "derivatives", link_ok=True)
    check_description(root)
    check_own_file(root / "failures.tsv", "failures table", is_failures)
    check_folder(root / "logs", "status files")
    for label in labels:
        check_own_file(status_path(root, label), "status file", lambda text, label=label: is_status(text, label))


def _write_status(root: Path, label: str, status: dict) -> None:
    check_folder(root / "logs", "status files")
    write_own_file(status_path(root, label), json.dumps(status, indent=2) + "\n", "status file",
                   lambda text: is_status(text, label))


def record_status(root: Path, label: str, status: dict) -> None:
    """Write the participant's status file; when that is refused (a file of the user's was put there
    while it ran), its result line says so instead of raising: the other participants go on."""
    try:
        _write_status(root, label, status)
    except InputError as exc:
        status["error"] = (f"{status['error']}; " if status["error"] else "") + f"status not recorded: {exc}"


def collect_failures(root: Path) -> list[dict]:
    """Every participant whose last run failed (from logs/sub-*_status.json; files the app did not write
    there are left out)."""
    failed = []
    for path in sorted((root / "logs").glob("sub-*_status.json")):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not is_status(text, path.name[4:-len("_status.json")]):
            continue
        status = json.loads(text)
        if status.get("error"):
            failed.append(status)
    return failed


def write_failures(root: Path, failed: list[dict] | None = None) -> Path:
    """failures.tsv: participant, pipeline, error (one line each) of every participant failing now."""
    rows = [FAILURES_HEADER]
    for s in collect_failures(root) if failed is None else failed:
        error = " ".join(str(s["error"]).split())
        rows.append(f"{s['participant']}\t{s.get('pipeline') or '-'}\t{error}")
    return write_own_file(root / "failures.tsv", "\n".join(rows) + "\n", "failures table", is_failures)
