"""`bbbanomaly dsc`: argument parsing and output for :func:`run_dsc`. No science here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_options import add_motion_option, add_output_options, output_suffix

from .parameters import DeconvolutionMethod, DSCParameters, InputKind, LeakageCorrection

HELP = """\
DSC perfusion maps from a T2*-weighted dynamic susceptibility contrast series.

The signal is converted to ΔR2*(t) = -ln(S/S0)/TE with the baseline S0 before the automatically
detected bolus arrival; the arterial input function (AIF) is the mean curve of --aif-mask, or is
selected automatically (--aif auto, Mouridsen 2006). Curves are deconvolved by the AIF:

  ssvd      truncated SVD (threshold 0.2); underestimates CBF when the tissue bolus is delayed
  csvd      block-circulant SVD (threshold 0.1); delay-insensitive
  osvd      block-circulant SVD, per-voxel threshold by oscillation index (default; Wu 2003)
  tikhonov  Tikhonov on the circulant matrix, per-voxel GCV (Calamante 2003)
  phae      physics-informed autoencoder (Fayolle 2025); the bundled weights were trained on simulated
            curves only (not clinically validated). By default the bolus delay of each ~8 mm block is
            removed, and in low-contrast cases (contrast-to-noise < 1.35) each voxel's curve is averaged with
            neighbours of like pre-contrast signal (map phae_pooled_curves: how many): unbiased at low
            SNR on the reference phantoms, but detail finer than 3 voxels inside tissue of equal baseline
            signal is smoothed (--guided-pooling auto|on|off);
            --adapt fine-tunes self-supervised weights (--weights dsc-phae-sim) on this case first
            (needs PyTorch)

BSW leakage correction (Boxerman 2006; on by default) fits K2 and corrects the curves.
Outputs (in --out, default <input>_dsc/), as <map>.nii.gz (.nrrd with --format nrrd) on the input grid:
cbv, cbf, mtt, tmax; cbv_corrected and k2 (not with --leakage-correction none); rcbv and rcbf (with
--nawm-mask); with --method phae also phae_fit_error, phae_cbf_uncertainty (weights with that output,
such as the default) and phae_pooled_curves (where guided pooling ran); aif_mask, brain_mask; aif.csv,
report.json and .bbbanomaly.json (the manifest of what was written).
Units: CBV ml/100 g, CBF ml/100 g/min, MTT and Tmax s, K2 1/s (with kH 0.73, ρ 1.04 g/ml;
--kh 1 --density 1 gives ml/100 ml as used by reference data: with --density 1 the report says per 100 ml).
An AIF that peaks hardly above the brain's tissue (a mask drawn on tissue) is refused, as is
concentration input without --mask (no automatic brain mask can be made from ΔR2*). A series that is not one
contrast bolus lowering the signal (ASL, BOLD, diffusion, a T1-weighted DCE series, one starting after its bolus) is
refused, saying what it looks like; a spin-echo series (as its DICOM or BIDS sidecar says) is quantified as gradient
echo with a warning that its absolute CBV/CBF are not comparable (read rCBV/rCBF against NAWM).

examples:
  bbbanomaly dsc dsc.nii.gz --aif-mask aif.nii.gz --te 0.03 --out results
  bbbanomaly dsc dsc.nrrd --aif auto --nawm-mask nawm.nii.gz --tumor-mask tumor.nii.gz
  bbbanomaly dsc echo1.nii.gz --second-echo echo2.nii.gz --te 0.015 0.045 --frame-interval 1.5
  bbbanomaly dsc deltaR2s.nii.gz --input-kind concentration --mask brain.nii.gz --times times.txt --method tikhonov
  bbbanomaly dsc dsc.nii.gz --aif-mask aif.nii.gz --method phae
  bbbanomaly dsc dsc.nii.gz --aif-mask aif.nii.gz --method phae --weights dsc-phae-sim --adapt
  bbbanomaly dsc dsc.nii.gz --aif-mask aif.nii.gz --method phae --guided-pooling off   # per-voxel detail
"""


def register(sub) -> None:
    p = sub.add_parser("dsc", help="DSC perfusion maps (CBV/CBF/MTT/Tmax, leakage K2)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("series", help="4D DSC series: NIfTI, NRRD or a DICOM folder (a folder holding both echoes of a dual-echo "
                   "series is read as dual-echo input)")
    io = p.add_argument_group("inputs")
    io.add_argument("--aif-mask", metavar="MASK", help="arterial voxels (nonzero) on the series grid")
    io.add_argument("--aif", choices=["mask", "auto"], default=None,
                    help="AIF source: 'mask' (needs --aif-mask) or 'auto' (default when no --aif-mask)")
    io.add_argument("--aif-search", action="store_true",
                    help="treat --aif-mask as a search region (e.g. a box around an artery): average only its "
                         "arterial voxels (peak >= half the region's 90th-percentile peak), ignore background")
    io.add_argument("--mask", metavar="MASK", help="brain mask: voxels to analyse (default: automatic, Otsu; required with "
                                                 "--input-kind concentration)")
    io.add_argument("--nawm-mask", metavar="MASK", help="normal-appearing white matter: gives rcbv and rcbf")
    io.add_argument("--tumor-mask", metavar="MASK", help="tumor: left out of the BSW reference; summarised in the report")
    io.add_argument("--second-echo", metavar="SERIES", help="second echo of a dual-echo acquisition (needs two --te)")
    io.add_argument("--input-kind", choices=[k.value for k in InputKind], default="signal",
                    help="'signal' (default) or 'concentration' for data already in ΔR2* (needs --mask)")
    timing = p.add_argument_group("timing and acquisition")
    timing.add_argument("--times", metavar="FILE", help="frame times in seconds, one per frame (text/CSV)")
    timing.add_argument("--frame-interval", type=float, metavar="S", help="seconds between frames")
    timing.add_argument("--te", type=float, nargs="+", metavar="S",
                        help="echo time(s) in seconds (e.g. 0.03); two values for dual-echo; default: from the file")
    timing.add_argument("--baseline-frames", type=int, nargs=2, metavar=("FIRST", "STOP"),
                        help="pre-bolus frames [FIRST, STOP) of the series as given, counted from 0 (default: detected from "
                             "the bolus arrival); a non-uniform series keeps the resampled frames at their times")
    timing.add_argument("--skip-frames", type=int, default=1,
                        help="frames left out at the start, before the T1 steady state (default 1; more are left out, "
                             "with a warning, where the first frames are still brighter than the baseline after them)")
    method = p.add_argument_group("method")
    method.add_argument("--method", choices=[m.value for m in DeconvolutionMethod], default="osvd",
                        help="deconvolution (default osvd)")
    method.add_argument("--oi-target", type=float, default=0.095,
                        help="oSVD oscillation-index target (0.095 in vivo, 0.035 for simulations)")
    add_motion_option(method, DSCParameters.motion_correct, "the first analysed one")
    method.add_argument("--slice-timing", choices=["auto", "none"], default=DSCParameters.slice_timing,
                        help="slice timing of a 2D multi-slice series: auto deconvolves each slice with the AIF moved to "
                             "that slice's acquisition time within the frame, where the file gives the slice times (a "
                             "BIDS sidecar's SliceTiming, the DICOM slices' acquisition times; PHAE: not corrected); "
                             "none (default) ignores them: each slice's Tmax is then off by its offset (up to one "
                             "frame interval), and a warning says so where the file gives them")
    method.add_argument("--leakage-correction", choices=[c.value for c in LeakageCorrection], default="bsw",
                        help="BSW leakage correction (default) or none")
    phae = p.add_argument_group("PHAE (--method phae)")
    phae.add_argument("--weights", metavar="NAME|FILE.pt",
                      help="PHAE weights: a bundled name or a .pt from `bbbanomaly train phae` (default dsc-phae-wide)")
    phae.add_argument("--adapt", action="store_true",
                      help="fine-tune self-supervised PHAE weights (e.g. --weights dsc-phae-sim) on this case's own curves "
                           "first (< 1 min on CPU); refused for weights trained with a supervised CBF term, such as "
                           "the default, which it would move off their calibration")
    phae.add_argument("--adapt-steps", type=int, default=150, help="optimizer steps of --adapt (default 150)")
    phae.add_argument("--no-pooled-delay", dest="pooled_delay", action="store_false",
                      help="let the network estimate every voxel's bolus delay alone. By default the delay of each "
                           "~8 mm block (from its mean curve) is removed from its voxels' curves first: a single voxel's "
                           "delay estimate shrinks towards zero in noise, and CBF then comes out low (-32 %% at SNR 50 "
                           "with a 4 s delay on the reference phantom, -9 %% with pooling)")
    phae.add_argument("--guided-pooling", choices=["auto", "on", "off"], default="auto",
                      help="average each voxel's curve with its 3x3x3 neighbours (in-plane where slices are > 3 mm), each "
                           "weighted by how alike its pre-contrast signal is, in units of that signal's noise: tissues "
                           "of different baseline signal (GM, WM, CSF, tumour) are not mixed. auto (default): only when "
                           "the case's contrast-to-noise (brain mean-curve peak / a voxel's baseline noise, in the "
                           "report) is below 1.35, where per-voxel CBF is biased low; on: always; "
                           "off: never. Costs detail within tissue of equal baseline signal (signal input only)")
    phae.add_argument("--no-guided-pooling", dest="guided_pooling", action="store_const", const="off",
                      help="the same as --guided-pooling off")
    phae.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch device for PHAE")
    method.add_argument("--kh", type=float, default=0.73, help="hematocrit factor kH (default 0.73)")
    method.add_argument("--density", type=float, default=1.04, help="brain density ρ in g/ml (default 1.04)")
    add_output_options(p, "dsc")
    p.set_defaults(run=run)


from ..cli_options import default_out_dir  # noqa: E402,F401  pyflakes: ignore (kept importable from here)


def run(args) -> int:
    from ..cli_options import claimed_output, out_dir_of

    out_dir = out_dir_of(args, args.series, "dsc")
    with claimed_output(out_dir, args, ('series', 'second_echo', 'aif_mask', 'mask', 'nawm_mask', 'tumor_mask', 'times', 'weights')):  # checked and locked before any work
        return _run(args, out_dir)


def _run(args, out_dir: Path) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ..config import effective_configuration
    from ..core.errors import InputError
    from ..io import read_mask
    from ..core.progress import ConsolePrinter
    from .pipeline import run_dsc

    if (args.weights or args.adapt or not args.pooled_delay or args.guided_pooling != "auto") and args.method != "phae":
        raise InputError("--weights, --adapt, --no-pooled-delay and --guided-pooling belong to --method phae")
    if args.times and args.frame_interval:
        raise InputError("give --times or --frame-interval, not both")
    if args.aif == "mask" and not args.aif_mask:
        raise InputError("--aif mask needs --aif-mask MASK")
    if args.aif_search and not args.aif_mask:
        raise InputError("--aif-search needs --aif-mask REGION")
    if args.aif == "auto" and args.aif_mask:
        raise InputError("--aif auto ignores --aif-mask; give one of them")
    te = args.te or []
    if len(te) > 2:
        raise InputError("--te takes one echo time, or two for dual-echo data")
    if len(te) == 2 and not args.second_echo and not Path(args.series).is_dir():  # a DICOM folder: see below
        raise InputError("two echo times given but no --second-echo series")
    params = DSCParameters(
        method=args.method, input_kind=args.input_kind, echo_time=te[0] if te else None,
        second_echo_time=te[1] if len(te) == 2 else None, kh=args.kh, density=args.density,
        leakage_correction=args.leakage_correction, osvd_oi_target=args.oi_target, aif_region=args.aif_search,
        phae_weights=args.weights, phae_adapt=args.adapt, phae_adapt_steps=args.adapt_steps, device=args.device,
        phae_pooled_delay=args.pooled_delay, phae_guided_pooling=args.guided_pooling,
        motion_correct=args.motion_correct, slice_timing=args.slice_timing, skip_frames=args.skip_frames,
        baseline_frames=tuple(args.baseline_frames) if args.baseline_frames else None)
    printer = ConsolePrinter(quiet=args.quiet)
    printer(0.0, f"reading {args.series}")
    # lazy: a NIfTI series stays in its file; run_dsc gathers its voxels frame block by frame block
    series, second, from_folder = _series_and_second_echo(args, te)
    masks = {key: read_mask(getattr(args, key), series, key.replace("_", "-"))
             for key in ("aif_mask", "mask", "nawm_mask", "tumor_mask") if getattr(args, key)}
    # The inputs' sha256 (for `bbbanomaly rerun`) is computed on a thread beside the run: hashing
    # releases the GIL, and the run leaves a core idle while it waits for its file to inflate.
    with ThreadPoolExecutor(1) as pool:
        configuration = pool.submit(effective_configuration, args)
        result = run_dsc(series, params, aif_mask=masks.get("aif_mask"), brain_mask=masks.get("mask"),
                         nawm_mask=masks.get("nawm_mask"), tumor_mask=masks.get("tumor_mask"), second_echo=second,
                         progress=printer, consume_input=True)  # the series is not used after: free it mid-run
        result.report["configuration"] = configuration.result()
    if from_folder:
        result.report["input"]["second_echo_source"] = from_folder
    written = result.write(out_dir, overwrite=args.overwrite, suffix=output_suffix(args))
    print_summary(result, written, output_suffix(args))
    if from_folder:
        print(f"  dual-echo: {from_folder}")
    return 0


def _series_and_second_echo(args, te):
    """(series, second echo or None, where the second echo came from when the series' DICOM folder held it).

    A DICOM folder whose one series holds two echo times is dual-echo input (io.dicom_echoes): the first echo is
    the series, the second its companion, each with its EchoTime; two --te values replace those. --second-echo
    beside it, one --te, or more than two echoes are refused in one line."""
    from ..core.errors import InputError
    from ..io import read_volume
    from ..io.dicom_echoes import read_echoes

    timing = {"times": args.times, "frame_interval": args.frame_interval}
    if Path(args.series).is_dir():
        echoes = read_echoes(args.series, **timing)
        if len(echoes) > 2:
            raise InputError(f"the DICOM series in '{args.series}' has {len(echoes)} echo times; DSC takes one echo or "
                             "two (dual-echo): put the two echoes to use in a folder of their own")
        if len(echoes) == 2:
            tes = [round(v.acquisition.echo_time * 1e3, 6) for v in echoes]
            if args.second_echo:
                raise InputError(f"'{args.series}' already holds both echoes of a dual-echo series (TE {tes[0]:g} and "
                                 f"{tes[1]:g} ms); leave out --second-echo")
            if len(te) == 1:
                raise InputError(f"'{args.series}' holds a dual-echo series (TE {tes[0]:g} and {tes[1]:g} ms) but one "
                                 "--te was given: give two values (TE1 TE2) or none to use the headers'")
            source = f"the second echo of the DICOM folder's series ({echoes[1].acquisition.extra['echo']})"
            return echoes[0], echoes[1], source
        if len(te) == 2 and not args.second_echo:
            raise InputError("two echo times given but no --second-echo series")
        series = echoes[0]
    else:
        # lazy: a NIfTI series stays in its file; run_dsc gathers its voxels frame block by frame block
        series = read_volume(args.series, **timing, lazy=True)
    second = read_volume(args.second_echo, **timing, lazy=True) if args.second_echo else None
    return series, second, None


#: the maps whose tumour/NAWM ratio the summary prints, and the map of each one's ratio to the NAWM mean voxel by voxel
RATIO_LINE = ("cbv", "cbv_corrected", "cbf")
RATIO_MAP = {"cbv": "rcbv", "cbv_corrected": "rcbv", "cbf": "rcbf"}


def print_summary(result, written: Path, suffix: str = ".nii.gz") -> None:
    rep = result.report
    print(f"DSC maps ({rep['parameters']['method']}) written to {written}")
    print(f"  maps: {', '.join(f'{n}{suffix}' for n in result.maps)}; aif.csv; report.json")
    aif = rep["aif"]
    ratio = aif.get("tissue_peak_ratio")
    print(f"  AIF: {aif['method']}, {aif['n_voxels']} voxels, peak {aif['peak']:.3g} 1/s at {aif['peak_time_s']:.1f} s"
          + (f" ({ratio:.3g}x the brain's median tissue peak)" if ratio is not None else ""))
    brain = rep["summary"]["brain"]
    print("  brain medians: " + ", ".join(
        f"{n} {brain[n]['median']:.3g}" for n in ("cbv", "cbf", "mtt") if brain.get(n, {}).get("n")))
    ratios = rep["summary"].get("tumor_to_nawm")
    if ratios is not None:
        from .validation import MEDIAN_RATIO_MAPS, median_ratio

        shown = [n for n in ratios if n in RATIO_LINE]
        # MTT's ratio of means is decided by a few NAWM voxels (validation.MEDIAN_RATIO_MAPS): its ratio of medians
        medians = {n: r for n in MEDIAN_RATIO_MAPS if (r := median_ratio(rep["summary"], n)) is not None}
        items = [*(f"{n} {ratios[n]:.2f}" for n in shown),
                 *(f"{n} {r:.2f} (of the medians)" for n, r in medians.items())]
        if items:
            print("  tumor/NAWM: " + ", ".join(items))
        shown += list(medians)
        # each map's caveat beside its ratio, as roi-stats prints it (PHAE CBF's bias, spin echo, low CNR, a saturated
        # AIF), and that of the map of the same ratio voxel by voxel (rcbv, rcbf: e.g. spin-echo ratios run low)
        from ..roistats import caveat_notes

        names = dict.fromkeys([*shown, *(RATIO_MAP[n] for n in shown if n in RATIO_MAP)])
        for note in caveat_notes({n: (rep["maps"].get(n) or {}).get("caveat") for n in names}):
            print(f"  {note}")
    for w in rep["warnings"]:
        print(f"  warning: {w}")
