"""`bbbanomaly roi-stats`: the command-line face of :mod:`.roistats`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HELP = """\
Statistics of one or more maps inside a ROI (e.g. the tumor) and a reference region (e.g.
normal-appearing white matter), and the ROI/reference ratio of each map's mean and median. The
tumor/NAWM ratio of CBV is the rCBV that radiologists read.

example:
  bbbanomaly roi-stats out/cbv_corrected.nii.gz out/cbf.nii.gz --roi tumor.nii.gz --reference nawm.nii.gz
  bbbanomaly roi-stats out/*.nii.gz --roi tumor.nii.gz --reference nawm.nii.gz --json stats.json

Masks must be on the maps' grid (nonzero = inside). A Slicer segmentation (.seg.nrrd) holding several segments
needs --roi-label/--reference-label NAME (the segment's name); a label map (e.g. tumour 1, NAWM 2) takes
a label value there, else every nonzero voxel, with a note. The ROI and the reference must not be the same
voxels. NaN voxels are left out and counted. Units come
from the run's report.json beside the maps (else from the pipelines' map tables), and so does a note
on what an ROI mean of a map keeps that no per-voxel map shows (PHAE CBF: its bias by capillary
transit shape). A ratio is n/a, with a note, when the reference mean is 0, of the other sign, or
indistinguishable from 0.
"""


def register(sub) -> None:
    p = sub.add_parser("roi-stats", help="ROI statistics and tumor/reference ratios of maps", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("maps", nargs="+", metavar="MAP", help="3D map files (NIfTI/NRRD) on one grid")
    p.add_argument("--roi", required=True, help="ROI mask, e.g. the tumor")
    p.add_argument("--reference", help="reference mask, e.g. NAWM; gives the ROI/reference ratios")
    p.add_argument("--roi-label", metavar="NAME|VALUE",
                   help="the ROI's segment name in a Slicer .seg.nrrd, or its value in a label map")
    p.add_argument("--reference-label", metavar="NAME|VALUE",
                   help="the reference's segment name or label value (e.g. the same file's NAWM segment)")
    p.add_argument("--roi-name", default="roi", help="label of the ROI in the output (default: roi)")
    p.add_argument("--reference-name", default="reference", help="label of the reference (default: reference)")
    p.add_argument("--json", metavar="FILE", help="also write the statistics as JSON ('-' for stdout only); "
                                                  "an existing FILE is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --json FILE (never one of the command's inputs)")
    p.set_defaults(run=run)


def map_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".seq.nrrd", ".nii", ".nrrd", ".nhdr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def input_paths(args) -> list[Path]:
    """Every file the command reads: the maps and masks with their companions (sidecar, NRRD data
    file) and the report.json beside each map (its units); --json may replace none of them."""
    from .config import input_files

    paths = []
    for path in [*args.maps, args.roi, args.reference]:
        if path and Path(path).exists():
            paths.extend(input_files(Path(path)))
            report = Path(path).resolve().parent / "report.json"
            if path in args.maps and report.is_file():
                paths.append(report)
    return paths


def _several_labels(path: str, option: str) -> str:
    """A note when an integer label map given without a label holds several labels (all were taken), else ""."""
    from .io import read_volume
    from .io.segments import MAX_LABELS, label_values

    values = label_values(np.asarray(read_volume(path).data))
    if not 1 < len(values) <= MAX_LABELS:
        return ""
    return (f"the {option} mask holds labels {', '.join(map(str, values))}: every nonzero voxel was taken; "
            f"--{option}-label VALUE chooses one")


def run(args) -> int:
    from .core.errors import InputError
    from .core.output_file import check_output_file, write_output_file
    from .io import read_mask, read_volume
    from .roistats import format_table, map_caveat, map_unit, roi_statistics

    json_out = args.json if args.json and args.json != "-" else None
    if json_out:  # refused before the work, not after reading every map
        check_output_file(json_out, args.overwrite, input_paths(args))
    maps, units, caveats = {}, {}, {}
    for path in args.maps:
        name = map_name(path)
        unit, caveat = map_unit(name, Path(path).parent), map_caveat(name, Path(path).parent)
        if name in maps:
            name = str(Path(path).with_suffix(""))
        maps[name], units[name], caveats[name] = read_volume(path), unit, caveat
    first = next(iter(maps.values()))
    if args.reference_label is not None and not args.reference:
        raise InputError("--reference-label needs --reference FILE (it may be the --roi file)")
    roi = read_mask(args.roi, first, "roi", args.roi_label)
    reference = read_mask(args.reference, first, "reference", args.reference_label) if args.reference else None
    stats = roi_statistics(maps, roi, reference, args.roi_name, args.reference_name, units, caveats)
    stats["mask_notes"] = [note for path, label, name in ((args.roi, args.roi_label, "roi"),
                                                          (args.reference, args.reference_label, "reference"))
                           if path and label is None for note in [_several_labels(path, name)] if note]
    if args.json == "-":
        json.dump(stats, sys.stdout, indent=2)
        print()
        return 0
    print(format_table(stats))
    if json_out:
        written = write_output_file(json_out, json.dumps(stats, indent=2) + "\n", args.overwrite, input_paths(args))
        print(f"\nstatistics written to {written}")
    return 0
