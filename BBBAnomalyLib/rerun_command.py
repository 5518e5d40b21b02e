"""`bbbanomaly rerun REPORT.json`: run a command again with the exact configuration its report recorded.

The report's ``configuration`` (written by :func:`BBBAnomalyLib.config.effective_configuration`)
holds the command, every option (paths absolute) and the size and sha256 of every input file.
A missing or changed input is refused before anything runs; different software versions only warn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Reproduce a run from its report.json: same command, same options, same input files.

Every input recorded in the report (the images, their sidecars, masks, times files) must still
exist with the same size and sha256, otherwise nothing runs. The result goes to --out (default:
<original output folder name>_rerun in the current folder); the original folder is never touched.
Versions that differ from the report's are listed as warnings.

examples:
  bbbanomaly rerun results/report.json
  bbbanomaly rerun derivatives/bbbanomaly/sub-01/perf/sub-01_desc-osvd_report.json --out check
"""


def register(sub) -> None:
    p = sub.add_parser("rerun", help="reproduce a run from its report.json", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="report.json written by dsc, dce, dmri or t1flair (also inside BIDS derivatives)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <original output name>_rerun)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=run)


def load_configuration(report_path) -> dict:
    from .core.errors import InputError

    path = Path(report_path)
    if not path.is_file():
        raise InputError(f"report '{path}' not found; give the report.json of a run")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"report '{path}' is not valid JSON ({exc})") from exc
    config = report.get("configuration") if isinstance(report, dict) else None
    if not isinstance(config, dict) or not config.get("command") or not isinstance(config.get("options"), dict):
        raise InputError(f"report '{path}' records no command configuration (written by the panel, by Python "
                         "code or by an older version); it cannot be rerun")
    config["versions"] = report.get("versions", {})
    return config


def check_inputs(config: dict) -> None:
    """Refuse (one line) when a recorded input is missing or differs from the run's."""
    from .config import fingerprint
    from .core.errors import InputError

    for name, recorded in config.get("inputs", {}).items():
        path = Path(name)
        if not path.is_file():
            raise InputError(f"input '{path}' of the recorded run is missing; restore it to rerun")
        if path.stat().st_size != recorded.get("size") or fingerprint(path)["sha256"] != recorded.get("sha256"):
            raise InputError(f"input '{path}' changed since the recorded run (sha256 differs); restore the "
                             "original file to rerun")


def build_args(config: dict, out: str | None = None, overwrite: bool = False, quiet: bool = False):
    """The namespace of the recorded run (validated like a config file), with a new output folder."""
    from .cli import build_parser
    from .config import apply_values, leaf_parser

    parser = build_parser()
    command = [str(c) for c in config["command"]]
    leaf = leaf_parser(parser, command)
    options = dict(config["options"])
    recorded_out = options.get("out")
    if out is None and recorded_out:
        out = str(Path.cwd() / f"{Path(recorded_out).name}_rerun")
    if out is not None:
        options["out"] = str(Path(out).resolve())
    if "overwrite" in options:  # the rerun's own choice, never the recorded one
        options["overwrite"] = overwrite
    if quiet and "quiet" in options:
        options["quiet"] = True
    apply_values(leaf, options, source="report configuration")
    return parser.parse_args(command)


def run(args) -> int:
    from .core.report import versions

    config = load_configuration(args.report)
    check_inputs(config)
    now = versions()
    changed = [f"{k} {v} (report: {config['versions'].get(k)})" for k, v in now.items()
               if k in config["versions"] and config["versions"].get(k) != v]
    rerun_args = build_args(config, args.out, args.overwrite, args.quiet)
    if changed:
        print("warning: versions differ from the recorded run: " + ", ".join(changed))
    print(f"rerunning `bbbanomaly {' '.join(config['command'])}` -> {rerun_args.out}")
    return int(rerun_args.run(rerun_args) or 0)
