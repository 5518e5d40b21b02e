"""`bbbanomaly rerun REPORT.json`: run a command again with the exact configuration its report recorded.

The report's ``configuration`` (written by :func:`BBBAnomalyLib.config.effective_configuration`)
holds the command, every option (paths absolute) and the size and sha256 of every input file.
A missing or changed input, or a file the rerun would read that the report does not list (an
edited report), is refused before anything runs; different software versions only warn. The
report counts as an input: an --out holding it is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Reproduce a run from its report.json: same command, same options, same input files.

Every input recorded in the report (the images, their sidecars, masks, times files) must still
exist with the same size and sha256, and every file the rerun reads must be recorded there,
otherwise nothing runs. The result goes to --out (default: <original output folder name>_rerun in
the current folder), which may not hold the report or an input; the original folder is never touched.
Versions that differ from the report's are listed as warnings.

examples:
  bbbanomaly rerun results/report.json
  bbbanomaly rerun derivatives/bbbanomaly/sub-01/perf/sub-01_desc-osvd_report.json --out check
"""


def register(sub) -> None:
    p = sub.add_parser("rerun", help="reproduce a run from its report.json", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="report.json written by dsc, dce, dmri, t1flair or t1map (also inside BIDS "
                                  "derivatives)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <original output name>_rerun); it must not "
                                                "hold the report or an input")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder, only if bbbanomaly wrote it (it never deletes other files)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=run)


#: The commands whose reports record a configuration (the others cannot be rerun).
RERUNNABLE = ("dsc", "dce", "dmri", "t1flair", "t1map")
_HEX = frozenset("0123456789abcdef")


def load_configuration(report_path) -> dict:
    """The report's recorded configuration, its structure and types checked (one-line InputError)."""
    from .core.errors import InputError

    path = Path(report_path)
    try:
        if path.is_dir():
            raise InputError(f"report '{path}' is a folder; give the report.json inside it")
        if not path.is_file():
            raise InputError(f"report '{path}' not found; give the report.json of a run")
        report = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, InputError):
            raise
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError(f"report '{path}' is not valid JSON ({reason}); give the report.json of a run") from None
    except OSError as exc:
        raise InputError(f"report '{path}' cannot be read ({exc.strerror or exc}); give a report.json you can "
                         "read") from None
    config = report.get("configuration") if isinstance(report, dict) else None
    if not isinstance(config, dict) or not config.get("command") or not isinstance(config.get("options"), dict):
        raise InputError(f"report '{path}' records no command configuration (written by `bbbanomaly demo`, by the "
                         "panel, by Python code or by an older version); it cannot be rerun")
    bad = _structure_error(config)
    if bad:
        raise InputError(f"report '{path}': {bad}; it cannot be rerun (restore the report as the run wrote it)")
    versions = report.get("versions", {})
    config["versions"] = versions if isinstance(versions, dict) else {}
    config["notes"] = _replay_old_defaults(report, config)
    return config


def _replay_old_defaults(report: dict, config: dict) -> list[str]:
    """Options an older version recorded as a number where it meant its default, set back to the default (None);
    one note per option changed.

    ``dce --relaxivity`` defaulted to 4.5 before session 24 and the report recorded that 4.5 whether it was given or
    not; since then the default is None (DEFAULT_RELAXIVITY, resolved by DCEParameters) and a given 4.5 is a choice
    (the header's agent is compared with it, not warned about). A report from before the change is known by its
    parameters, which lack ``relaxivity_given`` (the version string did not change): its 4.5 was the default then,
    and is replayed as the default, so that the rerun warns as the recorded run did.
    """
    from .dce.parameters import DEFAULT_RELAXIVITY

    options, parameters = config["options"], report.get("parameters")
    value = options.get("relaxivity")
    if (config["command"] == ["dce"] and isinstance(parameters, dict) and "relaxivity_given" not in parameters
            and isinstance(value, (int, float)) and not isinstance(value, bool) and value == DEFAULT_RELAXIVITY):
        options["relaxivity"] = None
        return [f"the report predates a given --relaxivity being told from the default (its parameters record no "
                f"relaxivity_given): its relaxivity {value:g} is replayed as the default r1"]
    return []


def _structure_error(config: dict) -> str | None:
    """What is wrong with the types of a recorded configuration, or None."""
    command = config["command"]
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        return f"configuration.command must be a list of words such as [\"dsc\"], not {_short(command)}"
    if len(command) != 1 or command[0] not in RERUNNABLE:
        return (f"configuration.command {_short(command)} is not a command that rerun repeats (only "
                f"{', '.join(RERUNNABLE)})")
    out = config["options"].get("out")
    if out is not None and not isinstance(out, str):
        return f"configuration.options.out must be a folder name or null, not {_short(out)}"
    inputs = config.get("inputs", {})
    if not isinstance(inputs, dict):
        return f"configuration.inputs must map each input file to its size and sha256, not {_short(inputs)}"
    for name, recorded in inputs.items():
        if not name or not isinstance(recorded, dict):
            return f"configuration.inputs['{name}'] must be {{\"size\": ..., \"sha256\": ...}}, not {_short(recorded)}"
        size, sha = recorded.get("size"), recorded.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return f"configuration.inputs['{name}'].size must be a number of bytes, not {_short(size)}"
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX:
            return f"configuration.inputs['{name}'].sha256 must be 64 hexadecimal digits, not {_short(sha)}"
    return None


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_inputs(config: dict, read=()) -> list[Path]:
    """Refuse (one line) when a recorded input is missing or differs from the run's, or when a file the
    rerun would read (``read``: the files named by its options, with their sidecars) is not recorded.

    Returns every recorded input (absolute), for the output folder's check: after the check, every file
    the rerun reads is one of them.
    """
    from .config import fingerprint
    from .core.errors import InputError

    recorded_paths = []
    for name, recorded in config.get("inputs", {}).items():
        path = Path(name)
        if not path.is_file():
            raise InputError(f"input '{path}' of the recorded run is missing; restore it to rerun")
        try:
            same = path.stat().st_size == recorded["size"] and fingerprint(path)["sha256"] == recorded["sha256"]
        except OSError as exc:
            raise InputError(f"input '{path}' of the recorded run cannot be read ({exc.strerror or exc}); make it "
                             "readable to rerun") from None
        if not same:
            raise InputError(f"input '{path}' changed since the recorded run (sha256 differs); restore the "
                             "original file to rerun")
        recorded_paths.append(path.resolve())
    known = set(recorded_paths)
    for path in read:
        if Path(path).resolve() not in known:
            raise InputError(f"input '{path}' would be read by the rerun but the report records no checksum for it "
                             "(configuration.inputs); restore the report as the run wrote it, or run the command "
                             "yourself")
    return recorded_paths


def files_read(leaf, args):
    """Every file a command parsed into ``args`` reads from the user: the existing paths among its
    options (not the output), with their sidecars (bval/bvec, .json, NRRD data) or every file of a folder.
    A generator, so that a check stops at the first file not recorded (an edited report naming '/')."""
    import os

    from .config import OUTPUT_KEYS, _kind, config_actions, input_files

    for action in config_actions(leaf):
        kind, elem = _kind(action)
        if action.dest in OUTPUT_KEYS or action.choices is not None or kind not in ("scalar", "list") \
                or elem not in (None, str):
            continue  # a number, a flag or a choice names no file
        value = getattr(args, action.dest, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item and os.path.exists(item):
                path = Path(item)
                if path.is_dir():  # as input_files, file by file (input_files sorts the whole tree first)
                    yield from (f for f in path.resolve().rglob("*") if f.is_file())
                else:
                    yield from input_files(path)


def _parse(config: dict, out: str | None = None, overwrite: bool = False, quiet: bool = False,
           report_path=None):
    """(namespace of the recorded run, its command's parser); see :func:`build_args`."""
    from .cli import build_parser
    from .config import apply_values, leaf_parser
    from .core.errors import InputError

    parser = build_parser()
    command = [str(c) for c in config["command"]]
    leaf = leaf_parser(parser, command)
    options = dict(config["options"])
    recorded_out = options.get("out")
    if out is None:  # <original output folder name>_rerun in the current folder, never the original
        name = Path(recorded_out).name if isinstance(recorded_out, str) and recorded_out else ""
        if report_path is not None and Path(report_path).name.endswith("_report.json"):
            # a BIDS derivative's report (sub-01_desc-osvd_report.json) sits in a datatype folder shared by every
            # participant's run ("perf"): its own name says which run it was
            name = Path(report_path).name[: -len("_report.json")]
        if not name and report_path is not None:  # a run without --out recorded none: the report's folder
            name = Path(report_path).resolve().parent.name
        if name:
            out = str(Path.cwd() / f"{name}_rerun")
    if out is not None:
        options["out"] = str(Path(out).absolute())  # not resolved: a symbolic link stays one, and is refused
    if "overwrite" in options:  # the rerun's own choice, never the recorded one
        options["overwrite"] = overwrite
    if quiet and "quiet" in options:
        options["quiet"] = True
    apply_values(leaf, options, source="report configuration")

    def refuse(message):  # argparse would print its usage and exit: one line instead
        raise InputError(f"report configuration: {message}; restore the report as the run wrote it")

    parser.error = leaf.error = refuse
    return parser.parse_args(command), leaf


def build_args(config: dict, out: str | None = None, overwrite: bool = False, quiet: bool = False,
               report_path=None):
    """The namespace of the recorded run (validated like a config file), with a new output folder."""
    return _parse(config, out, overwrite, quiet, report_path)[0]


def run(args) -> int:
    from .core.errors import InputError
    from .core.outputs import claim_output_dir
    from .core.report import versions

    if args.out is not None and not str(args.out).strip():
        raise InputError("--out is empty; give the output folder, or leave --out out for <original output name>_rerun/ "
                         "in the current folder")
    config = load_configuration(args.report)
    rerun_args, leaf = _parse(config, args.out, args.overwrite, args.quiet, report_path=args.report)
    recorded = check_inputs(config, files_read(leaf, rerun_args))  # every file the rerun reads is recorded
    if not rerun_args.out:
        raise InputError(f"report '{args.report}' records no output folder; give one with --out")
    now = versions()
    changed = [f"{k} {v} (report: {config['versions'].get(k)})" for k, v in now.items()
               if k in config["versions"] and config["versions"].get(k) != v]
    # The report and every input count as inputs: an --out holding one of them is refused, even with --overwrite.
    # (Without --overwrite a folder holding the report is not empty, and refused as existing already.)
    inputs = [*([Path(args.report)] if args.overwrite else []), *recorded]
    with claim_output_dir(rerun_args.out, overwrite=args.overwrite, inputs=inputs):  # the command's own claim reuses it
        if changed:
            print("warning: versions differ from the recorded run: " + ", ".join(changed))
        for note in config.get("notes", ()):
            print(f"note: {note}")
        print(f"rerunning `bbbanomaly {' '.join(config['command'])}` -> {rerun_args.out}")
        return int(rerun_args.run(rerun_args) or 0)
