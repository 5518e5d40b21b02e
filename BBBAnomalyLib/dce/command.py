"""`bbbanomaly dce`: argument parsing and output for :func:`run_dce`. No science here."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..cli_options import add_motion_option, add_output_options, output_suffix
from .parameters import (DEFAULT_RELAXIVITY, MASK_OUTPUTS, MODEL_MAPS, OTHER_OUTPUTS, RLS_MAPS, VE_DEPENDENT_MAPS,
                         DCEParameters, InputKind, Model, RLSSource)

#: --blood-t10's help. The typical values are those of .aif.BLOOD_T10_S's comment, with their sources: arterial blood
#: 1.66 s in vitro at 3 T (Hct 0.42, Lu et al. 2004), 1.84 s in vivo in the carotid at 3 T (Li et al. 2017), about
#: 1.44 s at 1.5 T (Stanisz et al. 2005).
BLOOD_T10_HELP = ("pre-contrast T1 of arterial blood in seconds, for the measured AIF only (--aif-mask, --aif-search, "
                  "--aif auto): its voxels are converted to concentration with this T10 instead of --t10 (with a T10 "
                  "map or --vfa it overrides the map in the AIF's voxels); the tissue keeps its T10. Typical: about "
                  "1.65 s at 3 T (1.6-1.9 s reported), 1.45 s at 1.5 T; longer with a low hematocrit. Without it "
                  "the AIF takes the tissue's T10, and a single --t10 of tissue (white matter ~1 s, grey ~1.4 s) "
                  "reads the AIF too high and Ktrans, ve, vp too low (the tissue's own T10 error remains: a T10 map "
                  "or --vfa is best for the tissue). Ignored, with a report warning, for a population AIF, "
                  "concentration input or without a tissue T10")
#: BBBAnomalyLib.perfusion.population_aif.POPULATION_AIFS' names (listed here so --help imports no scipy; a test keeps them equal)
POPULATION_AIF_NAMES = ["parker", "georgiou", "fritz-hansen", "weinmann", "mcgrath"]


def _outputs_help() -> str:
    """The outputs paragraph of --help, from the tables the pipeline writes by (.parameters; a test keeps a run's
    files equal to them)."""
    default = ", ".join(MODEL_MAPS["extended-tofts"])
    others = "; ".join(f"{name}: {', '.join(maps)}" for name, maps in MODEL_MAPS.items() if name != "extended-tofts")
    return (f"Outputs (in --out, default <input>_dce/), on the input grid as <map>.nii.gz (or .nrrd with --format "
            f"nrrd): {', '.join(RLS_MAPS)} (the RLS maps; not with --rls none), the model's maps ({default} for "
            f"extended-tofts; {others}), delay (not with --max-delay 0) and fit_r2; {MASK_OUTPUTS[0]}, "
            f"{MASK_OUTPUTS[1]} (the arterial voxels averaged: --aif-mask or --aif auto), "
            f"{', '.join(OTHER_OUTPUTS)} and .bbbanomaly.json (the manifest of what was written). "
            f"{', '.join(VE_DEPENDENT_MAPS)} (those of them the model has) are 0 "
            "where the data do not determine ve (the report's ve_determination says how many voxels). Units: Ktrans and kep 1/min, "
            "ve and vp fractions, RLS % SER, delay s.")


HELP = """\
BBB leakage maps from a T1-weighted dynamic contrast-enhanced (DCE) series.

Model-free: the residual leakage signal (RLS) of an autoencoder of normal enhancement curves
(bundled weights, --rls bundled, or trained on this case's normal-appearing brain, --rls case):
rls (leakage), rls_abs and rls_uncertainty, in percent signal enhancement.
Classic, beside it: Tofts / extended Tofts (default) / Patlak fitted to every voxel (linear least
squares, optional --refine), or the two-compartment exchange/uptake models (--model 2cxm|2cum: Fp,
PS, ve, vp, E, Tc; linear initialisation + Levenberg-Marquardt; they need frames <= ~2 s to
separate Fp from PS, and the report warns on slower series), with a per-voxel bolus delay up to
--max-delay seconds.

Signal -> concentration: SPGR with T10 (--t10 seconds or a T10 map, or --vfa FILES to map it from a
variable-flip-angle series), --flip-angle, --tr and
--relaxivity; without T10, relative enhancement (S/S0 - 1) is used and Ktrans is semi-quantitative.
A measured AIF is converted with the tissue's T10 unless --blood-t10 gives arterial blood's own
(about 1.65 s at 3 T): with a single --t10 of tissue the AIF reads too high and Ktrans, ve, vp too low.
AIF: the mean curve of --aif-mask (blood; --hematocrit converts to plasma, 0 if already plasma;
with --aif-search only the arterial voxels of the region, e.g. a box drawn around an artery),
--aif auto (arterial voxels chosen automatically, written as aif_mask; needs a T10 map or --vfa),
or --population-aif NAME
(parker, the default when no mask is given; georgiou, fritz-hansen, weinmann; mcgrath for rats),
shifted to the bolus arrival. Every population curve was measured at 0.1 mmol/kg: give --dose
(mmol/kg) for a split-dose, weight-capped or half-dose protocol (Ktrans, vp and ve scale with
1 / the AIF's dose). The dose a DICOM series' header states (its ContrastBolus tags and
PatientWeight) is offered in a warning where it differs from that by more than 20 %, never
applied by itself: --dose header applies it. Likewise the agent's published r1 (the agent the
header names, at its field strength) where it differs from the default --relaxivity by more than
15 %: --relaxivity header applies it.
""" + textwrap.fill(_outputs_help(), 100, break_on_hyphens=False) + """

examples:
  bbbanomaly dce dce.nii.gz --aif-mask aif.nii.gz --t10 1.4 --flip-angle 15 --tr 0.005 --out results
  bbbanomaly dce dce.nii.gz --aif-mask aif.nii.gz --t10 1.4 --blood-t10 1.65 --out results
  bbbanomaly dce dce.nrrd --population-aif parker --tumor-mask tumor.nii.gz --model patlak
  bbbanomaly dce conc.nii.gz --input-kind concentration --mask brain.nii.gz --frame-interval 5 --rls bundled
  bbbanomaly dce dce.nii.gz --vfa fa02.nii.gz fa05.nii.gz fa15.nii.gz --aif auto --model 2cxm
"""


def register(sub) -> None:
    p = sub.add_parser("dce", help="DCE leakage: RLS (autoencoder) beside Tofts/Patlak Ktrans, ve, vp",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("series", help="4D DCE series: NIfTI, NRRD or a DICOM folder")
    io = p.add_argument_group("inputs")
    io.add_argument("--aif-mask", metavar="MASK", help="arterial voxels (nonzero) on the series grid")
    io.add_argument("--aif-search", action="store_true",
                    help="treat --aif-mask as a search region (e.g. a box around an artery): average only its "
                         "arterial voxels (peak >= half the region's 90th-percentile peak), ignore air")
    io.add_argument("--population-aif", choices=POPULATION_AIF_NAMES, help="population AIF instead of a mask "
                    "(parker is the default when no --aif-mask and no --aif auto; mcgrath is a rat AIF)")
    io.add_argument("--dose", type=number_or_header, metavar="MMOL_PER_KG", help="contrast dose in mmol/kg (not ml "
                    "or ml/kg: 0.2 ml/kg of a 0.5 M agent is 0.1 mmol/kg) that scales the population AIF (default: "
                    "the model's own, 0.1); for a split-dose, weight-capped or half-dose protocol. 'header': the "
                    "dose a DICOM series' header states (agent, ml, PatientWeight; refused where they define none); "
                    "without --dose that dose is only offered in a warning. Not for a measured AIF")
    io.add_argument("--aif", choices=["mask", "auto"], help="'auto': choose arterial voxels automatically "
                    "(Mouridsen clustering + peak height; written as aif_mask; needs a T10 map or --vfa: with one "
                    "--t10 for every voxel, CSF looks arterial); 'mask' needs --aif-mask")
    io.add_argument("--mask", metavar="MASK", help="brain mask: voxels to analyse (default: automatic, Otsu)")
    io.add_argument("--tumor-mask", metavar="MASK", help="tumor: left out of RLS training; summarised in the report")
    io.add_argument("--input-kind", choices=[k.value for k in InputKind], default="signal",
                    help="'signal' (default) or 'concentration' (mM)")
    acq = p.add_argument_group("timing and acquisition")
    acq.add_argument("--times", metavar="FILE", help="frame times in seconds, one per frame (text/CSV)")
    acq.add_argument("--frame-interval", type=float, metavar="S", help="seconds between frames")
    acq.add_argument("--t10", metavar="S|MAP", help="pre-contrast T1 in seconds: a value (e.g. 1.4) or a T10 map "
                     "(on another grid it is read at the DCE voxels)")
    acq.add_argument("--blood-t10", type=float, metavar="S", help=BLOOD_T10_HELP)
    acq.add_argument("--vfa", nargs="+", metavar="FILE", help="variable-flip-angle series (one 4D file or a 3D file "
                     "per angle): its T1 map (`bbbanomaly t1map`, nonlinear) is the T10 map; on another grid than the "
                     "DCE series it is fitted there and read at the DCE voxels")
    acq.add_argument("--vfa-flip-angles", type=float, nargs="+", metavar="DEG",
                     help="flip angles of --vfa, one per frame/file (default: from their metadata)")
    acq.add_argument("--vfa-tr", type=float, metavar="S", help="TR of --vfa in seconds (default: from its metadata)")
    acq.add_argument("--b1", metavar="MAP", help="relative B1 map for the --vfa fit (on another grid it is resampled)")
    acq.add_argument("--flip-angle", type=float, metavar="DEG", help="flip angle in degrees (default: from the file)")
    acq.add_argument("--tr", type=float, metavar="S", help="repetition time in seconds (default: from the file)")
    # default None = DEFAULT_RELAXIVITY, resolved by DCEParameters: a given 4.5 is told from the default (session 24)
    acq.add_argument("--relaxivity", type=number_or_header, default=None, metavar="R1|header",
                     help=f"r1 of the contrast agent in 1/(s·mM) (default {DEFAULT_RELAXIVITY:g}): with a population "
                          "AIF Ktrans, vp and ve scale with 1 / r1 (a measured AIF cancels it). 'header': the "
                          "published r1 of the agent a DICOM series' header names, at its MagneticFieldStrength "
                          "(refused where there is none); without it that r1 is offered in a warning where the "
                          "default is used, and compared with an r1 given")
    acq.add_argument("--hematocrit", type=float, default=0.42, help="blood -> plasma for the AIF (default 0.42; "
                     "0 when the AIF curve is already plasma)")
    acq.add_argument("--baseline-frames", type=int, metavar="N", help="pre-contrast frames (default: detected)")
    # session 22 (dce/aif_t2star.py): the measured AIF's blood T2*
    acq.add_argument("--te", type=float, metavar="S", help="echo time in seconds (default: from the file, e.g. BIDS "
                     "EchoTime): the measured AIF's blood T2* at this TE is estimated and warned (report aif.t2star)")
    acq.add_argument("--aif-t2star-correct", action="store_true", help="convert the measured AIF with its blood's "
                     "T2* at the echo time (literature ΔR2* of whole blood; off by default: see report aif.t2star)")
    method = p.add_argument_group("method")
    method.add_argument("--model", choices=[m.value for m in Model], default="extended-tofts",
                        help="pharmacokinetic model (default extended-tofts)")
    method.add_argument("--max-delay", type=float, default=6.0, metavar="S",
                        help="largest per-voxel bolus delay searched, seconds (default 6; 0 = off); raise it where "
                             "the tumour or brain lags the AIF by more than that (the report warns and suggests a "
                             "value)")
    add_motion_option(method, DCEParameters.motion_correct, "the first")
    method.add_argument("--slice-timing", choices=["auto", "none"], default=DCEParameters.slice_timing,
                        help="slice timing of a 2D multi-slice series: auto fits each slice with the AIF moved to that "
                             "slice's acquisition time within the frame, where the file gives the slice times (a BIDS "
                             "sidecar's SliceTiming, the DICOM slices' acquisition times; a drawn or automatic AIF, "
                             "not the exchange models); none (default) ignores them (at 5 s frames each slice's vp "
                             "was then off by up to 25 %%), and a warning says so where the file gives them")
    method.add_argument("--refine", action="store_true", help="nonlinear (Levenberg-Marquardt) refinement of the fit")
    method.add_argument("--rls", choices=[s.value for s in RLSSource], default="auto",
                        help="RLS autoencoder: auto (default: the bundled weights for protocols inside their training "
                             "domain; outside it this case, when a tumor mask is given and enough normal brain is "
                             "left; the report says which and why), case, bundled, or none")
    method.add_argument("--rls-weights", metavar="NAME|FILE",
                        help="with --rls bundled or auto: a bundled weights name (default dce-rls-world) or a .pt file from "
                             "`bbbanomaly train dce-rls` with its .json card beside it (the checksum is checked)")
    method.add_argument("--rls-epochs", type=int, default=8, help="per-case training epochs (default 8)")
    method.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch device (default auto)")
    method.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    method.add_argument("--seed", type=int, default=0, help="random seed of the RLS training (default 0)")
    add_output_options(p, "dce")
    p.set_defaults(run=run)


def number_or_header(text: str):
    """--dose's and --relaxivity's value: 'header' (the dose the DICOM header states: dce/stated_dose.py; the r1 of
    the agent it names: dce/stated_relaxivity.py) or a number, whose range is checked later (one line, exit 2)."""
    return "header" if str(text).strip().lower() == "header" else float(text)


def parse_t10(value: str | None, series):
    """(scalar seconds or None, map Volume or None) from --t10."""
    from ..core.errors import InputError
    from ..io import read_volume

    if value is None:
        return None, None
    try:
        return float(value), None
    except ValueError:
        pass
    if not Path(value).exists():
        raise InputError(f"--t10 {value!r} is neither a number of seconds nor an existing T10 map file")
    return None, read_volume(value)


def run(args) -> int:
    from ..cli_options import claimed_output, out_dir_of

    out_dir = out_dir_of(args, args.series, "dce")
    with claimed_output(out_dir, args, ('series', 'aif_mask', 'mask', 'tumor_mask', 'times', 't10', 'rls_weights',
                                        'vfa', 'b1')):  # checked and locked before any work
        return _run(args, out_dir)


def _run(args, out_dir: Path) -> int:
    from ..config import effective_configuration
    from ..core.errors import InputError
    from ..io import read_mask, read_volume
    from ..core.progress import ConsolePrinter
    from .aif_dose import check_dose
    from .pipeline import run_dce

    if args.times and args.frame_interval:
        raise InputError("give --times or --frame-interval, not both")
    if args.aif_mask and args.population_aif:
        raise InputError("give --aif-mask or --population-aif, not both")
    if args.aif_search and not args.aif_mask:
        raise InputError("--aif-search needs --aif-mask REGION")
    if args.aif == "mask" and not args.aif_mask:
        raise InputError("--aif mask needs --aif-mask MASK")
    if args.aif == "auto" and (args.aif_mask or args.population_aif):
        raise InputError("--aif auto chooses the arterial voxels itself; leave out --aif-mask/--population-aif")
    from_header = args.dose == "header"  # (resolved once the series is read: dce/stated_dose.py)
    if not from_header:
        check_dose(args.dose)  # (before the series is read: one line, exit 2)
    if args.dose is not None and (args.aif_mask or args.aif == "auto"):
        raise InputError("--dose scales a population AIF; a measured AIF (--aif-mask, --aif auto) carries the dose "
                         "itself: leave out --dose")
    if args.vfa and args.t10:
        raise InputError("give --t10 or --vfa (a T10 map is computed from it), not both")
    if not args.vfa and (args.b1 or args.vfa_flip_angles or args.vfa_tr is not None):
        # they shape only the T10 fit of --vfa: without it they were silently ignored
        raise InputError("--b1, --vfa-flip-angles and --vfa-tr belong to --vfa (the T10 map fitted from a VFA "
                         "series); add --vfa FILES or leave them out")
    if args.rls_weights and args.rls not in ("bundled", "auto"):
        raise InputError(f"--rls-weights is used only with --rls bundled or auto (this run has --rls {args.rls}); "
                         "add --rls bundled or leave --rls-weights out")
    printer = ConsolePrinter(quiet=args.quiet)
    printer(0.0, f"reading {args.series}")
    series = read_volume(args.series, times=args.times, frame_interval=args.frame_interval)
    dose = args.dose
    if from_header:
        from .stated_dose import dose_from_header

        dose = dose_from_header(series.acquisition)
    relaxivity = args.relaxivity
    if relaxivity == "header":  # (the agent the header names, at its field: dce/stated_relaxivity.py)
        from .stated_relaxivity import relaxivity_from_header

        relaxivity = relaxivity_from_header(series.acquisition)
    t10, t10_map = parse_t10(args.t10, series)
    vfa_info = None
    if args.vfa:
        from ..t1map.pipeline import t10_map_from_vfa

        printer(0.02, "T10 map from the VFA series")
        t10_map, vfa_info = t10_map_from_vfa(args.vfa, series, args.vfa_flip_angles, args.vfa_tr, args.b1)
    params = DCEParameters(
        model=args.model, input_kind=args.input_kind, t10=t10, blood_t10=args.blood_t10, flip_angle=args.flip_angle,
        tr=args.tr, relaxivity=relaxivity, hematocrit=args.hematocrit, population_aif=args.population_aif,
        dose=dose, aif_region=args.aif_search, aif_auto=args.aif == "auto",
        baseline_frames=args.baseline_frames, max_delay=args.max_delay, refine=args.refine, rls=args.rls,
        rls_weights=args.rls_weights or DCEParameters.rls_weights, rls_epochs=args.rls_epochs, seed=args.seed,
        device=args.device, motion_correct=args.motion_correct, slice_timing=args.slice_timing,
        threads=args.threads, te=args.te, aif_t2star_correct=args.aif_t2star_correct)
    masks = {key: read_mask(getattr(args, key), series, key.replace("_", "-"))
             for key in ("aif_mask", "mask", "tumor_mask") if getattr(args, key)}
    result = run_dce(series, params, aif_mask=masks.get("aif_mask"), brain_mask=masks.get("mask"),
                     tumor_mask=masks.get("tumor_mask"), t10_map=t10_map, progress=printer,
                     consume_input=True)  # the series is not used after the gather: free it mid-run
    if from_header:
        from .stated_dose import mark_applied

        mark_applied(result.report)
    if args.relaxivity == "header":
        from .stated_relaxivity import mark_applied as mark_relaxivity_applied

        mark_relaxivity_applied(result.report)
    result.report["configuration"] = effective_configuration(args)  # for `bbbanomaly rerun`
    if vfa_info is not None:
        result.report["t10_from_vfa"] = vfa_info
        _source_is_vfa(result.report["aif"]["t10"])
        # what the VFA fit warned about (e.g. Philips series whose relative scale is unknown) is the run's warning too
        result.report["warnings"].extend(w for w in vfa_info.get("warnings", []) if w not in result.report["warnings"])
    written = result.write(out_dir, overwrite=args.overwrite, suffix=output_suffix(args))
    print_summary(result, written)
    return 0


def _source_is_vfa(aif_t10: dict) -> None:
    """The report's aif.t10 with the T10 map named as the --vfa fit's (the pipeline sees a map only)."""
    for entry in (aif_t10, aif_t10.get("replaces") or {}):
        if entry.get("source") == "map":
            entry["source"] = "map (--vfa)"


def print_summary(result, written: Path) -> None:
    rep = result.report
    print(f"DCE maps ({rep['parameters']['model']}, RLS {rep['parameters']['rls']}) written to {written}")
    print(f"  maps: {', '.join(result.maps)}; aif.csv; report.json")
    aif = rep["aif"]
    t10 = aif.get("t10") or {}
    converted = f"; converted with T10 {t10['value']:.3g} s ({t10['source']})" if t10.get("value") is not None else ""
    print(f"  AIF: {aif['source']}, peak {aif['peak']:.3g} {rep['units']['concentration']} at "
          f"{aif['peak_time_s']:.1f} s{converted}")
    for region in ("tumor", "non_tumor", "brain"):
        stats = rep["summary"].get(region)
        if stats:
            print(f"  {region} medians: " + ", ".join(filter(None, (
                _median(n, stats) for n in ("rls", "ktrans", "fp", "ps", "ve", "vp")))))
            if region == "tumor":
                continue
            break
    for w in rep["warnings"]:
        print(f"  warning: {w}")


def _median(name: str, stats: dict) -> str:
    """'<map> <median>' of a region's summary line ('' for a map the run has not or with no voxel there); ve
    with the share of the voxels it is summarised over, or 've not determined ...' where the data determine it in
    none of them (the report's summary of ve is then empty: there is no median to give)."""
    n, total = stats.get(name, {}).get("n"), stats.get("fit_r2", {}).get("n")
    if name == "ve" and name in stats and not n and total:
        return f"ve not determined by the data in any of the {total} voxels"
    return f"{name} {stats[name]['median']:.3g}" + _determined_share(name, stats) if n else ""


def _determined_share(name: str, stats: dict) -> str:
    """' (in the N % of voxels where the data determine it)' after ve's median: it is summarised over those only.
    A share that would round to 0 % or 100 % without being either is '< 1 %' or '> 99 %', with the counts."""
    if name != "ve" or not stats.get("fit_r2", {}).get("n"):
        return ""
    n, total = stats["ve"]["n"], stats["fit_r2"]["n"]
    share = n / total
    if share >= 1:
        return ""
    if share < 0.01 or share >= 0.995:
        bound = "< 1" if share < 0.01 else "> 99"
        return f" (in {bound} % of voxels where the data determine it: {n} of {total})"
    return f" (in the {100 * share:.0f} % of voxels where the data determine it)"
