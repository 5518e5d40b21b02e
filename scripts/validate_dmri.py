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


def patient_case(seed: int, voxel_mm: float = 2.5, snr: float = 30.0, n_directions: int = 64, anatomy=None):
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    return make_dmri_phantom(seed, voxel_mm=voxel_mm, snr=snr, n_directions=n_directions, tumor=True, anatomy=anatomy)


def write_cases(folder: Path, n: int, start: int, voxel_mm: float) -> None:
    for seed in range(start, start + n):
        t0 = time.time()
        healthy_case(seed, voxel_mm).write(folder / f"healthy_{seed:03d}")
        print(f"healthy_{seed:03d} ({time.time() - t0:.1f} s)", flush=True)


def population_case(name: str, seed: int, voxel_mm: float = 2.5, anatomy=None):
    """A healthy subject on the normal brain ``name`` (scripts/normal_templates.py): random pose, SNR 20-40,
    32/48/64 directions (the same draws as the healthy-population check, rng 20000 + seed)."""
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom
    from normal_templates import template, x_flipped_to_las

    anatomy = anatomy if anatomy is not None else x_flipped_to_las(template(name))
    rng = np.random.default_rng(20_000 + seed)
    return make_dmri_phantom(seed, anatomy=anatomy, voxel_mm=voxel_mm, snr=float(rng.uniform(20, 40)),
                             n_directions=int(rng.choice([32, 48, 64])))


def write_population_cases(folder: Path, templates: list[str], n: int, start: int, voxel_mm: float) -> None:
    """Healthy cases on several normal brains: template t gets seeds start + 1000 t ... + n - 1."""
    from normal_templates import template, x_flipped_to_las

    for t, name in enumerate(templates):
        anatomy = x_flipped_to_las(template(name))
        for seed in range(start + 1000 * t, start + 1000 * t + n):
            t0 = time.time()
            population_case(name, seed, voxel_mm, anatomy).write(folder / f"{name}_{seed:05d}")
            print(f"{name}_{seed:05d} ({time.time() - t0:.1f} s)", flush=True)


def evaluate(n: int, start: int, voxel_mm: float, models: list[str], weights: dict[str, str],
             template: str | None = None) -> dict:
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.dmri.thresholds import anomaly_mask, oracle_thresholds
    from BBBAnomalyLib.metrics import dice, roc_auc

    rows: dict = {}
    per_case = []
    anatomy = None
    if template:  # patients on another normal brain (scripts/normal_templates.py); default the shipped MNI152
        from normal_templates import template as load_template, x_flipped_to_las

        anatomy = x_flipped_to_las(load_template(template))
    for seed in range(start, start + n):
        patient = patient_case(seed, voxel_mm, anatomy=anatomy)
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


def healthy_population(n: int, start: int, voxel_mm: float, models: list[str], templates: list[str],
                       weights: dict | None = None) -> dict:
    """Healthy subjects on several normal brains (scripts/normal_templates.py): the fraction of GM+WM each
    label-free threshold flags (a false-positive rate), and the healthy score quantiles pooled over the brains
    (what a fixed threshold calibrated on a population would be)."""
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom
    from normal_templates import template, x_flipped_to_las

    weights = weights or {}
    out: dict = {"n_per_template": n, "templates": templates, "rows": [], "pooled_quantiles": {},
                 "weights": {m: weights.get(m) or DMRIParameters(model=m).weights_name for m in models}}
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
                    res = run_dmri(ph.dwi, DMRIParameters(model=model, threshold=method, device="cpu",
                                                          weights=weights.get(model)),
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


def calibrate(weights: str, templates: list[str], n: int, start: int, voxel_mm: float, quantile: float,
              write: bool, target_flagged: float | None = None) -> dict:
    """The fixed threshold of ``weights`` from healthy brains of its TRAINING templates on seeds it never saw
    (template t: start + 1000 t ...): the ``quantile`` of the healthy scores pooled over GM+WM of the analysed
    brains (every VAE score), and the fraction of healthy GM+WM that threshold then flags after the 3^3 opening.
    ``target_flagged`` instead: the lowest threshold (searched over the pooled scores' quantiles 0.5-0.9995)
    at which the mean flagged fraction after the opening is at most that (an operating point on healthy data).
    ``write``: store it in the card beside the weights as its fixed_threshold."""
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.dmri.inference import VAE_SCORES, read_card
    from BBBAnomalyLib.dmri.thresholds import anomaly_mask
    from normal_templates import template, x_flipped_to_las

    card, _ = read_card(weights)
    kind = card["kind"]
    scores = VAE_SCORES if kind == "vae" else ("probability",)
    pooled = {s: [] for s in scores}
    kept = {s: [] for s in scores}  # (anomaly map, brain, analysed region) to measure the flagged fraction
    seeds = {}
    for t, name in enumerate(templates):
        anatomy = x_flipped_to_las(template(name))
        seeds[name] = list(range(start + 1000 * t, start + 1000 * t + n))
        for seed in seeds[name]:
            ph = population_case(name, seed, voxel_mm, anatomy)
            for s in scores:
                res = run_dmri(ph.dwi, DMRIParameters(model=kind, weights=weights, device="cpu",
                                                      vae_score=s if kind == "vae" else "abs-mean"),
                               brain_mask=ph.masks["brain"])
                region = res.brain_mask & ph.masks["gm_wm"]
                pooled[s].append(res.maps["anomaly"].data[region])
                kept[s].append((res.maps["anomaly"].data, res.brain_mask, region))
            print(f"calibration {name} {seed}", file=sys.stderr, flush=True)
    thresholds, flagged = {}, {}
    for s in scores:
        values = np.concatenate(pooled[s])
        if target_flagged is None:
            thresholds[s] = float(np.quantile(values, quantile))
        else:
            candidates = np.unique(np.quantile(values, np.linspace(0.5, 0.9995, 120)))
            for t in candidates:  # the flagged fraction falls as the threshold rises
                if np.mean([anomaly_mask(a, b, t)[r].mean() for a, b, r in kept[s]]) <= target_flagged:
                    break
            thresholds[s] = float(t)
        flagged[s] = [float(anomaly_mask(a, b, thresholds[s])[r].mean()) for a, b, r in kept[s]]
    result = {
        "fixed_threshold": thresholds if kind == "vae" else thresholds["probability"],
        "fixed_threshold_from": (
            (f"{quantile * 100:g}th percentile of the healthy scores pooled over GM+WM of " if target_flagged is None
             else f"the lowest threshold flagging at most {target_flagged * 100:g} % of healthy GM+WM (after the "
                  "3x3x3 opening, mean over brains) in ")
            + f"{n * len(templates)} healthy brains of the training templates ({', '.join(templates)}) on seeds "
            f"not trained on ({'; '.join(f'{k} {v[0]}-{v[-1]}' for k, v in seeds.items())}); "
            "python scripts/validate_dmri.py calibrate"),
        "calibration": {"templates": templates, "seeds": seeds, "voxel_mm": voxel_mm,
                        **({"quantile": quantile} if target_flagged is None else {"target_flagged": target_flagged}),
                        "thresholds": thresholds,
                        "healthy_quantiles": {s: {q: float(np.quantile(np.concatenate(pooled[s]), float(q)))
                                                  for q in ("0.5", "0.9", "0.99", "0.995", "0.999")}
                                              for s in scores},
                        "flagged_fraction_after_opening": flagged},
    }
    if write:
        from BBBAnomalyLib import weights as registry

        path = Path(weights) if str(weights).endswith(".pt") else registry.WEIGHTS_DIR / f"{weights}.pt"
        card_path = path.with_suffix(".json")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card.update(result)
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return result


def real_crop(weights: list[str]) -> list[dict]:
    """dipy's real healthy 64-direction b = 1000 crop (Testing/Data/dmri/small_64D, 10x10x10 voxels of 2 mm):
    score range and the fraction of the analysed voxels each label-free threshold flags, per weights."""
    from BBBAnomalyLib.dmri import DMRIParameters, read_dwi, run_dmri
    from BBBAnomalyLib.dmri.inference import read_card

    dwi = read_dwi(Path(__file__).resolve().parents[1] / "Testing" / "Data" / "dmri" / "small_64D.nii.gz")
    rows = []
    for w in weights:
        kind = read_card(w)[0]["kind"]
        for method in ("fixed", "otsu"):
            res = run_dmri(dwi, DMRIParameters(model=kind, weights=w, threshold=method, device="cpu"))
            a = res.maps["anomaly"].data[res.brain_mask]
            rows.append({"weights": w, "threshold": method, "value": res.report["threshold"]["value"],
                         "score_min": float(a.min()), "score_median": float(np.median(a)), "score_max": float(a.max()),
                         "flagged": float(res.maps["anomaly_mask"].data.astype(bool)[res.brain_mask].mean())})
    return rows


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

    torch.set_num_threads(1)  # a shared machine: one thread (timings are not taken here)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cases", help="write healthy phantom cases for training")
    c.add_argument("folder")
    c.add_argument("--n", type=int, default=20)
    c.add_argument("--start", type=int, default=0)
    c.add_argument("--voxel-mm", type=float, default=2.5)
    pc = sub.add_parser("population-cases", help="healthy training cases on several normal brains")
    pc.add_argument("folder")
    pc.add_argument("--templates", nargs="+", default=["mni152_fsl", "icbm2009a"])
    pc.add_argument("--n", type=int, default=12, help="cases per template")
    pc.add_argument("--start", type=int, default=0, help="first seed (template t: start + 1000 t)")
    pc.add_argument("--voxel-mm", type=float, default=2.5)
    e = sub.add_parser("evaluate", help="AUC/Dice on held-apart phantom patients")
    e.add_argument("--n", type=int, default=6)
    e.add_argument("--start", type=int, default=3000)  # 1000+ were looked at while developing
    e.add_argument("--voxel-mm", type=float, default=2.5)
    e.add_argument("--models", nargs="+", default=["vae", "recdisc"])
    e.add_argument("--vae-weights")
    e.add_argument("--recdisc-weights")
    e.add_argument("--template", choices=["mni152_fsl", "icbm2009a", "colin27"],
                   help="patients on this normal brain (default: the shipped MNI152 anatomy)")
    e.add_argument("--out", help="JSON file for the results")
    h = sub.add_parser("healthy-population", help="false positives of the thresholds on several normal brains")
    h.add_argument("--n", type=int, default=2)
    h.add_argument("--start", type=int, default=4000)
    h.add_argument("--voxel-mm", type=float, default=2.5)
    h.add_argument("--models", nargs="+", default=["vae", "recdisc"])
    h.add_argument("--templates", nargs="+", default=["mni152_fsl", "icbm2009a", "colin27"])
    h.add_argument("--vae-weights")
    h.add_argument("--recdisc-weights")
    h.add_argument("--out", help="JSON file for the results")
    k = sub.add_parser("calibrate", help="fixed threshold from healthy brains of the training templates")
    k.add_argument("weights", help="bundled name or .pt path (card beside it)")
    k.add_argument("--templates", nargs="+", default=["mni152_fsl", "icbm2009a"])
    k.add_argument("--n", type=int, default=4, help="healthy brains per template")
    k.add_argument("--start", type=int, default=5000, help="first seed (template t: start + 1000 t)")
    k.add_argument("--quantile", type=float, default=0.995)
    k.add_argument("--voxel-mm", type=float, default=2.5)
    k.add_argument("--target-flagged", type=float, help="instead of --quantile: the healthy fraction flagged "
                   "after the opening to aim at (e.g. 0.01)")
    k.add_argument("--write", action="store_true", help="store the threshold in the weights' card")
    r = sub.add_parser("real-crop", help="dipy's real healthy 64-direction crop: scores and flagged fractions")
    r.add_argument("weights", nargs="+", help="bundled names or .pt paths")
    args = parser.parse_args(argv)
    if args.command == "real-crop":
        for row in real_crop(args.weights):
            print(json.dumps(row))
        return 0
    if args.command == "calibrate":
        result = calibrate(args.weights, args.templates, args.n, args.start, args.voxel_mm, args.quantile, args.write,
                           args.target_flagged)
        print(json.dumps(result, indent=1))
        return 0
    if args.command == "healthy-population":
        result = healthy_population(args.n, args.start, args.voxel_mm, args.models, args.templates,
                                    {"vae": args.vae_weights, "recdisc": args.recdisc_weights})
        text = json.dumps(result, indent=1)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
        for row in result["rows"]:
            print(f"{row['template']:11s} {row['seed']} {row['model']:8s} {row['threshold']:6s} thr {row['value']:.3f} "
                  f"FPR {row['false_positive_rate']:.3f}")
        print(json.dumps(result["pooled_quantiles"]))
        return 0
    if args.command == "population-cases":
        write_population_cases(Path(args.folder), args.templates, args.n, args.start, args.voxel_mm)
        return 0
    if args.command == "cases":
        write_cases(Path(args.folder), args.n, args.start, args.voxel_mm)
        return 0
    t0 = time.time()
    result = evaluate(args.n, args.start, args.voxel_mm, args.models,
                      {"vae": args.vae_weights, "recdisc": args.recdisc_weights}, args.template)
    result["seconds"] = time.time() - t0
    result["command"] = "python scripts/validate_dmri.py " + " ".join(argv or sys.argv[1:])
    print(markdown(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
