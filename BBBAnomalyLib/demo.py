"""`bbbanomaly demo`: the pipelines on the built-in digital reference objects (all four by default).

Needs nothing outside the package: the anatomy ships with it (a small MNI152-derived tissue
map, see phantoms/data/NOTICE.txt). The demo writes the simulated input (so the same files can
be fed to `bbbanomaly dsc`), the maps, a PNG figure and a short comparison with the truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HELP = """\
Run the pipelines on built-in digital reference objects: real MNI152 anatomy (2 mm), a glioma-like
tumor with raised CBV and BBB leakage, an artery for the AIF, recirculation and Rician noise, with
known ground-truth maps. By default all four pipelines (--pipeline all: DSC, DCE, diffusion anomaly,
T1/FLAIR); --pipeline NAME runs one of them. Writes:

  OUT/input/   the simulated DSC series (signal.nii.gz + BIDS signal.json), masks, true maps, the true
               AIF (aif.tsv) and the object's parameters (phantom.json)
  OUT/dsc/     the maps (cbv, cbv_corrected, cbf, mtt, tmax, k2, rcbv, rcbf), aif_mask, brain_mask,
               aif.csv, report.json
  OUT/dsc_demo.png  a figure: input frame, AIF and tumor/NAWM curves, CBV/CBF/MTT overlays
  OUT/dce_input/, OUT/dce/, OUT/dce_demo.png   the same for DCE (RLS beside Ktrans)
  OUT/dmri_input/, OUT/dmri/, OUT/dmri_demo.png, OUT/dmri_demo_curves.png   diffusion anomaly (a phantom patient)
  OUT/t1flair_input/, OUT/t1flair/, OUT/t1flair_demo.png   T1/FLAIR: synthetic T1Gd, BBB status
  and in OUT/ and each results folder .bbbanomaly.json, the manifest of what was written

example:
  bbbanomaly demo --out demo
  bbbanomaly dsc demo/input/signal.nii.gz --aif-mask demo/input/mask_aif.nii.gz --out my_run
  bbbanomaly demo --pipeline t1flair --out demo_t1flair
"""


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the pipelines on built-in reference objects (no data needed)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bbbanomaly-demo", help="output folder (default: ./bbbanomaly-demo)")
    p.add_argument("--method", default="osvd", choices=["ssvd", "csvd", "osvd", "tikhonov", "phae"],
                   help="deconvolution method (default osvd)")
    p.add_argument("--snr", type=float, default=None,
                   help="baseline SNR of white matter: the DSC and DCE objects (default 50) and the diffusion phantom's b0 "
                        "(default 30); the T1/FLAIR phantom has a fixed noise level")
    p.add_argument("--slices", default=None,
                   help="axial slices of the DSC and DCE objects, or 'all' (default 12); the diffusion and T1/FLAIR "
                        "phantoms have a fixed extent")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--pipeline", choices=["dsc", "dce", "t1flair", "dmri", "all"], default="all",
                   help="reference object(s) to run: DSC, DCE (OUT/dce_input, OUT/dce, OUT/dce_demo.png), T1/FLAIR "
                        "(OUT/t1flair_input, OUT/t1flair, OUT/t1flair_demo.png), diffusion anomaly (OUT/dmri_input, "
                        "OUT/dmri, OUT/dmri_demo.png) or all four (default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder, only if bbbanomaly wrote it (it never "
                   "deletes other files)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=run)


def check_options(args) -> None:
    """Refuse, before anything is simulated, an empty --out and a --snr, --seed or --slices that the
    reference objects cannot use (one line each; --slices is made "all" or an int)."""
    from .core.checks import integer, number
    from .core.errors import InputError
    from .phantoms.anatomy import load_anatomy

    if args.out is not None and not str(args.out).strip():
        raise InputError("--out is empty; give the output folder, or leave --out out for ./bbbanomaly-demo")
    pipeline = getattr(args, "pipeline", "all")
    # an option a demo cannot use is refused, not silently ignored (the diffusion and T1/FLAIR phantoms have their
    # own extent; the T1/FLAIR phantom its own noise)
    names = {"dmri": "diffusion", "t1flair": "T1/FLAIR"}
    if args.slices is not None and pipeline in names:
        raise InputError(f"--slices sets the DSC and DCE objects' extent; the {names[pipeline]} phantom has a fixed "
                         "one: leave --slices out (or use --pipeline dsc, dce or all)")
    if args.snr is not None and pipeline == "t1flair":
        raise InputError("--snr sets the DSC, DCE and diffusion phantoms' noise; the T1/FLAIR phantom has a fixed "
                         "noise level: leave --snr out")
    #: the diffusion phantom's b0 SNR: the user's --snr, else its own default (30, not the DSC/DCE objects' 50)
    args.dmri_snr = args.snr
    if args.snr is None:
        args.snr = 50.0
    if args.slices is None:
        args.slices = "12"
    number(args.snr, "--snr", 0.0, 1e6, low_open=True,
           hint="the white-matter baseline SNR, e.g. 50 (the default); 20 is noisy, 500 nearly noise-free")
    integer(args.seed, "--seed", 0, 2**32 - 1, hint="any whole number from 0, e.g. 0 (the default)")
    if str(args.slices) != "all":
        nz = load_anatomy().shape[2]
        args.slices = integer(args.slices, "--slices", 1, nz,
                              hint=f"the number of axial slices (default 12), or 'all' for the whole brain ({nz})")


def run(args) -> int:
    check_options(args)
    from .dsc import DSCParameters, run_dsc
    from .dsc.command import print_summary
    from .figures import dsc_figure
    from .core.outputs import atomic_output_dir
    from .phantoms.dsc import make_dsc_phantom
    from .core.progress import ConsolePrinter, sub_progress

    from .dce import demo as dce_demo

    if args.pipeline == "dce":
        return dce_demo.run_standalone(args)
    if args.pipeline == "dmri":
        from .dmri import demo as dmri_demo

        return dmri_demo.run_standalone(args)
    if args.pipeline == "t1flair":
        from .structural import demo as t1flair_demo

        return t1flair_demo.run_standalone(args)
    printer = ConsolePrinter(quiet=args.quiet)
    slices = "all" if args.slices == "all" else int(args.slices)
    out = Path(args.out).resolve()
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        printer(0.0, "simulating the DSC reference object")
        phantom = make_dsc_phantom(snr=args.snr, slices=slices, seed=args.seed)
        phantom.write(tmp / "input")
        # kH = ρ = 1: the phantom's truth is in ml/100 ml, so the maps can be compared with it.
        params = DSCParameters(method=args.method, kh=1.0, density=1.0)
        masks = phantom.masks
        result = run_dsc(phantom.signal, params, aif_mask=masks["aif"], brain_mask=masks["brain"],
                         nawm_mask=masks["nawm"], tumor_mask=masks["tumor"], keep_curves=True,
                         progress=sub_progress(printer, 0.05, 0.9))
        result.write(tmp / "dsc")
        printer(0.95, "drawing the figure")
        dsc_figure(tmp / "dsc_demo.png", phantom.signal, result, masks, phantom.truth,
                   title=f"BBBAnomaly demo: DSC reference object, SNR {args.snr:g}, {args.method}")
        others = {}
        if args.pipeline == "all":  # every pipeline, in one all-or-nothing folder
            if args.dmri_snr is not None and not args.quiet:
                print(f"note: --snr {args.snr:g} applies to the DSC, DCE and diffusion objects; the T1/FLAIR phantom keeps "
                      "its own noise level")
            from .dmri import demo as dmri_demo
            from .structural import demo as t1flair_demo

            others["dce"] = (dce_demo, dce_demo.run_inside(args, tmp, printer))
            others["dmri"] = (dmri_demo, dmri_demo.run_demo(tmp, printer, seed=args.seed,
                                                            **({"snr": args.dmri_snr} if args.dmri_snr is not None else {})))
            others["t1flair"] = (t1flair_demo, t1flair_demo.run_demo(tmp, printer, seed=args.seed))
        printer(1.0, "done")
    print_summary(result, out / "dsc")
    print(f"  input series, masks and true maps: {out / 'input'}")
    print(f"  figure: {out / 'dsc_demo.png'}")
    print_truth_comparison(result, phantom)
    for module, run in others.values():
        module.print_summary(*run, out)
    return 0


def print_truth_comparison(result, phantom) -> None:
    """Tumor/NAWM ratios estimated vs true: what a radiologist would read off the maps."""
    tumor, nawm = phantom.masks["enhancing"], phantom.masks["nawm"]
    print("  enhancing rim / NAWM (estimated vs true):")
    for est_name, true_name in (("cbv", "cbv"), ("cbv_corrected", "cbv"), ("cbf", "cbf")):
        if est_name not in result.maps:
            continue
        est = result.maps[est_name].data
        true = phantom.truth[true_name].data
        print(f"    {est_name:14s} {np.mean(est[tumor]) / np.mean(est[nawm]):5.2f}  vs  "
              f"{np.mean(true[tumor]) / np.mean(true[nawm]):5.2f}")
