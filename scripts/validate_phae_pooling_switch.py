"""PHAE's automatic guided-pooling switch across three brains: where should "auto" stop pooling? (issue 14, session 24)

``--guided-pooling auto`` pools a case's curves only when its contrast-to-noise (``dsc.pipeline.contrast_to_noise``)
is below ``perfusion.guided_pooling.AUTO_MAX_CNR`` (1.35, round 8c). Session 24 found the first unpooled cases
reading worse than the pooled ones just below the switch (the "dip"), and suggested a switch near 2.6. Round 8c kept
1.35 because pooling cost voxel accuracy on the single-subject Colin27 brain. This script reruns the own-phantom grid
(scripts/phae_own_phantom.py: its 35 settings, plus SNR 70 at dt 1/1.5/2 s, seeds 0/1) or the round-8 delay-geometry
set on one brain, with oSVD 0.095 and the default PHAE weights with pooling auto / on / off, and records per setting
the GM / WM / rim ROI-mean CBF bias (%), Lin's CCC of CBF, the report's contrast-to-noise, and the guide's median
effective number of curves pooled (from the "on" run). Any switching rule on those per-case numbers is then
evaluated offline (``evaluate``): its map is the "on" or the "off" run (the "auto" rows check that 1.35 picks them).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python scripts/validate_phae_pooling_switch.py --anatomy colin27 --json c.json
    .venv/bin/python scripts/validate_phae_pooling_switch.py --evaluate mni.json colin.json icbm.json geo_*.json

The candidate rules and their acceptance were written before the measurement (docs/validation.md, issue 14, session 24:
no switch passed; 1.35 stays).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

REFERENCE = "oSVD 0.095"
#: the SNR ladder the dip is read along (same brain, frame interval and noise seed)
LADDER = (35, 50, 70, 100)
#: "reads worse than the next lower SNR": CCC lower by more than this, or the larger of |GM|, |WM| bias higher by
#: more than DIP_BIAS points (written before the measurement)
DIP_CCC = 0.03
DIP_BIAS = 3.0
GOAL_BIAS = 15.0


def grid_settings() -> list[dict]:
    """The own phantom's 35 settings plus SNR 70 at dt 1/1.5/2 s, seeds 0/1 (between round 8c's SNR 50 and 100)."""
    from phae_own_phantom import settings

    return settings() + [dict(snr=70, seed=seed, frame_interval=dt) for dt in (1.0, 1.5, 2.0) for seed in (0, 1)]


def measure(geometry: bool = False, log=print) -> list[dict]:
    from phae_own_phantom import geometry_settings, make_setting
    from validate_phae import accuracy_record, run

    methods = [(REFERENCE, {"method": "osvd", "osvd_oi_target": 0.095})]
    methods += [(mode, {"method": "phae", "device": "cpu", "phae_guided_pooling": mode})
                for mode in ("auto", "on", "off")]
    rows = []
    for setting in (geometry_settings() if geometry else grid_settings()):
        phantom, _ = make_setting(setting)
        for label, overrides in methods:
            res, _ = run(phantom, overrides)
            rec = accuracy_record(phantom, res)
            row = {**setting, "method": label, "gm": rec["gm"]["cbf"], "wm": rec["wm"]["cbf"],
                   "rim": rec["enhancing"]["cbf"], "ccc": rec["ccc_cbf"],
                   "contrast_to_noise": res.report.get("contrast_to_noise")}
            pooling = res.report.get("phae", {}).get("guided_pooling") or {}
            row["pooled"] = bool(pooling.get("applied", False))
            if "effective_curves" in pooling:
                row["effective_curves_median"] = pooling["effective_curves"]["median"]
            rows.append(row)
        on = rows[-2]
        log(f"{setting}: CNR {on['contrast_to_noise']} eff {on.get('effective_curves_median', float('nan')):.1f} | " +
            " | ".join(f"{r['method']} {r['gm']:+.1f}/{r['wm']:+.1f}/{r['rim']:+.1f} {r['ccc']:.3f}"
                       for r in rows[-4:]))
    return rows


def setting_key(row: dict) -> tuple:
    """The setting a row belongs to (everything but the method and the measured numbers)."""
    skip = {"method", "gm", "wm", "rim", "ccc", "contrast_to_noise", "pooled", "effective_curves_median"}
    return tuple(sorted((k, v) for k, v in row.items() if k not in skip))


def by_setting(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(setting_key(r), {})[r["method"]] = r
    return out


def within_goals(row: dict, reference_ccc: float) -> tuple[bool, bool]:
    """(ROI means within +/-15 % -- asked at SNR >= 20 only, else True; CCC at or above oSVD's)."""
    bias_ok = row["snr"] is None or row["snr"] < 20 or max(abs(row["gm"]), abs(row["wm"]), abs(row["rim"])) <= GOAL_BIAS
    return bias_ok, row["ccc"] >= reference_ccc


def chosen(cell: dict, rule) -> dict:
    """The row a rule picks for one setting: rule(contrast_to_noise, effective_curves_median) -> pool?"""
    on = cell["on"]
    return on if rule(on["contrast_to_noise"], on.get("effective_curves_median")) else cell["off"]


def evaluate(rows: list[dict], rule, baseline_rule) -> dict:
    """Acceptance rules 1-2 of the candidate ``rule`` against ``baseline_rule`` (both (cnr, effective) -> pool?) over
    rows of one or more brains (an "anatomy" field tells brains apart): settings whose goals the candidate loses,
    settings it changes, and the dips left along LADDER."""
    cells = by_setting(rows)
    lost, changed, gained = [], [], []
    for key, cell in cells.items():
        ref = cell[REFERENCE]["ccc"]
        before, after = chosen(cell, baseline_rule), chosen(cell, rule)
        if before is not after:
            changed.append(key)
        for i, name in enumerate(("bias", "ccc")):
            b, a = within_goals(before, ref)[i], within_goals(after, ref)[i]
            if b and not a:
                lost.append((key, name))
            elif a and not b:
                gained.append((key, name))
    return {"changed": changed, "lost": lost, "gained": gained, "dips": dips(cells, rule)}


def dips(cells: dict, rule) -> list[tuple]:
    """(brain, dt, seed, lower SNR, higher SNR, CCC change, worst-GM/WM-bias change) wherever, on the same brain,
    frame interval and seed, an SNR of LADDER reads worse than the next lower one measured by more than DIP_CCC or
    DIP_BIAS (only the plain settings: no delay or duration change)."""
    ladder = {}
    for cell in cells.values():
        row = chosen(cell, rule)
        if row["snr"] in LADDER and "frame_interval" in row and "tissue_delay" not in row and "duration" not in row:
            ladder[(row.get("anatomy"), row["frame_interval"], row["seed"], row["snr"])] = row
    out = []
    for (brain, dt, seed, snr), row in sorted(ladder.items(), key=lambda kv: str(kv[0])):
        # the next lower SNR of the ladder that was measured (a grid without SNR 70 compares 100 with 50)
        below = [s for s in LADDER[:LADDER.index(snr)] if (brain, dt, seed, s) in ladder]
        if not below:
            continue
        lower = ladder[(brain, dt, seed, below[-1])]
        d_ccc = row["ccc"] - lower["ccc"]
        d_bias = max(abs(row["gm"]), abs(row["wm"])) - max(abs(lower["gm"]), abs(lower["wm"]))
        if d_ccc < -DIP_CCC or d_bias > DIP_BIAS:
            out.append((brain, dt, seed, below[-1], snr, round(d_ccc, 3), round(d_bias, 1)))
    return out


def summary(rows: list[dict]) -> str:
    """Per brain and set: for auto / on / off, the settings at SNR >= 20 with GM, WM and rim within +/-15 %, those
    with CCC >= oSVD's, and the ROI-mean bias range at SNR 35 / 50 / 70 / 100; whether every auto row is the row the
    switch of 1.35 picks (bit for bit)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.get("anatomy"), r.get("set")), []).append(r)
    lines = ["| brain, set | mode | within +/-15 % (SNR >= 20) | CCC >= oSVD's | SNR 35 | SNR 50 | SNR 70 | SNR 100 |",
             "|---|---|---|---|---|---|---|---|"]
    for (brain, kind), group in groups.items():
        cells = by_setting(group)
        for mode in ("auto", "on", "off"):
            picked = [(cell[mode], cell[REFERENCE]["ccc"]) for cell in cells.values()]
            noisy = [(r, ref) for r, ref in picked if r["snr"] is not None and r["snr"] >= 20]
            bias_ok = sum(within_goals(r, ref)[0] for r, ref in noisy)
            ccc_ok = sum(within_goals(r, ref)[1] for r, ref in picked)
            spans = []
            for snr in LADDER:
                values = [v for r, _ in picked if r["snr"] == snr for v in (r["gm"], r["wm"], r["rim"])]
                spans.append(f"{min(values):+.0f}…{max(values):+.0f} %" if values else "")
            lines.append(f"| {brain}, {kind} | {mode} | {bias_ok}/{len(noisy)} | {ccc_ok}/{len(picked)} | "
                         + " | ".join(spans) + " |")
        mismatched = [key for key, cell in cells.items()
                      if "auto" in cell and any(cell["auto"][k] != chosen(cell, switch_at(1.35))[k]
                                                for k in ("gm", "wm", "rim", "ccc"))]
        lines.append(f"| {brain}, {kind} | auto is the 1.35 switch's pick | "
                     f"{len(cells) - len(mismatched)}/{len(cells)} | | | | | |")
    return "\n".join(lines)


def switch_at(limit: float):
    """The rule of today's code with its switch at ``limit``."""
    return lambda cnr, effective=None: cnr < limit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anatomy", choices=["mni152_fsl", "icbm2009a", "colin27"], default="mni152_fsl")
    ap.add_argument("--geometry", action="store_true", help="the round-8 delay-geometry set instead of the grid")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--evaluate", nargs="+", type=Path, help="evaluate the candidate switches on these JSONs")
    ap.add_argument("--limits", nargs="+", type=float, default=[1.35, 1.6, 1.9, 2.2, 2.6])
    args = ap.parse_args(argv)
    if args.evaluate:
        rows = [r for p in args.evaluate for r in json.loads(p.read_text(encoding="utf-8"))]
        print(summary(rows))
        for limit in args.limits:
            result = evaluate(rows, switch_at(limit), switch_at(1.35))
            print(f"switch {limit:g}: {len(result['changed'])} settings change; goals lost {len(result['lost'])}, "
                  f"gained {len(result['gained'])}; dips {len(result['dips'])}")
            for item in result["lost"]:
                print("  lost", item)
            for item in result["dips"]:
                print("  dip", item)
        return 0
    import torch

    torch.set_num_threads(1)
    if args.anatomy != "mni152_fsl":
        from phae_own_phantom import use_anatomy

        use_anatomy(args.anatomy)
    rows = measure(args.geometry, log=lambda s: print(s, flush=True))
    for r in rows:
        r["anatomy"] = args.anatomy
        r["set"] = "geometry" if args.geometry else "grid"
    if args.json:
        args.json.write_text(json.dumps(rows, indent=0, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
