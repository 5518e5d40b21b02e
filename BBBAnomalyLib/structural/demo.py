"""`bbbanomaly demo --pipeline t1flair`: a structural phantom through the whole T1/FLAIR pipeline.

Writes OUT/t1flair_input/ (T1, FLAIR, true T1Gd, BraTS-label segmentation and brain mask, in the
layout the `train t1gd-diffusion` command reads), OUT/t1flair/ (maps and report.json) and
OUT/t1flair_demo.png, and prints the BBB call and the synthesis error against the true T1Gd.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_standalone(args) -> int:
    from ..outputs import atomic_output_dir
    from ..progress import ConsolePrinter, sub_progress
    from ..phantoms.structural import make_structural_phantom
    from .command import print_summary
    from .figures import t1flair_figure
    from .normalisation import normalise_0_255
    from .parameters import T1FlairParameters
    from .pipeline import run_t1flair

    printer = ConsolePrinter(quiet=args.quiet)
    out = Path(args.out).resolve()
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        printer(0.0, "simulating a structural glioma phantom")
        phantom = make_structural_phantom(seed=args.seed)
        phantom.write(tmp / "t1flair_input", "phantom")
        result = run_t1flair(phantom.t1, phantom.flair, T1FlairParameters(device="cpu"), brain_mask=phantom.brain,
                             tumor_mask=phantom.whole_tumor, progress=sub_progress(printer, 0.05, 0.9))
        result.write(tmp / "t1flair")
        truth = normalise_0_255(phantom.t1gd.data, phantom.brain, "t1gd")
        true_call = "disrupted" if phantom.enhancing else "intact"
        printer(0.95, "drawing the T1/FLAIR figure")
        t1flair_figure(tmp / "t1flair_demo.png", phantom.t1, phantom.flair.data, result, truth, phantom.whole_tumor,
                       title=f"BBBAnomaly demo: structural phantom (seed {args.seed}, truth: BBB {true_call})",
                       truth=true_call)
        printer(1.0, "done")
    print_summary(result, out / "t1flair")
    mae = float(np.mean(np.abs(result.maps["synthetic_t1gd"].data - truth)[phantom.brain]))
    baseline = float(np.mean(np.abs(normalise_0_255(phantom.t1.data, phantom.brain, "t1") - truth)[phantom.brain]))
    call = result.report["bbb_status"]["call"]
    verdict = ("abstained" if call == "indeterminate" else "right" if call == true_call else "WRONG")
    print(f"  truth: BBB {true_call} (ET {'enhancing' if phantom.enhancing else 'non-enhancing'}); the call is {call} "
          f"({verdict}); synthesis MAE {mae:.2f} on the 0-255 scale in the brain (the plain T1: {baseline:.2f})")
    print(f"  input T1, FLAIR, true T1Gd and segmentation: {out / 't1flair_input'}; figure: {out / 't1flair_demo.png'}")
    return 0
