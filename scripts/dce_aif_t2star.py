"""Session 22: the drawn DCE AIF at clinical dose — the blood's T2* at the echo time and the SPGR ceiling.

Runs ``run_dce`` (--rls none, the object's true T10 map, its arterial mask as --aif-mask) on the DCE reference object
(:func:`BBBAnomalyLib.phantoms.dce.make_dce_phantom`) made with the blood's T2* (``te``; ΔR2* of whole blood quadratic
in the concentration, :mod:`BBBAnomalyLib.dce.aif_t2star`) over the dose (``dose`` x the Parker AIF: arterial blood
peaks 3-12 mM), TE 1-4 ms, TR/flip, 1.5/3 T coefficients and SNR, and prints per setting: the drawn AIF's peak and
area against the truth, the rim's / tumour's Ktrans (median of the voxel ratio to the truth, less 1; pure voxels),
GM's and WM's Ktrans and vp (median over pure voxels against the truth's median), the rim's ve; for extended Tofts
(``etofts``), extended Tofts with --aif-t2star-correct (``etofts+c``), Patlak (``patlak``) and the Parker population
AIF (``parker``); and what the run's report said (aif.t2star: the estimated area loss, warned or not).

    OMP_NUM_THREADS=1 python scripts/dce_aif_t2star.py                 # the tuning set (seed 1, 4 slices)
    OMP_NUM_THREADS=1 python scripts/dce_aif_t2star.py --held-apart    # the held-apart set (rule in the notes)
    OMP_NUM_THREADS=1 python scripts/dce_aif_t2star.py --coefficients  # the correction with wrong coefficients
    OMP_NUM_THREADS=1 python scripts/dce_aif_t2star.py --shape         # the AIF's peak over its late level
    OMP_NUM_THREADS=1 python scripts/dce_aif_t2star.py --shape-held-apart   # the same, TE unknown, held apart

About 4 min (tuning), 1.5 min (held apart), 1 min (--coefficients --kinds etofts etofts+c), 4-5 min (each --shape
set) on one core.
"""

from __future__ import annotations

import argparse
import itertools
import warnings as python_warnings

import numpy as np
from scipy.integrate import trapezoid

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.aif_t2star import BLOOD_R2STAR, peak_over_late
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.phantoms.dce import make_dce_phantom

RIM_VE = 0.35
KINDS = {"etofts": {}, "etofts+c": {"aif_t2star_correct": True}, "patlak": {"model": "patlak"},
         "parker": {"population_aif": "parker"}}


def tuning_settings():
    """(label, phantom overrides) of the tuning set: seed 1, 4 slices."""
    out = []
    for dose in (0.5, 1.0, 1.5, 2.0):
        for tr, flip in ((0.005, 15.0), (0.004, 25.0), (0.006, 10.0)):
            out.append((f"clean dose {dose:g} TR {1000 * tr:g} flip {flip:g}",
                        {"dose": dose, "tr": tr, "flip_angle": flip}))
            for field, te in itertools.product((1.5, 3.0), (0.001, 0.002, 0.004)):
                out.append((f"dose {dose:g} TR {1000 * tr:g} flip {flip:g} {field:g} T TE {1000 * te:g}",
                            {"dose": dose, "tr": tr, "flip_angle": flip, "field_strength": field, "te": te}))
        for field, te in itertools.product((1.5, 3.0), (0.001, 0.002)):
            out.append((f"dose {dose:g} SNR 20 {field:g} T TE {1000 * te:g}",
                        {"dose": dose, "snr": 20.0, "field_strength": field, "te": te}))
    return out


def held_apart_settings():
    """(label, overrides) of the held-apart set: seed 3, 6 slices, 3 s frames, other TR/flip/TE/doses, SNR 30."""
    out = []
    for dose in (0.6, 1.2, 1.8):
        for tr, flip in ((0.004, 30.0), (0.0055, 20.0)):
            base = {"dose": dose, "tr": tr, "flip_angle": flip, "seed": 3, "slices": 6, "frame_interval": 3.0,
                    "snr": 30.0}
            out.append((f"clean dose {dose:g} TR {1000 * tr:g} flip {flip:g}", base))
            for field, te in itertools.product((1.5, 3.0), (0.0015, 0.003)):
                out.append((f"dose {dose:g} TR {1000 * tr:g} flip {flip:g} {field:g} T TE {1000 * te:g}",
                            {**base, "field_strength": field, "te": te}))
    return out


def coefficient_settings():
    """(label, overrides): the object's blood ΔR2* 0.5-1.5 x the coefficients the run assumes (1.5 T)."""
    out = []
    for dose, te, k in itertools.product((0.5, 1.0, 1.5), (0.001, 0.002), (0.5, 0.7, 1.0, 1.3, 1.5)):
        a, b = BLOOD_R2STAR[1.5]
        out.append((f"dose {dose:g} TE {1000 * te:g} true coeff x{k:g}",
                    {"dose": dose, "te": te, "field_strength": 1.5, "blood_r2star": (k * a, k * b)}))
    return out


def shape_settings():
    """(label, overrides): the AIF's peak over its late level with and without T2*, over AIF shapes (Parker,
    Georgiou), frames (2-6 s), bolus phases and doses (``--shape``: whether the shape says what TE cannot)."""
    out = []
    for aif, dt, arrival, dose in itertools.product(("parker", "georgiou"), (2.0, 4.0, 6.0), (30.0, 32.0),
                                                    (0.5, 1.0, 1.5)):
        base = {"aif": aif, "frame_interval": dt, "bolus_arrival": arrival, "dose": dose}
        out.append((f"clean {aif} dt {dt:g} arrival {arrival:g} dose {dose:g}", base))
        for field, te in ((1.5, 0.001), (1.5, 0.002), (3.0, 0.002)):
            out.append((f"{aif} dt {dt:g} arrival {arrival:g} dose {dose:g} {field:g} T TE {1000 * te:g}",
                        {**base, "field_strength": field, "te": te}))
    return out


def shape_held_apart_settings():
    """(label, overrides) of the shape warning's held-apart set (rule R3 in the notes)."""
    out = []
    for aif, dt, duration, arrival, dose in itertools.product(("parker", "georgiou"), (3.0, 5.0), (240.0, 420.0),
                                                              (20.0, 45.0), (0.7, 1.3)):
        base = {"aif": aif, "frame_interval": dt, "duration": duration, "bolus_arrival": arrival, "dose": dose,
                "seed": 3, "slices": 6, "snr": 30.0}
        out.append((f"clean {aif} dt {dt:g} {duration:g} s arrival {arrival:g} dose {dose:g}", base))
        for field, te in ((1.5, 0.0015), (3.0, 0.003)):
            out.append((f"{aif} dt {dt:g} {duration:g} s arrival {arrival:g} dose {dose:g} {field:g} T TE "
                        f"{1000 * te:g}", {**base, "field_strength": field, "te": te}))
    return out


def without_te(phantom):
    """The object with its echo time taken out of the metadata (a NIfTI without its sidecar)."""
    import dataclasses

    s = phantom.signal
    acquisition = dataclasses.replace(s.acquisition, echo_time=None)
    return dataclasses.replace(phantom, signal=Volume(s.data, s.affine, s.times, acquisition))


def run(phantom, kind: str):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    params = DCEParameters(rls="none", **KINDS[kind])
    try:
        with python_warnings.catch_warnings():
            python_warnings.simplefilter("ignore")
            return run_dce(phantom.signal, params, aif_mask=None if kind == "parker" else phantom.masks["aif"],
                           brain_mask=phantom.masks["brain"], t10_map=t10), None
    except InputError as exc:
        return None, str(exc)


def measure(phantom, result) -> dict:
    m, truth, maps = phantom.masks, phantom.truth, result.maps
    t = phantom.times
    out = {"AIF peak": result.aif.max() / phantom.aif.max() - 1,
           "AIF area": trapezoid(result.aif, t) / trapezoid(phantom.aif, t) - 1}
    for name, mask in (("rim", m["enhancing"] & m["pure"]), ("tumour", m["tumor"] & m["pure"])):
        out[f"Ktrans {name}"] = float(np.median(maps["ktrans"].data[mask] / truth["ktrans"].data[mask]) - 1)
    for name in ("gm", "wm"):
        mask = m[name] & m["pure"]
        for key in ("ktrans", "vp"):
            out[f"{'Ktrans' if key == 'ktrans' else 'vp'} {name.upper()}"] = float(
                np.median(maps[key].data[mask]) / np.median(truth[key].data[mask]) - 1)
    if "ve" in maps:
        rim = m["enhancing"] & m["pure"]
        out["ve rim"] = float(np.median(maps["ve"].data[rim]) / RIM_VE - 1)
    return out


COLUMNS = ("AIF peak", "AIF area", "Ktrans rim", "Ktrans tumour", "Ktrans GM", "vp GM", "Ktrans WM", "vp WM", "ve rim")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-apart", action="store_true")
    parser.add_argument("--coefficients", action="store_true")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--only", help="settings whose label contains this")
    parser.add_argument("--shape", action="store_true", help="the AIF's peak over its late level instead")
    parser.add_argument("--shape-held-apart", action="store_true", help="--shape's held-apart set, TE unknown")
    args = parser.parse_args(argv)
    if args.shape or args.shape_held_apart:
        print("| setting | AIF area | peak/late measured | peak/late true | warned |")
        print("|---|---|---|---|---|")
        for label, overrides in (shape_held_apart_settings() if args.shape_held_apart else shape_settings()):
            phantom = make_dce_phantom(**{"slices": 4, "seed": 1, "snr": 40.0, **overrides})
            result, refused = run(without_te(phantom) if args.shape_held_apart else phantom, "etofts")
            if refused:
                print(f"| {label} | refused | | |", flush=True)
                continue
            t = phantom.times
            area = trapezoid(result.aif, t) / trapezoid(phantom.aif, t) - 1
            print(f"| {label} | {100 * area:+.1f} % | {peak_over_late(result.aif, t) or float('nan'):.2f} | "
                  f"{peak_over_late(phantom.aif, t) or float('nan'):.2f} | "
                  f"{'yes' if any('--te' in w for w in result.report['warnings']) else 'no'} |", flush=True)
        return 0
    rows = (held_apart_settings() if args.held_apart else coefficient_settings() if args.coefficients
            else tuning_settings())
    print("| setting | AIF | " + " | ".join(COLUMNS) + " | est. area loss | ceiling | gain | peak/turn | warned |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 5))
    for label, overrides in rows:
        if args.only and args.only not in label:
            continue
        phantom = make_dce_phantom(**{"slices": 4, "seed": 1, "snr": 40.0, **overrides})
        for kind in args.kinds:
            result, refused = run(phantom, kind)
            if refused:
                print(f"| {label} | {kind} | refused: {refused[:160]} |", flush=True)
                continue
            values = measure(phantom, result)
            cells = " | ".join(f"{100 * values[c]:+.1f} %" if c in values else "" for c in COLUMNS)
            rec = result.report["aif"].get("t2star", {})
            ratio = rec.get("area_corrected_over_measured")
            loss = f"{100 * (ratio - 1):.1f} %" if ratio else ""
            warned = any(w.startswith("the measured AIF reads low from the blood's T2*")
                         for w in result.report["warnings"])
            print(f"| {label} | {kind} | {cells} | {loss} | {rec.get('peak_signal_of_spgr_ceiling', '')} | "
                  f"{rec.get('noise_gain_at_peak', '')} | {rec.get('peak_of_turning_point_signal', '')} | "
                  f"{'yes' if warned else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
