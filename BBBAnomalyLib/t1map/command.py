"""`bbbanomaly t1map`: argument parsing and output for :func:`run_t1map`. No science here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_options import add_output_options, output_suffix

HELP = """\
T1 (and R1, M0) maps from a variable-flip-angle (VFA) spoiled gradient-echo acquisition.

Input: one 4D file with a frame per flip angle (give --flip-angles), or several 3D files, one per
flip angle (the angles from their sidecars' FlipAngle, or --flip-angles in the same order). TR from
the metadata or --tr (seconds). Philips DICOM folders are read as precise values (each image divided
by its RescaleSlope x private MR Scale Slope), so series the scanner scaled differently fit right;
Philips series without their private tags are fitted as displayed, with a warning.
--b1 MAP: relative flip-angle map (actual/nominal; percent maps are recognised), which corrects each
voxel's angles; a map on its own (usually coarser) grid is resampled onto the VFA grid from its
measured voxels, with a warning.
Fit: --method nonlinear (default; least squares on the signal, from the linear solution) or linear
(DESPOT1 straight line). Look-Locker/inversion recovery is not implemented.
Outputs (in --out, default <input>_t1map/), as <map>.nii.gz (.nrrd with --format nrrd): r1 [1/s],
t1 [s], m0, fit_ok, mask; report.json and .bbbanomaly.json (the manifest of what was written).
The T1 map feeds DCE directly: `bbbanomaly dce SERIES --t10 OUT/t1.nii.gz`, or give the VFA files to
`bbbanomaly dce --vfa ...`.

examples:
  bbbanomaly t1map vfa.nii.gz --flip-angles 2 5 12 --tr 0.0054 --out t1
  bbbanomaly t1map fa02.nii.gz fa05.nii.gz fa12.nii.gz --b1 b1.nii.gz --method linear
"""


def register(sub) -> None:
    p = sub.add_parser("t1map", help="T1/R1/M0 maps from variable-flip-angle SPGR (linear or nonlinear, B1 map)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vfa", nargs="+", metavar="VFA", help="one 4D VFA series, or one 3D file per flip angle")
    p.add_argument("--flip-angles", type=float, nargs="+", metavar="DEG",
                   help="flip angles in degrees, one per frame/file (default: from the files' metadata)")
    p.add_argument("--tr", type=float, metavar="S", help="repetition time in seconds (default: from the metadata)")
    p.add_argument("--b1", metavar="MAP", help="relative B1 (flip-angle) map, actual/nominal or percent; on another grid it is resampled")
    p.add_argument("--mask", metavar="MASK", help="voxels to fit (default: all voxels with signal)")
    p.add_argument("--method", choices=["nonlinear", "linear"], default="nonlinear",
                   help="nonlinear least squares (default) or the DESPOT1 line")
    add_output_options(p, "t1map")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..cli_options import claimed_output, out_dir_of

    out_dir = out_dir_of(args, args.vfa[0], "t1map")
    with claimed_output(out_dir, args, ("vfa", "b1", "mask")):
        return _run(args, out_dir)


def _run(args, out_dir: Path) -> int:
    from ..io import read_volume
    from ..core.progress import ConsolePrinter
    from .inputs import read_vfa
    from .pipeline import run_t1map

    printer = ConsolePrinter(quiet=args.quiet)
    printer(0.0, f"reading {', '.join(args.vfa)}")
    vfa = read_vfa(args.vfa, args.flip_angles, args.tr)
    b1 = read_volume(args.b1) if args.b1 else None
    result = run_t1map(vfa, args.method, b1=b1, mask=args.mask, progress=printer)
    from ..config import effective_configuration

    result.report["configuration"] = effective_configuration(args)  # for `bbbanomaly rerun`
    written = result.write(out_dir, overwrite=args.overwrite, suffix=output_suffix(args))
    t1 = result.report["summary"]["t1"]
    print(f"T1 maps ({args.method}) written to {written}")
    print(f"  maps: {', '.join(result.maps)}, mask; report.json")
    if t1.get("n"):
        print(f"  T1 median {t1['median']:.3g} s over {result.report['voxels']} voxels")
    for w in result.report["warnings"]:
        print(f"  warning: {w}")
    return 0
