#!/usr/bin/env python
"""Session 20: what the DSC maps are worth at low contrast-to-noise, against the reference object's truth.

Runs ``run_dsc`` on the DSC reference object (``make_dsc_phantom``) with its arterial mask, brain, NAWM and tumour
masks (kH = density = 1: the object's truth is unit-less, as scripts/validate_dsc.py), for every method (sSVD,
cSVD, oSVD, Tikhonov, PHAE), over SNR 3-50, several seeds, slabs and frame intervals, and prints per run the CNR the
pipeline reports (``contrast_to_noise``) and, per method, the ratio of the map's ROI mean to the truth's
(``est mean / truth mean`` over the object's >= 50 % masks, arterial voxels left out): GM and WM CBF, GM CBV (the
same for every method), GM MTT, and the enhancing rim's ratios to NAWM (rCBV of the leakage-corrected CBV, rCBF)
over the true ratios. The noiseless object (same slab and interval) gives each method's own truncation band: the
part of the error that is not noise. The warnings each run gave are kept (which low-CNR tier fired, PHAE's domain
and uncertainty lines).

    OMP_NUM_THREADS=1 python scripts/dsc_low_cnr.py                  # tuning set: seeds 0, 1; 8 slices; 1.5 s
    OMP_NUM_THREADS=1 python scripts/dsc_low_cnr.py --held-apart     # held-apart seeds and settings
    (--no-phae: skip PHAE, about 10 s a run on 2 cores; --json FILE: every number)

Rule (docs/reliability.md, session 20; written from the tuning set, before the held-apart run): see RULE below.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from BBBAnomalyLib.core.errors import InputError  # noqa: E402
from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom  # noqa: E402

SNRS = (3, 5, 7, 10, 15, 20, 30, 50)
#: the object reads CNR 1.5 at SNR 50: these reach the 'biased' tier's upper part (CNR 3-5) and above it
HIGH_SNRS = (100, 150, 300)
METHODS = ("ssvd", "csvd", "osvd", "tikhonov", "phae")
UNITLESS = dict(kh=1.0, density=1.0)

RULE = """\
Rule written from the tuning set (seeds 0-1, 8 slices, 1.5 s, SNR 3-300), before the held-apart run. Tiers by the
CNR the pipeline reports (dsc/low_cnr.py): below 5 'biased', below 1 'CBF, MTT and rCBF not trustworthy' for the
classic methods, below 0.25 the same for PHAE's CBF ratios, below 0.12 CBV too. In the held-apart runs:
  (1) CNR < 1: for each of sSVD, cSVD, oSVD, Tikhonov the worst of GM CBF, WM CBF and rim/NAWM rCBF is off from
      the truth by 1.5x or more, and sSVD/cSVD/oSVD read rCBF at 0.6x the true ratio or less;
  (2) 1 <= CNR < 5: the classic methods' GM CBF, WM CBF and rCBF lie in the ranges the 'biased' line quotes
      (within 10 % of their ends);
  (3) CNR >= 0.12: GM CBV within 15 % of the truth and rim rCBV within 20 % of the true ratio (called usable);
  (4) PHAE at CNR >= 0.25: GM and WM CBF within 25 %, rCBF within 20 % of the truth (no PHAE 'not trustworthy');
  (5) CNR < 1: the ranges the 'not trustworthy' lines quote hold the held-apart values (within 10 % of their ends).
A miss is reported, not tuned away."""


def tuning_settings(snrs=SNRS + HIGH_SNRS) -> list[dict]:
    return [dict(snr=snr, seed=seed, slices=8, frame_interval=1.5) for snr, seed in itertools.product(snrs, (0, 1))]


def held_apart_settings() -> list[dict]:
    """Seeds never looked at while tuning; other slabs (4 and 12 slices), frames of 1 and 2 s; a stronger and a
    weaker arterial peak (CNR moves without the SNR moving: the rule must follow the CNR, not the SNR)."""
    out = [dict(snr=snr, seed=seed, slices=sl, frame_interval=fi)
           for snr, (seed, sl, fi) in itertools.product(SNRS, ((2, 4, 1.0), (3, 12, 2.0), (4, 6, 1.5)))]
    out += [dict(snr=snr, seed=5, slices=6, frame_interval=1.5, aif_peak=peak)
            for snr, peak in itertools.product((5, 10, 20, 50), (30.0, 100.0))]
    return out


def _roi_ratio(est: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return float(est[mask].mean() / truth[mask].mean())


def _rim_to_nawm(values: np.ndarray, masks: dict) -> float:
    return float(values[masks["enhancing"]].mean() / values[masks["nawm"]].mean())


def measure(setting: dict, methods=METHODS) -> dict:
    """One phantom, every method: ratios to truth, the CNR, the warnings."""
    phantom = make_dsc_phantom(**setting)
    m = phantom.masks
    gm, wm = m["gm"] & ~m["aif"], m["wm"] & ~m["aif"]
    truth = {name: vol.data for name, vol in phantom.truth.items()}
    true_rcbv, true_rcbf = _rim_to_nawm(truth["cbv"], m), _rim_to_nawm(truth["cbf"], m)
    out = {"setting": setting, "methods": {}}
    for method in methods:
        try:
            res = run_dsc(phantom.signal, DSCParameters(method=method, **UNITLESS), aif_mask=m["aif"],
                          brain_mask=m["brain"], nawm_mask=m["nawm"], tumor_mask=m["tumor"])
        except InputError as exc:
            out["methods"][method] = {"refused": str(exc)}
            continue
        maps = {name: vol.data for name, vol in res.maps.items()}
        cbv = maps.get("cbv_corrected", maps["cbv"])
        out["cnr"] = res.report["contrast_to_noise"]
        out["methods"][method] = {
            "gm_cbf": _roi_ratio(maps["cbf"], truth["cbf"], gm), "wm_cbf": _roi_ratio(maps["cbf"], truth["cbf"], wm),
            "gm_cbv": _roi_ratio(maps["cbv"], truth["cbv"], gm), "wm_cbv": _roi_ratio(maps["cbv"], truth["cbv"], wm),
            "gm_mtt": _roi_ratio(maps["mtt"], truth["mtt"], gm),
            "rcbv": _rim_to_nawm(cbv, m) / true_rcbv, "rcbf": _rim_to_nawm(maps["cbf"], m) / true_rcbf,
            "gm_wm_cbf": float(maps["cbf"][gm].mean() / maps["cbf"][wm].mean())
            / float(truth["cbf"][gm].mean() / truth["cbf"][wm].mean()),
            "warnings": [w for w in res.report["warnings"] if "contrast-to-noise" in w or "PHAE" in w
                         or "trustworth" in w],
        }
    return out


def tier(run: dict) -> str:
    words = " ".join(w for r in run["methods"].values() for w in r.get("warnings", [])).lower()
    if "not trustworthy" in words:
        return "unusable"
    return "biased" if "low contrast-to-noise" in words else "none"


def line(run: dict, reference: dict | None) -> str:
    s = run["setting"]
    extra = " ".join(f"{k}={v}" for k, v in s.items() if k not in ("snr", "seed", "slices", "frame_interval"))
    head = (f"SNR {s['snr']!s:>4} seed {s.get('seed', '-')} sl {s['slices']:>2} dt {s['frame_interval']:<3g} "
            f"{extra:13s} CNR {run.get('cnr', float('nan')):5.2f} [{tier(run):8s}]")
    cells = []
    for method, r in run["methods"].items():
        if "refused" in r:
            cells.append(f"{method} REFUSED")
            continue
        ref = (reference or {}).get("methods", {}).get(method)
        noise = f" (/nl {r['gm_cbf'] / ref['gm_cbf']:4.2f})" if ref else ""
        cells.append(f"{method} CBF gm {r['gm_cbf']:5.2f}{noise} wm {r['wm_cbf']:5.2f} MTT {r['gm_mtt']:5.2f} "
                     f"rCBF {r['rcbf']:4.2f}")
    first = next(r for r in run["methods"].values() if "refused" not in r)
    return head + f" CBV gm {first['gm_cbv']:4.2f} rCBV {first['rcbv']:4.2f} | " + "; ".join(cells)


#: the tiers' CNR bands (dsc/low_cnr.py) and the method groups whose ranges the warnings quote
BANDS = {"CNR >= 5": (5.0, np.inf), "1 <= CNR < 5": (1.0, 5.0), "CNR < 1": (0.0, 1.0),
         "0.25 <= CNR < 1": (0.25, 1.0), "CNR < 0.25": (0.0, 0.25), "0.12 <= CNR < 0.3": (0.12, 0.3),
         "CNR >= 0.3": (0.3, np.inf), "CNR < 0.12": (0.0, 0.12)}
GROUPS = {"classic": ("ssvd", "csvd", "osvd", "tikhonov"), "s/cSVD": ("ssvd", "csvd"), "oSVD": ("osvd",),
          "Tikhonov": ("tikhonov",), "PHAE": ("phae",)}
KEYS = ("gm_cbf", "wm_cbf", "gm_mtt", "rcbf", "gm_wm_cbf", "gm_cbv", "rcbv")


def ranges(runs: list[dict]) -> list[str]:
    """Per CNR band and method group: min-max of each ratio to truth (what the warnings quote), and per run below
    CNR 1 each classic method's worst error factor over GM CBF, WM CBF and rCBF."""
    out = []
    for band, (low, high) in BANDS.items():
        inside = [r for r in runs if low <= r.get("cnr", np.nan) < high]
        if not inside:
            continue
        out.append(f"{band} ({len(inside)} runs, CNR {min(r['cnr'] for r in inside):.2f}-"
                   f"{max(r['cnr'] for r in inside):.2f}):")
        for group, methods in GROUPS.items():
            cells = []
            for key in KEYS:
                values = [r["methods"][m][key] for r in inside for m in methods if key in r["methods"].get(m, {})]
                if values:
                    cells.append(f"{key} {min(values):.2f}-{max(values):.2f}")
            out.append(f"  {group:9s} " + ", ".join(cells))
    def error(v):
        return max(v, 1.0 / v) if v > 0 else np.inf

    worst = [min(max(error(r["methods"][m][k]) for k in ("gm_cbf", "wm_cbf", "rcbf")) for m in GROUPS["classic"])
             for r in runs if r.get("cnr", np.inf) < 1.0]
    if worst:
        out.append(f"CNR < 1: the least-wrong classic method's worst error factor (GM/WM CBF, rCBF): "
                   f"{min(worst):.2f}-{max(worst):.2f} over {len(worst)} runs")
    return out


def _worker(args):
    setting, methods = args
    return measure(setting, methods)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--held-apart", action="store_true")
    ap.add_argument("--no-phae", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--snrs", type=float, nargs="+", help="only these SNRs (tuning set)")
    ap.add_argument("--ranges", type=Path, nargs="+", metavar="JSON",
                    help="print the ranges of earlier runs' --json files (together) and stop")
    args = ap.parse_args(argv)
    if args.ranges:
        print("\n".join(ranges([r for f in args.ranges for r in json.loads(f.read_text())["runs"]])))
        return 0
    methods = tuple(m for m in METHODS if not (args.no_phae and m == "phae"))
    settings = held_apart_settings() if args.held_apart else tuning_settings(*([args.snrs] if args.snrs else []))
    # the noiseless object of each slab/interval/peak: each method's own truncation band
    keys = {tuple(sorted((k, v) for k, v in s.items() if k not in ("snr", "seed"))) for s in settings}
    noiseless_settings = [dict(k, snr=None) for k in sorted(keys, key=str)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(args.jobs) as pool:
        noiseless = list(pool.map(_worker, [(s, methods) for s in noiseless_settings]))
        runs = list(pool.map(_worker, [(s, methods) for s in settings]))
    reference = {tuple(sorted((k, v) for k, v in r["setting"].items() if k != "snr")): r for r in noiseless}
    if args.json:
        args.json.write_text(json.dumps({"noiseless": noiseless, "runs": runs}, indent=1, default=str))
    print(RULE)
    for r in noiseless:
        print("noiseless " + line(r, None))
    for r in runs:
        key = tuple(sorted((k, v) for k, v in r["setting"].items() if k not in ("snr", "seed")))
        print(line(r, reference.get(key)), flush=True)
    print("\n".join(ranges(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
