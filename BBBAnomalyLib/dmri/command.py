"""`bbbanomaly dmri`: argument parsing and output for :func:`run_dmri`. No science here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_options import add_output_options, output_suffix

from .parameters import Model, MotionCorrect, Threshold

HELP = """\
Anomaly map from a diffusion-weighted series with a model trained only on healthy brains
(seed: diffusion-MRI anomaly detection in glioma).

Input: a 4D DWI with at least one b0 and one shell near b = 1000 s/mm² (700–1300; rescaled to
1000) with >= 6 unique directions. Other shells are ignored; b = 2000-only data is refused, and so
are a 3-direction ("3-scan trace") or b0 + trace-only DWI and a scanner's ADC map: they carry no
direction information (use the patient's DTI series, or `bbbanomaly t1flair`).
The signal becomes S/S0, is resampled with spherical harmonics (15+ directions) or, for 6-14
directions (clinical DTI), through a diffusion tensor (with a warning: crossing fibres are not
represented) to the model's 64 canonical directions and, with its affine kept, to the model's
field of view (40×48×40 voxels of 4 mm, centred on the brain); the map comes back onto the input grid.
Head motion between the volumes is left as stored unless --motion-correct rigid (each volume registered
into the first b0's frame, gradient directions rotated; about 0.8 s CPU a volume).

  vae       3D variational autoencoder ("DAE"): score = |mean over directions of the S/S0
            reconstruction residual| (--vae-score rms: root mean square)
  recdisc   RecDiscNet: reconstruction + discriminative U-Net trained with synthetic
            anomalies; score = anomaly probability

Thresholds (label-free): fixed (the model card's value from healthy data, or --threshold-value),
otsu, meanpool (max of the 38.4 mm mean-pooled map); then a 3x3x3 opening.
Bundled weights were trained on healthy diffusion PHANTOMS (BBBAnomalyLib.phantoms.dmri), not
on patients: a demonstration, not clinically validated. Retrain on your own healthy controls
with `bbbanomaly train dmri-vae` / `dmri-recdisc`.

Outputs (in --out, default <input>_dmri/), as <map>.nii.gz (.nrrd with --format nrrd) on the input
grid: anomaly, anomaly_mask, mean_attenuation, brain_mask (the analysed, eroded mask); report.json and
.bbbanomaly.json (the manifest of what was written).

examples:
  bbbanomaly dmri dwi.nii.gz --bval dwi.bval --bvec dwi.bvec --out results
  bbbanomaly dmri dwi.nhdr --out results          # a DWI saved from Slicer (DWMRI NRRD)
  bbbanomaly dmri dwi.nii.gz --model vae --threshold otsu --mask brain.nii.gz
  bbbanomaly dmri dwi.nii.gz --model vae --weights run1/dmri-vae.pt --tumor-mask tumor.nii.gz
"""


def register(sub) -> None:
    p = sub.add_parser("dmri", help="diffusion anomaly map (VAE / RecDiscNet trained on healthy brains)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dwi", help="4D diffusion-weighted series: NIfTI (+ bval/bvec), a DWMRI NRRD as Slicer saves "
                               "DWIs (gradients from its header), or NRRD/DICOM with --bval/--bvec")
    io = p.add_argument_group("inputs")
    io.add_argument("--bval", metavar="FILE", help="FSL b-values (default: <dwi>.bval beside the image)")
    io.add_argument("--bvec", metavar="FILE", help="FSL gradient directions (default: <dwi>.bvec beside the image)")
    io.add_argument("--mask", metavar="MASK", help="brain mask (default: automatic, Otsu on log of the mean b0)")
    io.add_argument("--nawm-mask", metavar="MASK", help="normal-appearing white matter: summarised in the report")
    io.add_argument("--tumor-mask", metavar="MASK", help="tumor: summarised, and its overlap with the anomaly mask")
    method = p.add_argument_group("method")
    method.add_argument("--model", choices=[m.value for m in Model], default="recdisc",
                        help="network (default recdisc: AUC 0.96 vs 0.71 for vae on the phantom patients)")
    method.add_argument("--threshold", choices=[t.value for t in Threshold], default="fixed",
                        help="label-free threshold of the anomaly mask (default fixed)")
    method.add_argument("--threshold-value", type=float, metavar="T",
                        help="the fixed threshold (default: the model card's, from healthy data)")
    method.add_argument("--weights", metavar="NAME|FILE.pt",
                        help="bundled name or a .pt from `bbbanomaly train dmri-*` (default dmri-<model>-phantom)")
    method.add_argument("--vae-score", choices=["abs-mean", "rms"], default="abs-mean",
                        help="VAE residual over directions: |mean| (default, the seed's) or RMS")
    method.add_argument("--motion-correct", choices=[m.value for m in MotionCorrect], default="none",
                        help="head motion between the volumes: rigid = each volume registered into the first b0's "
                             "frame (mutual information), resampled and its gradient direction rotated where it "
                             "moved more than 0.15 voxel, the displacements in report['motion'], a warning above "
                             "one voxel (about 0.8 s CPU a volume at 2.5 mm); none = every volume read at the same "
                             "voxel, no motion estimate (default none)")
    method.add_argument("--no-opening", action="store_true", help="skip the 3x3x3 opening of the mask")
    method.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch device")
    add_output_options(p, "dmri")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..cli_options import claimed_output, out_dir_of

    out_dir = out_dir_of(args, args.dwi, "dmri")
    with claimed_output(out_dir, args, ('dwi', 'bval', 'bvec', 'mask', 'nawm_mask', 'tumor_mask', 'weights')):  # checked and locked before any work
        return _run(args, out_dir)


def _run(args, out_dir: Path) -> int:
    from ..config import effective_configuration
    from ..io import read_mask
    from ..core.progress import ConsolePrinter
    from .dwi_io import read_dwi
    from .parameters import DMRIParameters
    from .pipeline import run_dmri

    params = DMRIParameters(model=args.model, threshold=args.threshold, threshold_value=args.threshold_value,
                            weights=args.weights, device=args.device, opening=not args.no_opening,
                            vae_score=args.vae_score, motion_correct=args.motion_correct)
    printer = ConsolePrinter(quiet=args.quiet)
    printer(0.0, f"reading {args.dwi}")
    dwi = read_dwi(args.dwi, args.bval, args.bvec)  # gradients converted to RAS
    masks = {key: read_mask(getattr(args, key), dwi, key.replace("_", "-"))
             for key in ("mask", "nawm_mask", "tumor_mask") if getattr(args, key)}
    result = run_dmri(dwi, params, brain_mask=masks.get("mask"), nawm_mask=masks.get("nawm_mask"),
                      tumor_mask=masks.get("tumor_mask"), progress=printer)
    result.report["configuration"] = effective_configuration(args)  # for `bbbanomaly rerun`
    written = result.write(out_dir, overwrite=args.overwrite, suffix=output_suffix(args))
    print_summary(result, written)
    return 0


def print_summary(result, written: Path) -> None:
    rep = result.report
    print(f"diffusion anomaly ({rep['parameters']['model']}, weights {rep['model']['weights']}) written to {written}")
    print(f"  maps: {', '.join(f'{n}.nii.gz' for n in result.maps)}; brain_mask.nii.gz; report.json")
    shell = rep["input"]
    print(f"  shell b = {shell['shell_b']:g} s/mm², {shell['unique_directions']} directions, {shell['b0_volumes']} b0; "
          + (f"SH order {shell['sh_order']}" if shell.get("sh_order") else "resampled through a diffusion tensor"))
    motion = rep.get("motion")
    if motion and "skipped" not in motion:
        print(f"  head motion: largest displacement {motion['max_displacement_mm']:.1f} mm (volume "
              f"{motion['worst_volume']}); {len(motion['resampled_volumes'])} volume(s) moved back (registered and "
              "resampled)")
    s = rep["summary"]
    t = rep["threshold"]
    print(f"  threshold {t['method']} = {t['value']:.4g}; anomalous volume {s['anomaly_volume_ml']:.1f} ml "
          f"({100 * s['anomaly_fraction_of_brain']:.1f} % of the analysed brain)")
    if "tumor_to_nawm" in s:
        print(f"  tumor/NAWM mean score: {s['tumor_to_nawm']:.2f}")
    if "tumor_overlap" in s:
        o = s["tumor_overlap"]
        print(f"  vs the tumor mask given: Dice {o['dice']:.2f}, sensitivity {o['sensitivity']:.2f}"
              + (f", voxel AUC {o['voxel_auc']:.2f}" if "voxel_auc" in o else ""))
    for w in rep["warnings"]:
        print(f"  warning: {w}")
