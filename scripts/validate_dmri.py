"""Validation of the diffusion anomaly pipeline on phantoms (numbers for docs/validation.md).

  python scripts/validate_dmri.py cases DIR --n 20            # healthy training cases (seeds 0..n-1)
  python scripts/validate_dmri.py evaluate --n 6 --out docs/figures/dmri_validation.json

`cases` writes healthy phantom subjects in the layout `bbbanomaly train dmri-*` reads (SNR 20-40,
32/48/64 directions, random head pose). `evaluate` makes held-apart patients (seeds 1000+, tumors
with core/edema/graded infiltration, unlike the training anomalies), runs both bundled models with
every label-free threshold through `run_dmri`, and reports voxel AUC and Dice inside GM+WM, plus
the oracle (ground-truth) Youden and Dice-optimal thresholds, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # normal_templates.py


def healthy_case(seed: int, voxel_mm: float = 2.5):
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    rng = np.random.default_rng(10_000 + seed)
    return make_dmri_phantom(seed, voxel_mm=voxel_mm, snr=float(rng.uniform(20, 40)),
                             n_directions=int(rng.choice([32, 48, 64])))


def patient_case(seed: int, voxel_mm: float = 2.5, snr: float = 30.0, n_directions: int = 64):
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    return make_dmri_phantom(seed, voxel_mm=voxel_mm, snr=snr, n_directions=n_directions, tumor=True)


def write_cases(folder: Path, n: int, start: int, voxel_mm: float) -> None:
    for seed in range(start, start + n):
        t0 = time.time()
        healthy_case(seed, voxel_mm).write(folder / f"healthy_{seed:03d}")
        print(f"healthy_{seed:03d} ({time.time() - t0:.1f} s)", flush=True)


def evaluate(n: int, start: int, voxel_mm: float, models: list[str], weights: dict[str, str]) -> dict:
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.dmri.thresholds import anomaly_mask, oracle_thresholds
    from BBBAnomalyLib.metrics import dice, roc_auc

    rows: dict = {}
    per_case = []
    for seed in range(start, start + n):
        patient = patient_case(seed, voxel_mm)
        gm_wm = patient.masks["gm_wm"]
        truth = patient.masks["tumor"]
        case = {"seed": seed, "tumor": patient.info["tumor"], "lesion_ml": float(truth.sum() * patient.dwi.voxel_volume_ml)}
        for model in models:
            for method in ("fixed", "otsu", "meanpool"):
                params = DMRIParameters(model=model, threshold=method, weights=weights.get(model), device="cpu")
                result = run_dmri(patient.dwi, params, brain_mask=patient.masks["brain"])
                region = gm_wm & result.brain_mask  # evaluation inside GM+WM of the analysed brain
                scores = result.maps["anomaly"].data[region]
                labels = truth[region]
                flagged = result.maps["anomaly_mask"].data.astype(bool)[region]
                key = (model, method)
                rows.setdefault(key, []).append({"auc": roc_auc(labels, scores), "dice": dice(flagged, labels),
                                                 "threshold": result.report["threshold"]["value"]})
                for part in ("core", "edema", "infiltration"):
                    inside = patient.masks[part][region]
                    if inside.any():
                        rows[key][-1][f"sensitivity_{part}"] = float(flagged[inside].mean())
                healthy_flag = float(flagged[~labels].mean())
                rows[key][-1]["false_positive_rate"] = healthy_flag
            # oracle thresholds (ground truth) on the same score map, with the same 3³ opening
            anomaly_map = result.maps["anomaly"].data
            oracle = oracle_thresholds(labels, scores, dice_of=lambda t: dice(
                anomaly_mask(anomaly_map, result.brain_mask, t)[region], labels))
            for name, t in oracle.items():
                mask = anomaly_mask(anomaly_map, result.brain_mask, t)
                rows.setdefault((model, f"oracle {name}"), []).append(
                    {"auc": roc_auc(labels, scores), "dice": dice(mask[region], labels), "threshold": t})
        per_case.append(case)
        print(f"patient {seed}: lesion {case['lesion_ml']:.0f} ml, " + ", ".join(
            f"{m}/{t}: AUC {rows[(m, t)][-1]['auc']:.2f} Dice {rows[(m, t)][-1]['dice']:.2f}"
            for m in models for t in ("fixed", "otsu", "meanpool")), flush=True)
    table = {}
    for (model, method), values in rows.items():
        entry = {}
        for metric in values[0]:
            arr = np.array([v.get(metric, np.nan) for v in values], float)
            entry[metric] = {"mean": float(np.nanmean(arr)), "sd": float(np.nanstd(arr))}
        table[f"{model} / {method}"] = entry
    return {"patients": per_case, "table": table}


def healthy_population(n: int, start: int, voxel_mm: float, models: list[str], templates: list[str]) -> dict:
    """Healthy subjects on several normal brains (scripts/normal_templates.py): the fraction of GM+WM each
    label-free threshold flags (a false-positive rate), and the healthy score quantiles pooled over the brains
    (what a fixed threshold calibrated on a population would be)."""
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom
    from normal_templates import template, x_flipped_to_las

    out: dict = {"n_per_template": n, "templates": templates, "rows": [], "pooled_quantiles": {}}
    pooled = {m: [] for m in models}
    for name in templates:
        anatomy = x_flipped_to_las(template(name))
        for seed in range(start, start + n):
            rng = np.random.default_rng(20_000 + seed)
            ph = make_dmri_phantom(seed, anatomy=anatomy, voxel_mm=voxel_mm, snr=float(rng.uniform(20, 40)),
                                   n_directions=int(rng.choice([32, 48, 64])))
            gm_wm = ph.masks["gm_wm"]
            for model in models:
                for method in ("fixed", "otsu"):
                    res = run_dmri(ph.dwi, DMRIParameters(model=model, threshold=method, device="cpu"),
                                   brain_mask=ph.masks["brain"])
                    analysed = res.brain_mask & gm_wm
                    flagged = res.maps["anomaly_mask"].data.astype(bool)
                    out["rows"].append({"template": name, "seed": seed, "model": model, "threshold": method,
                                        "value": res.report["threshold"]["value"],
                                        "false_positive_rate": float(flagged[analysed].mean())})
                    if method == "fixed":
                        pooled[model].append(res.maps["anomaly"].data[analysed])
            print(f"{name} {seed} done", file=sys.stderr, flush=True)
    for model, parts in pooled.items():
        values = np.concatenate(parts)
        out["pooled_quantiles"][model] = {q: float(np.quantile(values, float(q))) for q in ("0.5", "0.99", "0.995")}
    return out


def markdown(result: dict) -> str:
    lines = ["| model / threshold | voxel AUC | Dice | threshold | FPR healthy GM+WM | sens. core | sens. edema | sens. infiltration |",
             "|---|---|---|---|---|---|---|---|"]
    for key, e in result["table"].items():
        def fmt(m):
            return f"{e[m]['mean']:.2f} ± {e[m]['sd']:.2f}" if m in e else "—"
        lines.append(f"| {key} | {fmt('auc')} | {fmt('dice')} | {e['threshold']['mean']:.3g} | "
                     f"{fmt('false_positive_rate')} | {fmt('sensitivity_core')} | {fmt('sensitivity_edema')} | "
                     f"{fmt('sensitivity_infiltration')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(2)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cases", help="write healthy phantom cases for training")
    c.add_argument("folder")
    c.add_argument("--n", type=int, default=20)
    c.add_argument("--start", type=int, default=0)
    c.add_argument("--voxel-mm", type=float, default=2.5)
    e = sub.add_parser("evaluate", help="AUC/Dice on held-apart phantom patients")
    e.add_argument("--n", type=int, default=6)
    e.add_argument("--start", type=int, default=3000)  # 1000+ were looked at while developing
    e.add_argument("--voxel-mm", type=float, default=2.5)
    e.add_argument("--models", nargs="+", default=["vae", "recdisc"])
    e.add_argument("--vae-weights")
    e.add_argument("--recdisc-weights")
    e.add_argument("--out", help="JSON file for the results")
    h = sub.add_parser("healthy-population", help="false positives of the thresholds on several normal brains")
    h.add_argument("--n", type=int, default=2)
    h.add_argument("--start", type=int, default=4000)
    h.add_argument("--voxel-mm", type=float, default=2.5)
    h.add_argument("--models", nargs="+", default=["vae", "recdisc"])
    h.add_argument("--templates", nargs="+", default=["mni152_fsl", "icbm2009a", "colin27"])
    h.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.command == "healthy-population":
        result = healthy_population(args.n, args.start, args.voxel_mm, args.models, args.templates)
        text = json.dumps(result, indent=1)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
        for row in result["rows"]:
            print(f"{row['template']:11s} {row['seed']} {row['model']:8s} {row['threshold']:6s} thr {row['value']:.3f} "
                  f"FPR {row['false_positive_rate']:.3f}")
        print(json.dumps(result["pooled_quantiles"]))
        return 0
    if args.command == "cases":
        write_cases(Path(args.folder), args.n, args.start, args.voxel_mm)
        return 0
    t0 = time.time()
    result = evaluate(args.n, args.start, args.voxel_mm, args.models,
                      {"vae": args.vae_weights, "recdisc": args.recdisc_weights})
    result["seconds"] = time.time() - t0
    result["command"] = "python scripts/validate_dmri.py " + " ".join(argv or sys.argv[1:])
    print(markdown(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
