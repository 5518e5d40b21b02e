#!/usr/bin/env python
"""PHAE weights against oSVD on the project's own DSC reference phantom (issue 14, round 6).

The phantom (``BBBAnomalyLib.phantoms.dsc.make_dsc_phantom``) is the sweep behind the issue's own numbers: a
gamma-variate AIF read from arterial voxels, Rician noise on the signal (SNR = S0 of white matter / sigma, so
SNR 20 is a GM signal drop of ~3.5 % against 5 % noise per frame), BSW leakage in the tumour rim. Every weights file
runs through ``run_dsc`` exactly as ``bbbanomaly dsc --method phae`` would (kH = rho = 1, brain mask given), on the
same phantoms as oSVD (OI 0.095). Settings: noiseless and SNR 100 / 50 / 35 / 20 at frame intervals 1 / 1.5 / 2 s
(two noise seeds), plus tissue delay 2 / 4 s and durations 60 / 120 s at SNR 50 and 20: 35 in all.

    python scripts/phae_own_phantom.py --weights dsc-phae-wide dsc-phae-fast --out own.json    # ~10 s per weights
    python scripts/phae_own_phantom.py --table own.json                                      # tables only
    python scripts/phae_own_phantom.py --ablations --out own.json     # each weights also without round 8's pooling
    python scripts/phae_own_phantom.py --geometry --ablations --out geo.json   # the delay-geometry set (round 8)

--anatomy icbm2009a | colin27 builds every phantom on another brain (scripts/normal_templates.py: the ICBM 2009a
probability maps, or the Colin27 single-subject brain segmented by a Gaussian mixture; both at 2 mm, in the same
LAS orientation as the shipped MNI152 map) instead of the MNI152 FSL map the pooling was designed on.

--ablations adds, per weights, "W, guided pooling always" (--guided-pooling on; the default, auto, pools only below a
baseline tSNR of 45), "W, no guided pooling" (--guided-pooling off: the pooled delay alone) and "W, per voxel"
(--guided-pooling off --no-pooled-delay: the maps before round 8).

--geometry (issue 14, round 8) runs a second set built after the pooled delay was designed and never used to tune
it: the delay varies *within* the brain (one hemisphere 3 s late, as behind a carotid stenosis, spliced from two
phantoms with the same noise; the tumour alone 3 s late; 3 s late with 1.5 s vascular dispersion; a later, lower
AIF with 2 s delay at Δt 1 s and 2 s), at SNR 50 and 20. Its table adds the median GM Tmax of the delayed and the
undelayed tissue against their true delays.

Prints a summary (per SNR the range of the ROI-mean CBF bias over GM, WM and rim; how many settings at SNR >= 20
have all three within +/-15 %; in how many settings Lin's CCC of CBF with truth is >= oSVD's) and a per-setting
table. Times are not measured here (scripts/phae_world.py whole_brain_timing does that).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

REFERENCE = "oSVD 0.095"
SNRS = (None, 100, 50, 35, 20)


def settings() -> list[dict]:
    out = [dict(snr=snr, seed=seed, frame_interval=dt) for snr in SNRS for dt in (1.0, 1.5, 2.0)
           for seed in ((0,) if snr is None else (0, 1))]
    out += [dict(snr=snr, seed=0, tissue_delay=d) for d in (2.0, 4.0) for snr in (50, 20)]
    out += [dict(snr=snr, seed=0, duration=dur) for dur in (60.0, 120.0) for snr in (50, 20)]
    return out


def geometry_settings() -> list[dict]:
    """Round 8's held-apart delay geometries (see the module doc), each at SNR 50 and 20."""
    out = []
    for snr in (50, 20):
        out += [dict(snr=snr, seed=3, hemisphere_delay=3.0), dict(snr=snr, seed=3, tumor_delay=3.0),
                dict(snr=snr, seed=3, tissue_delay=3.0, dispersion=1.5),
                dict(snr=snr, seed=3, tissue_delay=2.0, bolus_arrival=22.0, aif_peak=35.0, frame_interval=1.0),
                dict(snr=snr, seed=3, tissue_delay=2.0, bolus_arrival=22.0, aif_peak=35.0, frame_interval=2.0)]
    return out


def use_anatomy(name: str) -> None:
    """Build every following DSC phantom on another brain (see the module doc)."""
    import normal_templates

    import BBBAnomalyLib.phantoms.dsc as dsc_phantom

    anatomy = normal_templates.x_flipped_to_las(normal_templates.template(name))
    dsc_phantom.load_anatomy = lambda: anatomy


def make_setting(setting: dict):
    """The phantom of one setting, and a bool map of its delayed tissue (None where all tissue shares one delay).
    hemisphere_delay: the right half of the slab (voxel x >= the middle) from a phantom delayed by that much, the
    left half from the undelayed one; same seed, so the same noise, truth and AIF."""
    import dataclasses

    import numpy as np

    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    setting = dict(setting)
    hemisphere = setting.pop("hemisphere_delay", None)
    phantom = make_dsc_phantom(**setting)
    if hemisphere is None:
        return phantom, (phantom.masks["enhancing"] | phantom.masks["core"]) if setting.get("tumor_delay") else None
    late = make_dsc_phantom(**setting, tissue_delay=hemisphere)
    right = np.zeros(phantom.masks["brain"].shape, bool)
    right[right.shape[0] // 2:] = True
    data = np.where(right[..., None], late.signal.data, phantom.signal.data)
    signal = Volume(data, phantom.signal.affine, phantom.signal.times, phantom.signal.acquisition)
    return dataclasses.replace(phantom, signal=signal), right


def measure(weights: list[str], log=print, ablations: bool = False, geometry: bool = False) -> list[dict]:
    import numpy as np
    from validate_phae import accuracy_record, run

    methods = [(REFERENCE, {"method": "osvd", "osvd_oi_target": 0.095})]
    for w in weights:
        methods.append((w, {"method": "phae", "device": "cpu", "phae_weights": w}))
        if ablations:
            methods.append((f"{w}, guided pooling always", {"method": "phae", "device": "cpu", "phae_weights": w,
                                                            "phae_guided_pooling": "on"}))
            methods.append((f"{w}, no guided pooling", {"method": "phae", "device": "cpu", "phae_weights": w,
                                                        "phae_guided_pooling": False}))
            methods.append((f"{w}, per voxel", {"method": "phae", "device": "cpu", "phae_weights": w,
                                                "phae_guided_pooling": False, "phae_pooled_delay": False}))
    rows = []
    for setting in (geometry_settings() if geometry else settings()):
        phantom, delayed = make_setting(setting)
        gm = phantom.masks["gm"] & ~phantom.masks["aif"]
        for label, overrides in methods:
            res, _ = run(phantom, overrides)
            rec = accuracy_record(phantom, res)
            row = {**setting, "method": label, "gm": rec["gm"]["cbf"], "wm": rec["wm"]["cbf"],
                   "rim": rec["enhancing"]["cbf"], "ccc": rec["ccc_cbf"], "mtt_gm": rec["gm"]["mtt"],
                   "mtt_wm": rec["wm"]["mtt"], **trust_record(phantom, res)}
            if geometry:
                tmax = res.maps["tmax"].data
                region = delayed if delayed is not None else np.ones(gm.shape, bool)
                late = gm & region if setting.get("tumor_delay") is None else (region & ~phantom.masks["aif"])
                row["tmax_late"] = float(np.median(tmax[late]))
                row["tmax_early"] = float(np.median(tmax[gm & ~region])) if (gm & ~region).any() else None
            rows.append(row)
        log(f"done {setting}")
    return rows


def trust_record(phantom, res) -> dict:
    """Issue 14, round 11: what a reader of relative maps and of the uncertainty map relies on. The rim/NAWM and
    GM/NAWM CBF ratio biases (%; the pipeline's rCBF divides by the NAWM mean) and, for PHAE, the calibration of
    ``phae_cbf_uncertainty`` over the brain's tissue (truth CBF > 0): the share of voxels whose truth lies in
    CBF·exp(±1.96 SD) among the informative ones (SD < 100 %), their share, the share with CBF <= 0."""
    import numpy as np

    from BBBAnomalyLib import metrics

    m = phantom.masks
    est, truth = res.maps["cbf"].data, phantom.truth["cbf"].data
    nawm = m["nawm"] & ~m["aif"]
    out = {"rim_nawm": metrics.ratio_bias(est, truth, m["enhancing"] & ~m["aif"], nawm),
           "gm_nawm": metrics.ratio_bias(est, truth, m["gm"] & ~m["aif"], nawm)}
    if "phae_cbf_uncertainty" in res.maps:
        tissue = m["brain"] & ~m["aif"] & (truth > 0)
        cov = metrics.log_interval_coverage(est, truth, res.maps["phae_cbf_uncertainty"].data / 100.0, mask=tissue)
        out.update({f"uncertainty_{k}": v for k, v in cov.items() if np.isfinite(v)})
    return out


def trust_table(rows: list[dict]) -> str:
    """Per method: ratio biases (rim/NAWM, GM/NAWM) at SNR >= 20 and the uncertainty map's calibration."""
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    lines = ["| method | rim/NAWM CBF ratio bias, SNR ≥ 20 | GM/NAWM | settings with both within ±15 % | "
             "95 % interval holds truth (informative voxels) | informative (SD < 100 %) | CBF <= 0 |", "|" + "---|" * 7]
    rng = lambda v, f="{:+.0f}": f"{f.format(min(v))}…{f.format(max(v))}"  # noqa: E731
    for method, rs in by_method.items():
        noisy = [r for r in rs if r["snr"] is not None and r["snr"] >= 20 and "rim_nawm" in r]
        if not noisy:
            continue
        within = sum(abs(r["rim_nawm"]) <= 15 and abs(r["gm_nawm"]) <= 15 for r in noisy)
        cov = [r for r in rs if "uncertainty_coverage" in r]
        cells = ([rng([100 * r["uncertainty_" + q] for r in cov], "{:.0f}") + " %"
                  for q in ("coverage", "informative", "nonpositive")] if cov else ["—"] * 3)
        lines.append(f"| {method} | {rng([r['rim_nawm'] for r in noisy])} % | {rng([r['gm_nawm'] for r in noisy])} % | "
                     f"{within}/{len(noisy)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _setting_key(r: dict) -> str:
    key = "noiseless" if r["snr"] is None else f"SNR {r['snr']:g}"
    for field, name in (("frame_interval", "Δt {:g} s"), ("tissue_delay", "delay {:g} s"), ("duration", "{:g} s long"),
                        ("hemisphere_delay", "right hemisphere {:g} s late"), ("tumor_delay", "tumour {:g} s late"),
                        ("dispersion", "dispersion {:g} s"), ("bolus_arrival", "AIF at {:g} s"),
                        ("aif_peak", "AIF peak {:g}/s")):
        if field in r:
            key += ", " + name.format(r[field])
    return key + ("" if r["snr"] is None else f", noise {r['seed']}")


def tables(rows: list[dict]) -> str:
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    reference = {_setting_key(r): r["ccc"] for r in by_method[REFERENCE]}
    lines = ["| method | noiseless | SNR 100 | SNR 50 | SNR 35 | SNR 20 | settings at SNR ≥ 20 with GM, WM and rim within ±15 % "
             f"| settings with CCC ≥ {REFERENCE}'s |", "|" + "---|" * 8]
    for method, rs in by_method.items():
        span = {}
        for r in rs:
            lo, hi = span.get(r["snr"], (1e9, -1e9))
            span[r["snr"]] = (min(lo, r["gm"], r["wm"], r["rim"]), max(hi, r["gm"], r["wm"], r["rim"]))
        noisy = [r for r in rs if r["snr"] is not None and r["snr"] >= 20]
        within = sum(max(abs(r["gm"]), abs(r["wm"]), abs(r["rim"])) <= 15.0 for r in noisy)
        ccc_ok = sum(r["ccc"] >= reference[_setting_key(r)] for r in rs)
        cells = [f"{span[s][0]:+.0f}…{span[s][1]:+.0f} %" if s in span else "" for s in SNRS]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {within}/{len(noisy)} | {ccc_ok}/{len(rs)} |")
    methods = list(by_method)
    lines += ["", "CBF bias of the ROI mean (%) GM / WM / rim, and Lin's CCC of CBF over the brain, per setting:", "",
              "| setting | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    per_setting = defaultdict(dict)
    for r in rows:
        per_setting[_setting_key(r)][r["method"]] = r
    for key, cell in per_setting.items():
        lines.append(f"| {key} | " + " | ".join(
            f"{cell[m]['gm']:+.0f} / {cell[m]['wm']:+.0f} / {cell[m]['rim']:+.0f} ({cell[m]['ccc']:.2f})" if m in cell else ""
            for m in methods) + " |")
    if any("rim_nawm" in r for r in rows):
        lines += ["", "Ratios to NAWM (what the rCBF map reads) and the calibration of phae_cbf_uncertainty "
                  "(over all settings):", "", trust_table(rows).rstrip("\n")]
    if any("tmax_late" in r for r in rows):
        lines += ["", "Median Tmax (s) of the delayed tissue (GM, or the tumour) / of the undelayed GM, per setting "
                  "(true: the delay named / 0 s):", "", "| setting | " + " | ".join(methods) + " |",
                  "|" + "---|" * (len(methods) + 1)]
        for key, cell in per_setting.items():
            lines.append(f"| {key} | " + " | ".join(
                (f"{cell[m]['tmax_late']:.1f}" + ("" if cell[m].get("tmax_early") is None else f" / {cell[m]['tmax_early']:.1f}"))
                if m in cell else "" for m in methods) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", default=["dsc-phae-wide"],
                    help="PHAE weights: bundled names or .pt files with their cards (default: the bundled default)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument("--table", type=Path, help="print the tables of a JSON written by --out, measure nothing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ablations", action="store_true",
                    help="also run each weights without guided pooling, and without it and the pooled delay")
    ap.add_argument("--geometry", action="store_true", help="the round-8 delay-geometry set instead of the 35 settings")
    ap.add_argument("--anatomy", choices=["mni152_fsl", "icbm2009a", "colin27"], default="mni152_fsl",
                    help="the brain the phantoms are built on (default: the shipped MNI152 FSL map)")
    args = ap.parse_args(argv)
    if args.table:
        try:
            rows = json.loads(args.table.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"error: --table {args.table}: cannot read its rows ({exc.__class__.__name__}); give the JSON that "
                  "--out wrote", file=sys.stderr)
            return 2
    else:
        import torch

        torch.set_num_threads(args.threads)
        if args.anatomy != "mni152_fsl":
            use_anatomy(args.anatomy)
        rows = measure(args.weights, ablations=args.ablations, geometry=args.geometry)
        for r in rows:
            r["anatomy"] = args.anatomy
        if args.out:
            args.out.write_text(json.dumps(rows, indent=0), encoding="utf-8")
    print(tables(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
