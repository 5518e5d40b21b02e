"""Session 19: the DCE pipeline on legitimate but unusual acquisitions (an outside-in audit of ``run_dce``).

Runs ``run_dce`` (extended Tofts, --rls none, the defaults otherwise) on the DCE reference object
(:func:`BBBAnomalyLib.phantoms.dce.make_dce_phantom`, 4 slices, SNR 40, seed 1 unless a setting says otherwise) with
its true T10 map, under acquisitions a radiologist would call normal: fast (1-3 s) and slow (8-10 s) frames, short
(120-180 s) and long (600 s) series, an early bolus (1-2 baseline frames) and a long baseline (90-120 s), a tumour
5-15 s behind the artery, the whole brain behind the artery (the object's artery signal moved 1-5 frames earlier:
the object has no such delay of its own), non-uniform frame times (fast frames over the bolus, then slow ones: the
object's series with frames dropped), flip angles 10 and 25°, TR 3 and 8 ms, a 3 T relaxivity (3.5), SNR 20 and
100, and combinations. Per setting and AIF it prints what happened: refused (the line), or accepted with the error
against the truth of the enhancing rim's Ktrans, ve and vp (median over its pure voxels of the voxel's ratio to its
truth, less 1), of grey matter's vp (pure voxels), the AIF's peak against the true plasma AIF's, the baseline frames
kept and the warnings other than ve's determination (the one every run gives). AIFs: ``mask`` (the object's
arterial mask), ``auto`` (--aif auto), ``parker`` (--population-aif parker: the object's own AIF shape, placed at
the arteries' arrival and evaluated at every delay of the fit). About 1 min on one core:

    OMP_NUM_THREADS=1 python scripts/dce_unusual_acquisitions.py             # the table
    OMP_NUM_THREADS=1 python scripts/dce_unusual_acquisitions.py --only "dt 1" --seed 0

``--population`` runs session 20's rows instead (the population AIF's placement in time): 6/8/10/12 s frames, the
bolus at 30 s and half a frame later, the tumour 0/5 s behind the artery (--max-delay 6) and 10/15 s (--max-delay
20), on the object made with the Parker AIF (the population AIF is then the true AIF) and with the Georgiou AIF
(it is not), by default with the mask and Parker (about 1 min):

    OMP_NUM_THREADS=1 python scripts/dce_unusual_acquisitions.py --population --kinds mask parker

``--short-baseline`` runs session 20's early-bolus rows (the automatic AIF on 1-3 baseline frames): frames 2, 4 and
5 s with the bolus placed for 1, 2 or 3 baseline frames (and at 1 s: the second frame holds the bolus' foot), 150 s,
SNR 20, 30 and 40; held apart with ``--seed 4`` to ``7`` (developed on seeds 0-3):

    OMP_NUM_THREADS=1 python scripts/dce_unusual_acquisitions.py --short-baseline --kinds mask auto --seed 4
"""

from __future__ import annotations

import argparse
import warnings as python_warnings

import numpy as np

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.phantoms.dce import DCEPhantom, make_dce_phantom

RIM_VE, RIM_VP = 0.35, 0.06  # the object's enhancing rim (phantoms/dce.py default_tissues)


def subsample(phantom: DCEPhantom, frames: np.ndarray) -> DCEPhantom:
    """The object's series with only ``frames`` kept (non-uniform frame times)."""
    s = phantom.signal
    signal = Volume(np.ascontiguousarray(s.data[..., frames]), s.affine, s.times[frames], s.acquisition)
    conc = Volume(np.ascontiguousarray(phantom.concentration.data[..., frames]), s.affine, s.times[frames])
    return DCEPhantom(signal, phantom.truth, phantom.masks, phantom.aif[frames], conc, phantom.params)


def artery_early(phantom: DCEPhantom, frames: int) -> DCEPhantom:
    """The arterial voxels' signal ``frames`` frames earlier (the last frame repeated): the whole brain, its small
    vessels included, then lags the artery by that many frames."""
    data = phantom.signal.data.copy()
    artery = phantom.masks["aif"]
    rows = data[artery]
    data[artery] = np.concatenate([rows[:, frames:], np.repeat(rows[:, -1:], frames, axis=1)], axis=1)
    signal = Volume(data, phantom.signal.affine, phantom.signal.times, phantom.signal.acquisition)
    aif = np.concatenate([phantom.aif[frames:], np.repeat(phantom.aif[-1:], frames)])
    return DCEPhantom(signal, phantom.truth, phantom.masks, aif, phantom.concentration, phantom.params)


def non_uniform(fast_until: float, every: int):
    """Keep every frame before ``fast_until`` s, then every ``every``-th."""
    def apply(phantom: DCEPhantom) -> DCEPhantom:
        t = phantom.times
        return subsample(phantom, np.r_[np.flatnonzero(t < fast_until), np.flatnonzero(t >= fast_until)[::every]])
    return apply


def early(frames: int):
    return lambda phantom: artery_early(phantom, frames)


#: (label, make_dce_phantom overrides, a change of the object's series or None, run_dce parameters)
SETTINGS = [
    ("default", {}, None, {}),
    *[(f"dt {v:g} s", {"frame_interval": v}, None, {}) for v in (1, 2, 3, 8, 10)],
    *[(f"duration {v:g} s", {"duration": v}, None, {}) for v in (120, 180, 600)],
    *[(f"arrival {v:g} s", {"bolus_arrival": v}, None, {}) for v in (6, 8, 10, 90, 120)],
    *[(f"tumour +{v:g} s", {"tumor_delay": v}, None, {}) for v in (5, 8, 10, 15)],
    ("tumour +15 s, --max-delay 20", {"tumor_delay": 15}, None, {"max_delay": 20}),
    *[(f"brain +{5 * k} s (dt 5 s)", {}, early(k), {}) for k in (1, 2)],
    *[(f"brain +{2 * k} s (dt 2 s)", {"frame_interval": 2}, early(k), {}) for k in (1, 2, 3, 5)],
    ("brain +10 s (dt 5 s), --max-delay 14", {}, early(2), {"max_delay": 14}),
    ("2 s to 90 s, then 10 s", {"frame_interval": 2}, non_uniform(90, 5), {}),
    ("1 s to 60 s, then 5 s", {"frame_interval": 1}, non_uniform(60, 5), {}),
    *[(f"flip {v:g}", {"flip_angle": v}, None, {}) for v in (10, 25)],
    *[(f"TR {1000 * v:g} ms", {"tr": v}, None, {}) for v in (0.003, 0.008)],
    ("r1 3.5 (3 T)", {"relaxivity": 3.5}, None, {"relaxivity": 3.5}),
    *[(f"SNR {v:g}", {"snr": v}, None, {}) for v in (20, 100)],
    # combinations
    ("dt 1 s, arrival 6 s, 600 s", {"frame_interval": 1, "bolus_arrival": 6, "duration": 600}, None, {}),
    ("dt 1 s, arrival 8 s", {"frame_interval": 1, "bolus_arrival": 8}, None, {}),
    ("dt 2 s, arrival 6 s, 600 s", {"frame_interval": 2, "bolus_arrival": 6, "duration": 600}, None, {}),
    ("dt 10 s, 120 s", {"frame_interval": 10, "duration": 120}, None, {}),
    ("dt 8 s, arrival 120 s, 600 s", {"frame_interval": 8, "bolus_arrival": 120, "duration": 600}, None, {}),
    ("dt 1 s, 180 s, SNR 20", {"frame_interval": 1, "duration": 180, "snr": 20}, None, {}),
    ("2/10 s, tumour +10 s", {"frame_interval": 2, "tumor_delay": 10}, non_uniform(90, 5), {}),
    ("2/10 s, brain +4 s", {"frame_interval": 2}, lambda p: non_uniform(90, 5)(artery_early(p, 2)), {}),
    ("flip 25, TR 3 ms, r1 3.5, SNR 20", {"flip_angle": 25, "tr": 0.003, "relaxivity": 3.5, "snr": 20}, None,
     {"relaxivity": 3.5}),
    ("flip 10, dt 2 s, SNR 100", {"flip_angle": 10, "frame_interval": 2, "snr": 100}, None, {}),
    ("arrival 8 s, tumour +10 s, SNR 20", {"bolus_arrival": 8, "tumor_delay": 10, "snr": 20}, None, {}),
]


#: session 20: the population AIF's placement in time (``--population``)
POPULATION_SETTINGS = [
    (f"{aif} object, dt {dt:g} s, arrival {arrival:g} s, tumour +{lag:g} s",
     {"aif": aif, "frame_interval": dt, "bolus_arrival": arrival, "tumor_delay": lag}, None,
     {"max_delay": 20.0} if lag > 6 else {})
    for aif in ("parker", "georgiou") for dt in (6.0, 8.0, 10.0, 12.0) for arrival in (30.0, 30.0 + dt / 2)
    for lag in (0.0, 5.0, 10.0, 15.0)
]


#: session 20: the automatic AIF on an early bolus (``--short-baseline``)
SHORT_BASELINE_SETTINGS = [
    (f"dt {dt:g} s, arrival {arrival:g} s, SNR {snr:g}",
     {"frame_interval": dt, "bolus_arrival": arrival, "duration": 150.0, "snr": snr}, None, {})
    for dt, arrivals in ((2.0, (1.0, 3.0, 5.5)), (4.0, (2.0, 6.0, 10.5)), (5.0, (3.0, 8.0, 13.0)))
    for arrival in arrivals for snr in (20.0, 30.0, 40.0)
]


def run_one(phantom: DCEPhantom, kind: str, extra: dict):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    params = DCEParameters(rls="none", aif_auto=kind == "auto",
                           population_aif="parker" if kind == "parker" else None, **extra)
    try:
        return run_dce(phantom.signal, params, aif_mask=phantom.masks["aif"] if kind == "mask" else None,
                       brain_mask=phantom.masks["brain"], t10_map=t10), None
    except InputError as exc:
        return None, str(exc)


def errors(phantom: DCEPhantom, result) -> dict:
    m, truth = phantom.masks, phantom.truth
    rim = m["enhancing"] & m["pure"]
    gm = m["gm"] & m["pure"]
    return {"Ktrans rim": float(np.median(result.maps["ktrans"].data[rim] / truth["ktrans"].data[rim]) - 1),
            "ve rim": float(np.median(result.maps["ve"].data[rim]) / RIM_VE - 1),
            "vp rim": float(np.median(result.maps["vp"].data[rim]) / RIM_VP - 1),
            "vp GM": float(np.median(result.maps["vp"].data[gm]) / np.median(truth["vp"].data[gm]) - 1),
            "AIF peak": float(result.aif.max() / phantom.aif.max() - 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--only", help="settings whose label contains this")
    parser.add_argument("--kinds", nargs="+", default=["mask", "auto", "parker"])
    parser.add_argument("--population", action="store_true", help="session 20's population-AIF rows instead")
    parser.add_argument("--short-baseline", action="store_true", help="session 20's early-bolus rows instead")
    args = parser.parse_args(argv)
    print("| setting | AIF | outcome | Ktrans rim | ve rim | vp rim | vp GM | AIF peak | baseline | warnings |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = POPULATION_SETTINGS if args.population else SHORT_BASELINE_SETTINGS if args.short_baseline else SETTINGS
    for label, overrides, change, extra in rows:
        if args.only and args.only not in label:
            continue
        phantom = make_dce_phantom(**{"slices": args.slices, "seed": args.seed, "snr": 40.0, **overrides})
        if change is not None:
            phantom = change(phantom)
        for kind in args.kinds:
            with python_warnings.catch_warnings():
                python_warnings.simplefilter("ignore")
                result, refused = run_one(phantom, kind, extra)
            if refused:
                print(f"| {label} | {kind} | refused: {refused[:150]} | | | | | | | |", flush=True)
                continue
            said = [w for w in result.report["warnings"] if not w.startswith("ve was not determined")
                    and not w.startswith("no AIF mask given")]
            outcome = "accepted, warned" if said else "accepted silently"
            cells = " | ".join(f"{100 * v:+.1f} %" for v in errors(phantom, result).values())
            words = "; ".join(w[:90] + ("..." if len(w) > 90 else "") for w in said)
            print(f"| {label} | {kind} | {outcome} | {cells} | {result.report['conversion']['baseline_frames']} | "
                  f"{words} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
