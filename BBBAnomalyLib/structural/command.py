"""`bbbanomaly t1flair`: argument parsing and output for :func:`run_t1flair`. No science here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_options import add_output_options, output_suffix

from .parameters import (BIAS_CORRECTION, DEFAULT_CAE, DEFAULT_ENHANCER, DEFAULT_IDENTIFIER, DEFAULT_SYNTHESIS,
                         REGISTRATION, T1FlairParameters)

HELP = """\
Synthetic contrast-enhanced T1 (T1Gd), blood-brain-barrier status and an anomaly map from a
non-contrast T1 and a T2-FLAIR, without contrast agent.

1. The FLAIR is resampled onto the T1 grid when its grid differs (and registered to the T1 with
   --register rigid); the intensity bias field of each image is corrected inside the brain
   (--bias-correct); histogram-mode normalisation (seed cbsi-contrast-free-bbb-status); brain
   slices resampled to the network size.
2. ET-guided conditional diffusion synthesises T1Gd twice -- as if the tumor enhanced (BBB
   disrupted) and as if it did not (intact) -- with a deterministic few-step sampler (--steps).
3. An identification CNN scores, on the tumor slices (--tumor-mask, or the diffusion model's
   segmentation head), which synthesis is self-consistent; the larger wins (contrastive maximum)
   -> BBB status "intact", "disrupted" or "indeterminate" from one calibrated probability. The
   probability is calibrated on phantoms and, on a patient scan, weighed by the identifier's record
   on real scans it never saw: the bundled identifiers are at chance there (docs/validation.md), so
   every patient scan is "indeterminate" (p = 0.5) until weights with a real record are given.
4. A 3D convolutional autoencoder trained on normal anatomy gives a voxel anomaly map and a
   patient-level score (seed cae-brain-anomaly).
5. The synthetic T1Gd is the normalised T1 plus the enhancement a voxel-feature predictor expects
   (--enhancer-weights), shrunk to 0 where its models disagree; enhancement_probability ranks the
   voxels that brighten with contrast.

Outputs (in --out, default <T1 name>_t1flair/), as <map>.nii.gz (.nrrd with --format nrrd) on the T1 grid:
synthetic_t1gd, enhancement, enhancement_uncertainty, enhancement_probability (not with --enhancer-weights
none), anomaly (not with --no-anomaly), tumor_probability, synthetic_t1gd_enhancing,
synthetic_t1gd_non_enhancing, brain_mask, tumor_roi; report.json with bbb_status = {call, probability,
indeterminate_band, reasons, per_label_scores, tumor_roi, ...} and applicability = {checks, maps}; and
.bbbanomaly.json (the manifest of what was written). Intensities of the syntheses are on the seed's 0-255
normalised scale.

The bundled weights are a demonstration, not a clinical model: trained for minutes on a CPU on
simulated phantoms, then fine-tuned with two real cases (the default *-demo weights; the
*-phantom ones are phantoms only). Train your own with
`bbbanomaly train t1gd-diffusion | bbb-identifier | cae`.

examples:
  bbbanomaly t1flair --t1 t1.nii.gz --flair flair.nii.gz --out results
  bbbanomaly t1flair --t1 t1.nii.gz --flair flair.nii.gz --mask brain.nii.gz --tumor-mask tumor.nii.gz --steps 8
"""


def register(sub) -> None:
    p = sub.add_parser("t1flair", help="synthetic T1Gd, BBB status and anomaly map from T1 + FLAIR",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs")
    io.add_argument("--t1", required=True, metavar="T1", help="non-contrast T1-weighted volume (NIfTI, NRRD, DICOM folder)")
    io.add_argument("--flair", required=True, metavar="FLAIR", help="T2-FLAIR volume (resampled to the T1 grid if needed)")
    io.add_argument("--mask", metavar="BRAIN", help="brain mask on the T1 grid (default: automatic)")
    io.add_argument("--tumor-mask", metavar="ROI", help="tumor ROI on the T1 grid where the BBB status is decided "
                                                        "(default: the segmentation head's tumor, flagged if uncertain)")
    m = p.add_argument_group("method")
    m.add_argument("--steps", type=int, default=4, help="sampler steps (default 4; the seed used 100)")
    m.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    m.add_argument("--seed", type=int, default=0, help="sampler noise seed (same seed, same result)")
    m.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest on a busy CPU)")
    m.add_argument("--size", type=int, help="network in-plane size (default: that of the synthesis weights); a "
                                            "multiple of 8 from 16 to 4096")
    m.add_argument("--synthesis-weights", metavar="NAME|FILE.pt",
                   help=f"diffusion weights (default: bundled {DEFAULT_SYNTHESIS}, phantoms + 2 real cases; "
                        "t1flair-diffusion-phantom: phantoms only)")
    m.add_argument("--identifier-weights", metavar="NAME|FILE.pt",
                   help=f"identification weights, matching the synthesis weights (default: bundled {DEFAULT_IDENTIFIER}; "
                        "t1flair-identifier-phantom goes with t1flair-diffusion-phantom)")
    m.add_argument("--cae-weights", metavar="NAME|FILE.pt",
                   help=f"3D autoencoder weights (default: bundled {DEFAULT_CAE}; t1flair-cae-phantom: phantoms only)")
    m.add_argument("--enhancer-weights", metavar="NAME|FILE.pt",
                   help=f"enhancement predictor for the synthetic T1Gd (default: bundled {DEFAULT_ENHANCER}, three real "
                        "cases; 'none': the synthetic T1Gd from the diffusion syntheses)")
    m.add_argument("--no-anomaly", action="store_true", help="skip the 3D autoencoder anomaly map")
    m.add_argument("--bias-correct", choices=list(BIAS_CORRECTION), default=T1FlairParameters.bias_correct,
                   help="intensity bias-field correction of the T1 and the FLAIR, each inside the brain mask, before "
                        f"normalisation (default {T1FlairParameters.bias_correct}). none: the images as given. n4: N4 "
                        "(ITK's 4 levels) fitted on a 4 mm copy and divided out at full resolution; the input files "
                        "are not changed and report.json's bias_field gives each field's range. On the real cases N4 "
                        "also flattened the tumour's FLAIR signal and lowered the anomaly map's tumour AUC (0.86 to "
                        "0.45 on TCGA-FG-6692), more than a ±15 %% field did: for research (docs/reliability.md). "
                        "n4-lesion-out: N4 fitted with the FLAIR-hyperintense lesion (found on a first coarse N4 "
                        "pass, grown by 8 mm) left out, the field divided out everywhere; report.json's "
                        "bias_field.lesion_excluded says what was left out")
    m.add_argument("--register", choices=list(REGISTRATION), default=T1FlairParameters.register,
                   help="align the FLAIR to the T1 (default %(default)s). none: the FLAIR is placed by the files' "
                        "coordinates alone; a quick rigid estimate warns when the two look misaligned by more than "
                        "2 mm (the patient moves between series). rigid: a rigid registration (mutual information "
                        "inside the brain) then corrects that motion and the FLAIR is resampled once; report.json's "
                        "registration gives the motion found. On the real cases moved by 2-6 mm and 2-6 degrees it "
                        "brought the maps back to the unmoved run's; not the default because it also changed the "
                        "unmoved cases' maps (docs/reliability.md). The input files are not changed")
    m.add_argument("--status-evidence", choices=["real", "phantom"], default="real",
                   help="how far the BBB status's p(disrupted) is trusted. real (default): weighed by the identifier's "
                        "leave-one-case-out record on real scans, which for the bundled identifiers is at chance, so a "
                        "patient scan gets p = 0.5 and 'indeterminate'; phantom: the phantom calibration as it is "
                        "(research on the project's simulated phantoms only)")
    add_output_options(p, "t1flair")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..cli_options import claimed_output, out_dir_of

    out_dir = out_dir_of(args, args.t1, "t1flair")
    with claimed_output(out_dir, args, ('t1', 'flair', 'mask', 'tumor_mask', 'synthesis_weights', 'identifier_weights', 'cae_weights',
                                        'enhancer_weights')):  # checked and locked before any work
        return _run(args, out_dir)


def _run(args, out_dir: Path) -> int:
    from ..config import effective_configuration
    from ..io import read_volume
    from ..core.progress import ConsolePrinter
    from .pipeline import run_t1flair

    chosen = {k: getattr(args, k) for k in ("synthesis_weights", "identifier_weights", "cae_weights",
                                            "enhancer_weights") if getattr(args, k, None)}
    if str(chosen.get("enhancer_weights", "")).lower() == "none":
        chosen["enhancer_weights"] = None
    params = T1FlairParameters(steps=args.steps, device=args.device, seed=args.seed, size=args.size, threads=args.threads,
                               anomaly_map=not args.no_anomaly, status_evidence=args.status_evidence,
                               bias_correct=args.bias_correct, register=args.register, **chosen)
    printer = ConsolePrinter(quiet=args.quiet)
    printer(0.0, f"reading {args.t1} and {args.flair}")
    t1, flair = read_volume(args.t1), read_volume(args.flair)
    result = run_t1flair(t1, flair, params, brain_mask=args.mask, tumor_mask=args.tumor_mask, progress=printer)
    result.report["configuration"] = effective_configuration(args)  # for `bbbanomaly rerun`
    written = result.write(out_dir, overwrite=args.overwrite, suffix=output_suffix(args))
    print_summary(result, written)
    return 0


def print_summary(result, written: Path) -> None:
    rep = result.report
    bbb = rep["bbb_status"]
    print(f"T1/FLAIR results written to {written}")
    print(f"  maps: {', '.join(result.maps)}; report.json")
    band = bbb.get("indeterminate_band", [0.35, 0.65])
    print(f"  BBB status: {bbb['call']} (p(disrupted) = {bbb['probability']:.2f}, indeterminate band {band[0]:.2f}-"
          f"{band[1]:.2f}; S+ {bbb['per_label_scores']['enhancing']:.2f}, S- {bbb['per_label_scores']['non_enhancing']:.2f} "
          f"over {bbb['tumor_slices']} tumor slices; ROI: {bbb['tumor_roi']})")
    for reason in bbb.get("reasons", []):
        print(f"    reason: {reason}")
    if rep.get("anomaly"):
        print(f"  anomaly: patient score {rep['anomaly']['patient_score']:.3f} (z = {rep['anomaly']['patient_score_z']:.1f})")
    for w in rep["warnings"]:
        print(f"  warning: {w}")
    print("  note: demonstration models, not for clinical decisions")
