"""`bbbanomaly demo --pipeline t1flair`: a structural phantom through the whole T1/FLAIR pipeline.

Writes OUT/t1flair_input/ (T1, FLAIR, true T1Gd, BraTS-label segmentation and brain mask, in the
layout the `train t1gd-diffusion` command reads), OUT/t1flair/ (maps and report.json) and
OUT/t1flair_demo.png, and prints the BBB call and the synthesis error against the true T1Gd.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_standalone(args) -> int:
    """`bbbanomaly demo --pipeline t1flair`: the T1/FLAIR demo alone into --out."""
    from ..core.outputs import atomic_output_dir
    from ..core.progress import ConsolePrinter

    printer = ConsolePrinter(quiet=args.quiet)
    out = Path(args.out).resolve()
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        run = run_demo(tmp, printer, args.seed)
        printer(1.0, "done")
    print_summary(*run, out)
    return 0


def run_demo(tmp: Path, printer, seed: int = 0):
    """Simulate, run and draw into the (temporary) output folder ``tmp``; returns what print_summary needs."""
    from ..core.progress import sub_progress
    from ..phantoms.structural import make_structural_phantom
    from .figures import t1flair_figure
    from .normalisation import normalise_0_255
    from .parameters import T1FlairParameters
    from .pipeline import run_t1flair

    printer(0.0, "simulating a structural glioma phantom")
    phantom = make_structural_phantom(seed=seed)
    phantom.write(tmp / "t1flair_input", "phantom")
    result = run_t1flair(phantom.t1, phantom.flair, T1FlairParameters(device="cpu", status_evidence="phantom"),
                         brain_mask=phantom.brain,
                         tumor_mask=phantom.whole_tumor, progress=sub_progress(printer, 0.05, 0.9))
    result.write(tmp / "t1flair")
    truth = normalise_0_255(phantom.t1gd.data, phantom.brain, "t1gd")
    true_call = "disrupted" if phantom.enhancing else "intact"
    printer(0.95, "drawing the T1/FLAIR figure")
    t1flair_figure(tmp / "t1flair_demo.png", phantom.t1, phantom.flair.data, result, truth, phantom.whole_tumor,
                   title=f"BBBAnomaly demo: structural phantom (seed {seed}, truth: BBB {true_call})",
                   truth=true_call)
    return result, phantom, truth


def print_summary(result, phantom, truth, out: Path) -> None:
    from .command import print_summary as print_maps
    from .normalisation import normalise_0_255

    print_maps(result, out / "t1flair")
    true_call = "disrupted" if phantom.enhancing else "intact"
    mae = float(np.mean(np.abs(result.maps["synthetic_t1gd"].data - truth)[phantom.brain]))
    baseline = float(np.mean(np.abs(normalise_0_255(phantom.t1.data, phantom.brain, "t1") - truth)[phantom.brain]))
    call = result.report["bbb_status"]["call"]
    verdict = ("abstained" if call == "indeterminate" else "right" if call == true_call else "WRONG")
    print(f"  truth: BBB {true_call} (ET {'enhancing' if phantom.enhancing else 'non-enhancing'}); the call is {call} "
          f"({verdict}); synthesis MAE {mae:.2f} on the 0-255 scale in the brain (the plain T1: {baseline:.2f})")
    if mae > baseline:  # say why, with this run's numbers (round 17's user audit: the demo contradicted the headline)
        t1 = normalise_0_255(phantom.t1.data, phantom.brain, "t1")
        normal = phantom.brain & ~np.asarray(phantom.whole_tumor, bool)
        added = float(np.mean((result.maps["synthetic_t1gd"].data - t1)[normal]))
        true_added = float(np.mean((truth - t1)[normal]))
        print(f"  note: here the synthesis is worse than the plain T1. The default enhancer "
              f"({result.report.get('parameters', {}).get('enhancer_weights') or 'none'}) was chosen on real scans, "
              f"where vessels and dura enhance; it adds {added:.1f} units on average to this phantom's normal brain, "
              f"whose true enhancement there is {true_added:.1f}. The phantom is not its domain "
              "(`--enhancer-weights none` uses the phantom-trained diffusion syntheses; docs/validation.md)")
    print(f"  input T1, FLAIR, true T1Gd and segmentation: {out / 't1flair_input'}; figure: {out / 't1flair_demo.png'}")
