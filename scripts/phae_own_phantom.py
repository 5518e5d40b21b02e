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


def measure(weights: list[str], log=print) -> list[dict]:
    from validate_phae import accuracy_record, run

    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    methods = [(REFERENCE, {"method": "osvd", "osvd_oi_target": 0.095})]
    methods += [(w, {"method": "phae", "device": "cpu", "phae_weights": w}) for w in weights]
    rows = []
    for setting in settings():
        phantom = make_dsc_phantom(**setting)
        for label, overrides in methods:
            res, _ = run(phantom, overrides)
            rec = accuracy_record(phantom, res)
            rows.append({**setting, "method": label, "gm": rec["gm"]["cbf"], "wm": rec["wm"]["cbf"],
                         "rim": rec["enhancing"]["cbf"], "ccc": rec["ccc_cbf"], "mtt_gm": rec["gm"]["mtt"],
                         "mtt_wm": rec["wm"]["mtt"]})
        log(f"done {setting}")
    return rows


def _setting_key(r: dict) -> str:
    key = "noiseless" if r["snr"] is None else f"SNR {r['snr']:g}"
    for field, name in (("frame_interval", "Δt {:g} s"), ("tissue_delay", "delay {:g} s"), ("duration", "{:g} s long")):
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
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", default=["dsc-phae-wide"],
                    help="PHAE weights: bundled names or .pt files with their cards (default: the bundled default)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument("--table", type=Path, help="print the tables of a JSON written by --out, measure nothing")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.table:
        rows = json.loads(args.table.read_text(encoding="utf-8"))
    else:
        import torch

        torch.set_num_threads(args.threads)
        rows = measure(args.weights)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=0), encoding="utf-8")
    print(tables(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
