"""`bbbanomaly bids BIDS_DIR OUT_DIR participant|group`: the BIDS App entry (argument parsing, the loop)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .layout import PIPELINES

HELP = """\
Run the pipelines on every participant of a BIDS dataset (BIDS App convention) and write BIDS
derivatives to OUT_DIR/bbbanomaly/; then `group` collects a cohort table of tumor/reference ratios.

  participant  discover each participant's inputs (all sessions) and run the pipelines; every
               sub-<label>/ folder is written complete or not at all. A failed participant is one
               line on the screen and in OUT_DIR/bbbanomaly/failures.tsv and does not stop the
               others; the exit status is 1 when any failed. A participant whose complete results
               are already there is kept (not run again, not a failure) unless --overwrite.
  group        OUT_DIR/bbbanomaly/group/roi_ratios.tsv (or .csv): one row per participant, session,
               run and map with the tumor and reference means/medians and their ratios.
Each run rewrites its own failures.tsv, logs/ status files and group table; a file of yours under one
of those names (or a link) is never replaced: the run stops first with one line saying which.

Inputs read (.nii/.nii.gz, sub-<label>/[ses-<label>/]):
  dsc      perf/ or anat/ *_dsc (echo-1/echo-2 pairs: dual echo); EchoTime, VolumeTiming
  dce      perf/ or anat/ *_dce (+ anat/*_T1map as T10 map, else anat/*_flip-<i>_VFA as --vfa);
           FlipAngle, RepetitionTimeExcitation (else RepetitionTime) as the excitation TR, VolumeTiming
  dmri     dwi/*_dwi + .bval/.bvec (inherited ones too)
  t1flair  anat/*_T1w (no ce- entity) + anat/*_FLAIR
Sidecars follow the BIDS inheritance principle. RepetitionTime is never taken as the frame interval.
Masks (--masks DIR, a derivatives dataset): sub-*/[ses-*/]<datatype>/*_label-<tumor|nawm|brain|aif>_mask
whose other entities match the image's; a tumor mask gives the ROI ratios.

Outputs: OUT_DIR/bbbanomaly/sub-<label>/[ses-<label>/]perf|dwi|anat/
  sub-<label>[_ses-<label>]_<source entities>_desc-<method>_<map>.nii.gz (+ .json: Sources, Units),
  ..._label-<name>_desc-<method>_mask.nii.gz, ..._desc-<method>_report.json (rerunnable with
  `bbbanomaly rerun`), _aif.tsv, _roistats.json; sub-<label>/log/sub-<label>_log.txt (what the
  pipelines printed, naming the files by these names) and sub-<label>/.bbbanomaly.json (the manifest
  of the participant's folder);
  dataset_description.json (DatasetType derivative).
OUT_DIR may not lie inside BIDS_DIR unless it is BIDS_DIR/derivatives itself.

Cohorts: --n-jobs N runs N participants at once on this machine, each in its own process with
cores // N threads (BBBANOMALY_THREADS, OMP/MKL/OPENBLAS_NUM_THREADS, unless you set them yourself);
on a cluster run one participant per SLURM array task
(scripts/bids_slurm_array.sh), then `group` once.

examples:
  bbbanomaly bids /data/study /data/study/derivatives participant --pipelines dsc,dce --n-jobs 4 \\
      --masks /data/study/derivatives/masks --pipeline-config dce=dce.json
  bbbanomaly bids /data/study /data/study/derivatives participant --participant-label 01 02
  bbbanomaly bids /data/study /data/study/derivatives group
"""


def register(sub) -> None:
    p = sub.add_parser("bids", help="BIDS App: participants -> BIDS derivatives; group -> cohort table",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", help="root folder of the BIDS dataset (never written unless OUT_DIR is its derivatives/)")
    p.add_argument("output_dir", help="derivatives folder; results go to OUT_DIR/bbbanomaly/")
    p.add_argument("analysis_level", choices=["participant", "group"], help="participant or group")
    p.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="participants to run (01 or sub-01; default: all)")
    p.add_argument("--pipelines", default=",".join(PIPELINES),
                   help=f"comma-separated pipelines to run (default {','.join(PIPELINES)})")
    p.add_argument("--masks", metavar="DIR", help="derivatives dataset with *_label-<tumor|nawm|brain|aif>_mask files")
    p.add_argument("--pipeline-config", nargs="+", metavar="NAME=FILE",
                   help="options of a pipeline from a config file, e.g. dce=dce.json (keys as in "
                        "`bbbanomaly dce --dump-defaults`; inputs and outputs are set from the dataset)")
    p.add_argument("--n-jobs", type=int, default=1, help="participants run at once on this machine (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace participants' folders written before")
    p.add_argument("--table-format", choices=["tsv", "csv"], default="tsv", help="group table format (default tsv)")
    p.add_argument("--verbose", action="store_true",
                   help="also print each pipeline's summary (as in the participant's log, once its folder is in place)")
    p.set_defaults(run=run)


def check_locations(bids_dir: Path, output_dir: Path) -> Path:
    """OUT_DIR/bbbanomaly, refusing to write inside the raw dataset (except its derivatives/)."""
    from ..core.errors import InputError

    try:
        out = Path(output_dir).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symbolic-link loop
        raise InputError(f"OUT_DIR {str(output_dir)!r} cannot be used ({getattr(exc, 'strerror', None) or exc}); "
                         "choose another OUT_DIR") from None
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT_DIR {out} is a file, not a folder; choose a folder (results go to its bbbanomaly/)")
    derivatives = bids_dir / "derivatives"
    if out == bids_dir or (_inside(out, bids_dir) and out != derivatives):
        raise InputError(f"OUT_DIR {out} lies inside the input dataset; use {derivatives} (results go to its "
                         "bbbanomaly/) or a folder outside the dataset")
    return out / "bbbanomaly"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return path != folder
    except ValueError:
        return False


def parse_pipelines(text: str) -> list[str]:
    from ..core.errors import InputError

    names = [n.strip() for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if n not in PIPELINES]
    if bad or not names:
        raise InputError(f"--pipelines {str(text)!r}: choose from {', '.join(PIPELINES)} (comma-separated)")
    return list(dict.fromkeys(names))


def run(args) -> int:
    from ..core.errors import InputError
    from .layout import check_dataset, participants

    bids_dir = check_dataset(Path(args.bids_dir))
    root = check_locations(bids_dir, Path(args.output_dir))
    if args.analysis_level == "group":
        from .derivatives import check_own_file
        from .group import write_table
        from .layout import label_of
        from .participant import collect_failures, is_failures, write_failures

        labels = [label_of(lab) for lab in args.participant_label or []]
        failed = collect_failures(root)
        if failed:  # checked before the table is written: both are written, or neither
            check_own_file(root / "failures.tsv", "failures table", is_failures, other="")
        table, rows = write_table(root, labels, args.table_format)
        people = {r["participant_id"] for r in rows}
        print(f"cohort table: {len(rows)} rows from {len(people)} participants -> {table}")
        if failed:
            print(f"note: {len(failed)} participant(s) failed their last run: see {write_failures(root, failed)}")
        return 0
    if args.n_jobs < 1:
        raise InputError("--n-jobs must be at least 1")
    pipelines = parse_pipelines(args.pipelines)
    labels = participants(bids_dir, args.participant_label)
    if args.masks and not Path(args.masks).is_dir():
        raise InputError(f"--masks {args.masks!r} is not a folder")
    from .derivatives import ensure_dataset_description
    from .participant import check_outputs, load_pipeline_configs, write_failures

    configs = load_pipeline_configs(args.pipeline_config)
    check_outputs(root, labels)  # the user's files under the app's names: refused before any work
    ensure_dataset_description(root, bids_dir)
    masks = str(Path(args.masks).resolve()) if args.masks else None
    statuses = _run_all(labels, str(bids_dir), str(root), pipelines, masks, configs, args)
    failures = write_failures(root)
    bad = [s for s in statuses if s["error"]]
    kept = [s for s in statuses if s.get("kept")]
    print(f"{len(statuses)} participant(s): {len(statuses) - len(bad) - len(kept)} done, "
          + (f"{len(kept)} kept from an earlier run, " if kept else "") + f"{len(bad)} failed"
          + (f" (listed in {failures})" if bad else "") + f"; derivatives in {root}")
    return 1 if bad else 0


def _report(status: dict) -> None:
    if status["error"]:
        where = f" ({status['pipeline']})" if status.get("pipeline") else ""
        print(f"{status['participant']}: FAILED{where}: {status['error']}", file=sys.stderr, flush=True)
    elif status.get("kept"):
        print(f"{status['participant']}: {status['kept']}", flush=True)
    else:
        runs = ", ".join(f"{j['pipeline']} {j['source']}" for j in status["jobs"])
        print(f"{status['participant']}: done ({runs})", flush=True)


def _run_all(labels, bids_dir, root, pipelines, masks, configs, args) -> list[dict]:
    from .participant import record_status, run_participant

    common = (pipelines, masks, configs, args.overwrite, args.verbose)
    if args.n_jobs == 1 or len(labels) == 1:
        statuses = []
        for label in labels:
            statuses.append(run_participant(bids_dir, root, label, *common))
            _report(statuses[-1])
        return statuses
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import os

    from ..core.devices import thread_budget_env

    statuses = []
    jobs = min(args.n_jobs, len(labels))
    # each participant's process gets cores // jobs threads (unless the user set the variables): N runs at once,
    # each starting pools the size of the machine, would oversubscribe the cores many times over. Spawned
    # processes inherit the environment when they start, during the submits below; it is restored after.
    budget = thread_budget_env(jobs)
    os.environ.update(budget)
    try:
        # spawn: a clean interpreter per worker (no forked torch/BLAS thread state), the same on every OS
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        futures = {pool.submit(run_participant, bids_dir, root, label, *common): label for label in labels}
    finally:
        for name in budget:
            os.environ.pop(name, None)
    with pool:
        for future in as_completed(futures):
            label = futures[future]
            try:
                status = future.result()
            except Exception as exc:  # the worker process died (out of memory, killed): still one line
                status = {"participant": f"sub-{label}", "pipeline": "", "jobs": [],
                          "error": f"worker process died ({type(exc).__name__}: {exc})".splitlines()[0]}
                record_status(Path(root), label, status)
            statuses.append(status)
            _report(status)
    return sorted(statuses, key=lambda s: s["participant"])
