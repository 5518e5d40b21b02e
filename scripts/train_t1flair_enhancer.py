"""Train the T1/FLAIR enhancement predictor (structural/enhancer.py) on real BraTS-space cases.

  python scripts/train_t1flair_enhancer.py --out BBBAnomalyLib/weights                 # t1flair-enhancer-real
  python scripts/train_t1flair_enhancer.py --out folds --hold-out TCGA-DU-7294         # t1flair-enhancer-loo-DU-7294
  python scripts/train_t1flair_enhancer.py --out folds --loo                           # all three folds + their scores

Every case folder of --data with a T1, a FLAIR and a T1Gd is a training case (brain = T1 > 0 and
FLAIR > 0, as the cases are skull-stripped). Per case: the seed's 0-255 normalisation of the T1,
FLAIR and T1Gd, the voxel features of enhancer.voxel_features, and the target T1Gd - T1;
--voxels brain voxels drawn at random (seed 0) per case. One ensemble member per left-out
training case plus one on all (enhancer.member_groups). --hold-out leaves cases out (how
docs/validation.md gets numbers on cases the weights never saw); --loo trains one fold per case and
prints the held-out enhancing-voxel AUC and the brain PSNR of T1 + added against the plain T1
(the full validation with SSIM is `validate_t1flair.py real --enhancer FOLD.pt`).
About 1 min of one CPU core per fold on three cases.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DISCLAIMER = ("A DEMONSTRATION model trained on {n} real glioma case(s) on one CPU in about a minute. Not clinically "
              "validated; never use it for a clinical decision. Retrain on your own BraTS-layout data (see `command`).")


def load_training_case(folder: Path):
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.cases import _on_grid, find_case_files
    from BBBAnomalyLib.structural.enhancer import voxel_features
    from BBBAnomalyLib.structural.normalisation import normalise_0_255

    files = find_case_files(folder)
    if not {"t1", "flair", "t1gd"} <= set(files):
        return None
    t1 = read_volume(files["t1"])
    flair = _on_grid(read_volume(files["flair"]), t1, order=1)
    t1gd = _on_grid(read_volume(files["t1gd"]), t1, order=1)
    t1_data = t1.data[..., 0] if t1.data.ndim == 4 else t1.data
    brain = (t1_data > 0) & (flair > 0)
    a = normalise_0_255(t1_data, brain, "t1")
    features = voxel_features(a, normalise_0_255(flair, brain, "flair"), brain, t1.voxel_sizes)
    return features, (normalise_0_255(t1gd, brain, "t1gd") - a)[brain]


def train(cases: dict, names: list[str], voxels: int, seed: int, epochs: int):
    import torch

    from BBBAnomalyLib.structural.enhancer import fit_ensemble

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    xs, ys, gs = [], [], []
    for g, name in enumerate(names):
        x, y = cases[name]
        rows = rng.choice(len(y), min(voxels, len(y)), replace=False)
        xs.append(x[rows]), ys.append(y[rows]), gs.append(np.full(len(rows), g))
    return fit_ensemble(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), epochs=epochs, seed=seed)


def held_out_scores(model, case) -> dict:
    from BBBAnomalyLib.metrics import roc_auc
    from BBBAnomalyLib.structural.enhancer import added_enhancement

    x, y = case
    pred = model.predict(x)
    added = added_enhancement(pred["expected"], pred["epistemic"], pred["score"])
    mse_t1, mse = float(np.mean(y ** 2)), float(np.mean((y - added) ** 2))
    return {"auc": {str(t): roc_auc(y > t, pred["score"]) for t in (30, 60, 90)},
            "psnr_gain_db": 10 * np.log10(mse_t1 / mse), "added_fraction": float(np.mean(added > 0))}


def save(model, out: Path, name: str, trained: list[str], args, metrics: dict | None) -> Path:
    import torch

    from BBBAnomalyLib.structural.enhancer import FEATURE_NAMES, member_groups
    from BBBAnomalyLib.weights import write_entry

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.pt"
    torch.save(model.state_dict(), path)
    hold = f" --hold-out {' '.join(args.hold_out)}" if args.hold_out else ""
    card = {
        "name": name, "kind": "enhancer", "model": "BBBAnomalyLib.structural.enhancer:EnhancerEnsemble",
        "config": model.config,
        "trained_on": (f"real BraTS-space glioma cases {', '.join(trained)} (T1, FLAIR, T1Gd; 1 mm isotropic, "
                       f"skull-stripped; {args.voxels} random brain voxels each); no phantoms"),
        "in_sample_cases": trained,
        "ensemble_members": [[trained[g] for g in subset] for subset in member_groups(len(trained))],
        "features": list(FEATURE_NAMES),
        "target": "normalised T1Gd - normalised T1 (seed 0-255 scale); heads p(change > 30), p(change > 60)",
        "command": f"python scripts/train_t1flair_enhancer.py --out {out} --name {name}{hold} --voxels {args.voxels} "
                   f"--epochs {args.epochs} --seed {args.seed}",
        "metrics": metrics or {"note": "trained on every case; held-out numbers are those of the leave-one-case-out "
                                       "folds in docs/validation.md (same recipe)"},
        "intended_use": "the enhancement map, enhancement_probability and the synthetic T1Gd of `bbbanomaly t1flair`",
        "limitations": ("Three real cases from two sources (BraTS 2023, TCGA via BraTS-Toolkit), all 1 mm isotropic "
                        "and skull-stripped; the change it predicts mixes enhancement (vessels, dura, tumor rim) with "
                        "each case's T1 vs T1Gd sequence contrast. Any number on a case listed in in_sample_cases is "
                        "in-sample. " + DISCLAIMER.format(n=len(trained))),
    }
    write_entry(card, path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", help="weights name (default t1flair-enhancer-real, or -loo-<case> with --hold-out)")
    ap.add_argument("--hold-out", nargs="*", default=[], help="case folder names left out of training")
    ap.add_argument("--loo", action="store_true", help="one fold per case, each scored on its held-out case")
    ap.add_argument("--voxels", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the held-out scores (--loo) here")
    args = ap.parse_args()
    cases = {}
    for folder in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        loaded = load_training_case(folder)
        if loaded is not None:
            cases[folder.name] = loaded
            print(f"{folder.name}: {len(loaded[1])} brain voxels", file=sys.stderr)
    if len(cases) < 2:
        sys.exit(f"error: {args.data} holds {len(cases)} case(s) with a T1, FLAIR and T1Gd; at least 2 are needed")
    out = Path(args.out)
    if args.loo:
        results = {}
        for held in cases:
            trained = [n for n in cases if n != held]
            start = time.perf_counter()
            model = train(cases, trained, args.voxels, args.seed, args.epochs)
            scores = dict(held_out_scores(model, cases[held]), train_seconds=time.perf_counter() - start)
            args.hold_out = [held]
            short = held.split("-", 1)[1] if held.startswith(("TCGA-", "BraTS-")) else held
            save(model, out, f"t1flair-enhancer-loo-{short}", trained, args, {"held_out": {held: scores}})
            results[held] = scores
            print(held, json.dumps(scores), file=sys.stderr)
        text = json.dumps(results, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
        return
    unknown = set(args.hold_out) - set(cases)
    if unknown:
        sys.exit(f"error: --hold-out {', '.join(sorted(unknown))} is not a case of {args.data}")
    trained = [n for n in cases if n not in args.hold_out]
    model = train(cases, trained, args.voxels, args.seed, args.epochs)
    metrics = {"held_out": {h: held_out_scores(model, cases[h]) for h in args.hold_out}} if args.hold_out else None
    name = args.name or ("t1flair-enhancer-real" if not args.hold_out else "t1flair-enhancer-loo-" + "-".join(args.hold_out))
    print(save(model, out, name, trained, args, metrics))


if __name__ == "__main__":
    main()
