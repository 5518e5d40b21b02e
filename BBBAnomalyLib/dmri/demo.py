"""The diffusion part of `bbbanomaly demo` (``--pipeline dmri``): a phantom patient through `run_dmri`.

Writes OUT/dmri_input/ (dwi.nii.gz + FSL bval/bvec, masks, true FA/MD/labels, in the case layout
the trainers read), OUT/dmri/ (maps and report.json), OUT/dmri_demo.png (+ _curves.png), and
prints how well the anomaly map finds the simulated tumor.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(tmp: Path, printer, seed: int = 0, model: str = "recdisc", threshold: str = "fixed", snr: float = 30.0):
    from ..phantoms.dmri import make_dmri_phantom
    from ..core.progress import sub_progress
    from .figures import dmri_figure
    from .parameters import DMRIParameters
    from .pipeline import run_dmri

    printer(0.0, "simulating a diffusion phantom patient")
    phantom = make_dmri_phantom(1000 + seed, snr=snr, tumor=True)
    phantom.write(tmp / "dmri_input")
    m = phantom.masks
    result = run_dmri(phantom.dwi, DMRIParameters(model=model, threshold=threshold), brain_mask=m["brain"],
                      nawm_mask=m["nawm"], tumor_mask=m["tumor"], progress=sub_progress(printer, 0.1, 0.9))
    result.write(tmp / "dmri")
    printer(0.95, "drawing the diffusion figure")
    dmri_figure(tmp / "dmri_demo.png", phantom.dwi, result, {"tumor": m["tumor"], "nawm": m["nawm"]},
                title=f"BBBAnomaly demo: diffusion phantom patient, {model}, SNR {snr:g}")
    return result, phantom


def run_standalone(args) -> int:
    """`bbbanomaly demo --pipeline dmri`: the diffusion demo alone into --out."""
    from ..core.outputs import atomic_output_dir
    from ..core.progress import ConsolePrinter

    printer = ConsolePrinter(quiet=getattr(args, "quiet", False))
    out = Path(args.out).resolve()
    with atomic_output_dir(out, overwrite=getattr(args, "overwrite", False)) as tmp:
        dmri_snr = getattr(args, "dmri_snr", None)  # the user's --snr (demo.check_options), else the phantom's 30
        result, phantom = run_demo(tmp, printer, seed=getattr(args, "seed", 0),
                                   **({"snr": dmri_snr} if dmri_snr is not None else {}))
        printer(1.0, "done")
    print_summary(result, phantom, out)
    return 0


def print_summary(result, phantom, out: Path) -> None:
    from .command import print_summary as print_maps

    print_maps(result, out / "dmri")
    print(f"  diffusion input, masks and truth: {out / 'dmri_input'}; figure: {out / 'dmri_demo.png'}")
    info = phantom.info["tumor"]
    print(f"  simulated tumor: {info['core']} core r {info['core_radius_mm']} mm, edema to {info['edema_radius_mm']} mm, "
          f"infiltration to {info['infiltration_radius_mm']} mm")
