"""The DCE part of `bbbanomaly demo`: the DCE reference object through the whole pipeline.

Writes OUT/dce_input/ (the simulated series, masks, truth, in the layout `bbbanomaly train dce-rls`
reads), OUT/dce/ (maps, aif.csv, report.json) and OUT/dce_demo.png, and prints RLS and Ktrans
against the truth.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(tmp: Path, printer, slices, snr: float, seed: int, model: str = "extended-tofts"):
    """Simulate, run and draw into the (temporary) output folder ``tmp``; returns (result, phantom)."""
    from ..core.progress import sub_progress
    from ..phantoms.dce import make_dce_phantom
    from .figures import dce_figure
    from .parameters import DCEParameters
    from .pipeline import run_dce

    printer(0.0, "simulating the DCE reference object")
    phantom = make_dce_phantom(snr=snr, slices=slices, seed=seed)
    phantom.write(tmp / "dce_input")
    m = phantom.masks
    params = DCEParameters(model=model, t10=None)
    result = run_dce(phantom.signal, params, aif_mask=m["aif"], brain_mask=m["brain"], tumor_mask=m["tumor"],
                     t10_map=phantom.truth["t10"], progress=sub_progress(printer, 0.05, 0.9))
    result.write(tmp / "dce")
    printer(0.95, "drawing the DCE figure")
    dce_figure(tmp / "dce_demo.png", phantom.signal, result, m, phantom.truth,
               title=f"BBBAnomaly demo: DCE reference object, SNR {snr:g}, {model}")
    return result, phantom


def print_truth_comparison(result, phantom) -> None:
    """What a reader checks first: does RLS light up the leaky tumor, and is Ktrans right there?"""
    from ..metrics import pearson_r, roc_auc

    m = phantom.masks
    true_k = phantom.truth["ktrans"].data
    rls = result.maps["rls"].data if "rls" in result.maps else None
    est_k = result.maps["ktrans"].data
    tumor = m["tumor"]
    print(f"  tumor Ktrans mean (1/min): estimated {est_k[tumor].mean():.4f} vs true {true_k[tumor].mean():.4f}; "
          f"r = {pearson_r(est_k, true_k, tumor):.3f}")
    if rls is not None:
        tissue = m["brain"] & ~m["vessels"]
        print(f"  RLS (% SER): tumor {rls[tumor].mean():.2f} vs NAWM {rls[m['nawm']].mean():.2f}; "
              f"AUC leaky vs non-leaky {roc_auc(m['leaky'][tissue], rls[tissue]):.3f}; "
              f"r(RLS, true Ktrans) in tumor {pearson_r(rls, true_k, tumor):.3f}")


def run_standalone(args) -> int:
    """`bbbanomaly demo --pipeline dce`: the DCE demo alone into --out."""
    from ..core.outputs import atomic_output_dir
    from ..core.progress import ConsolePrinter

    printer = ConsolePrinter(quiet=args.quiet)
    out = Path(args.out).resolve()
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        result, phantom = run_demo(tmp, printer, _slices(args), args.snr, args.seed)
        printer(1.0, "done")
    print_summary(result, phantom, out)
    return 0


def run_inside(args, tmp: Path, printer):
    """The DCE demo inside the caller's (temporary) output folder; returns what print_summary needs."""
    return run_demo(tmp, printer, _slices(args), args.snr, args.seed)


def print_summary(result, phantom, out: Path) -> None:
    from .command import print_summary as print_maps

    print_maps(result, out / "dce")
    print(f"  DCE input series, masks and true maps: {out / 'dce_input'}; figure: {out / 'dce_demo.png'}")
    print_truth_comparison(result, phantom)


def _slices(args):
    return "all" if str(args.slices) == "all" else int(args.slices)
