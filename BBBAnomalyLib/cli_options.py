"""Options every pipeline command shares, so that all of them behave alike.

``--out`` (default ``<input name>_<pipeline>/`` in the current folder), ``--format nifti|nrrd``,
``--overwrite`` (replaces only a folder that bbbanomaly wrote, see :mod:`BBBAnomalyLib.core.outputs`)
and ``--quiet``; and :func:`claimed_output` which checks and locks the output folder *before*
the run, so a run that could not write its results fails at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd"}
#: The manifest every output folder holds beside the results (core/outputs.py's MANIFEST; named here so that --help
#: imports nothing more; a test keeps the two equal)
MANIFEST = ".bbbanomaly.json"


def add_output_options(parser: argparse.ArgumentParser, pipeline: str, formats: bool = True) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", help=f"output folder (default: <input name>_{pipeline}/ in the current "
                                                  "folder); it must not hold an input")
    if formats:
        out.add_argument("--format", choices=list(FORMATS), default="nifti",
                         help="map format: nifti (.nii.gz, default) or nrrd (.nrrd, float64 geometry, for Slicer)")
    out.add_argument("--overwrite", action="store_true",
                     help=f"replace an existing output folder, only if bbbanomaly wrote it: every run writes "
                          f"{MANIFEST}, the manifest of its files, beside its results (it never deletes other files)")
    out.add_argument("--quiet", action="store_true", help="no progress messages")


def add_motion_option(group, default: str, reference: str) -> None:
    """``--motion-correct {rigid,detect,none}`` of the dynamic series (dsc, dce; perfusion/motion.py), every frame
    registered to ``reference`` (e.g. "the first analysed one")."""
    group.add_argument("--motion-correct", choices=["rigid", "detect", "none"], default=default,
                       help=f"head motion during the series: rigid registers every frame to {reference} (mutual "
                            "information), reports the displacement (report.json 'motion'), warns above half a "
                            "voxel and resamples the frames that moved that far; detect reports and warns only; "
                            "none does not look (default %(default)s)")


def output_suffix(args) -> str:
    return FORMATS[getattr(args, "format", None) or "nifti"]


def default_out_dir(input_path: str, pipeline: str) -> Path:
    """``<input name without extensions>_<pipeline>`` in the current folder."""
    from .roistats_command import map_name

    return Path.cwd() / f"{map_name(str(Path(input_path).resolve().name)) or 'series'}_{pipeline}"


def out_dir_of(args, input_path: str, pipeline: str) -> Path:
    out = getattr(args, "out", None)
    if out is not None and not str(out).strip():
        # an empty --out (a shell variable that was not set) used to fall back to the default folder silently
        from .core.errors import InputError

        raise InputError("--out is empty; give the output folder, or leave --out out for "
                         f"<input name>_{pipeline}/ in the current folder")
    return Path(out) if out else default_out_dir(input_path, pipeline)


def claimed_output(out_dir: Path, args, input_names: tuple[str, ...]):
    """Context manager: the checked and locked output folder (see outputs.claim_output_dir).
    ``input_names``: the argparse names whose values are input files or folders."""
    from .core.outputs import claim_output_dir

    inputs = []
    for name in input_names:
        value = getattr(args, name, None)
        inputs.extend(value if isinstance(value, (list, tuple)) else [value])
    return claim_output_dir(out_dir, overwrite=bool(getattr(args, "overwrite", False)),
                            inputs=[v for v in inputs if isinstance(v, str) and v])
