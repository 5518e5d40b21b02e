"""The `bbbanomaly` command (also `python -m BBBAnomalyLib`).

Each subcommand lives beside its pipeline and registers itself here; this module only builds the
parser and turns user errors into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import CancelledError, InputError

DESCRIPTION = """\
Blood-brain-barrier leakage, perfusion and tissue-anomaly maps for glioma MRI.

Commands:
  demo       run the pipelines on built-in digital reference objects (no data needed)
  dce        DCE leakage: model-free RLS (autoencoder) beside Tofts/extended Tofts/Patlak Ktrans, ve, vp
  dsc        DSC perfusion: CBV, CBF, MTT, Tmax, BSW leakage K2 (sSVD/cSVD/oSVD/Tikhonov, learned PHAE)
  dmri       diffusion anomaly map: VAE / RecDiscNet trained on healthy brains (b≈1000 single shell)
  t1flair    T1 + FLAIR: synthetic T1Gd (conditional diffusion), BBB status, 3D-autoencoder anomaly map
  roi-stats  mean/median/sd/volume of maps in a ROI and the ROI/reference ratio (e.g. tumor/NAWM rCBV)
  train      train a learned model on a folder of cases (DistributedDataParallel under torchrun)

Inputs are NIfTI (.nii/.nii.gz with an optional BIDS .json sidecar), NRRD (.nrrd, Slicer .seq.nrrd)
or a DICOM series folder. Times are in seconds. `bbbanomaly COMMAND --help` explains each command.
"""


def build_parser() -> argparse.ArgumentParser:
    from . import demo, roistats_command, train_command
    from .dce import command as dce_command
    from .dmri import command as dmri_command
    from .dsc import command as dsc_command
    from .structural import command as t1flair_command

    parser = argparse.ArgumentParser(prog="bbbanomaly", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"BBBAnomalyLib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.register(sub)
    dce_command.register(sub)
    dsc_command.register(sub)
    dmri_command.register(sub)
    t1flair_command.register(sub)
    roistats_command.register(sub)
    train_command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # never die on 'ΔR2*' in a terminal without UTF-8
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"bbbanomaly {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (CancelledError, KeyboardInterrupt):
        print(f"bbbanomaly {args.command}: cancelled; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
