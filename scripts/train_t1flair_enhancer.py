"""Train the T1/FLAIR enhancement predictor (structural/enhancer.py) on real BraTS-space cases.

  python scripts/train_t1flair_enhancer.py --out BBBAnomalyLib/weights                 # t1flair-enhancer-real
  python scripts/train_t1flair_enhancer.py --out folds --hold-out TCGA-DU-7294         # t1flair-enhancer-loo-DU-7294
  python scripts/train_t1flair_enhancer.py --out W --fold-out folds --loo --all --json nested.json
                                                   # the three folds, each scored on its held-out case, and the
                                                   # all-case model (the folds are its inner models)

Every case folder of --data with a T1, a FLAIR and a T1Gd is a case (brain = T1 > 0 and FLAIR > 0,
as the cases are skull-stripped). Per case: the seed's 0-255 normalisation of the T1, FLAIR and
T1Gd, the voxel features of enhancer.voxel_features, and the target T1Gd - T1; --voxels brain
voxels drawn at random per case. One ensemble member per left-out training case plus three on all
(enhancer.member_groups).

The rule that turns the prediction into the added enhancement (enhancer.added_enhancement: a
global factor alpha, the score's exponent, a margin at the brain surface) is chosen by NESTED
cross-validation inside the model's own training cases: for each training case v, a model on the
other training cases, every enhancer.candidate_rules rule scored on v (brain PSNR and slice-wise
SSIM of T1 + added against v's real T1Gd, beside v's plain T1, enhancer.SynthesisScorer); the rule
with the best worst case of min(SSIM gain, 0.01 x PSNR gain in dB) wins, and adding nothing wins
unless a rule beats it on every inner case (enhancer.choose_rule). So a fold never sees its
held-out case, and the all-case model's rule is chosen on the three folds' held-out cases (its own
training cases: in-sample, said on its card). The rule goes into the card's config. --hold-out
leaves cases out; --loo trains one fold per case and reports its held-out numbers with the rule of
its own nested choice (and, for transparency only, every rule on the held-out case in --json).
About 15-50 s of one CPU core per model and 1-3 min per 81 rules scored on a case.
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
    """None without a T1, FLAIR and T1Gd; else :func:`prepare_case` of the folder's images."""
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.cases import _on_grid, find_case_files
    from BBBAnomalyLib.structural.preprocessing import slice_axis

    files = find_case_files(folder)
    if not {"t1", "flair", "t1gd"} <= set(files):
        return None
    t1 = read_volume(files["t1"])
    flair = _on_grid(read_volume(files["flair"]), t1, order=1)
    t1gd = _on_grid(read_volume(files["t1gd"]), t1, order=1)
    t1_data = t1.data[..., 0] if t1.data.ndim == 4 else t1.data
    return prepare_case(t1_data, flair, t1gd, (t1_data > 0) & (flair > 0), t1.voxel_sizes, slice_axis(t1.affine))


def prepare_case(t1, flair, t1gd, brain, voxel_mm, slice_axis: int) -> dict:
    """``features`` and ``target`` (normalised T1Gd - T1) of every brain voxel, and the case's
    :class:`SynthesisScorer` (its plain-T1 baseline against its real T1Gd); the seed's 0-255 normalisation."""
    from BBBAnomalyLib.structural.enhancer import SynthesisScorer, voxel_features
    from BBBAnomalyLib.structural.normalisation import normalise_0_255

    a = normalise_0_255(t1, brain, "t1")
    reference = normalise_0_255(t1gd, brain, "t1gd")
    features = voxel_features(a, normalise_0_255(flair, brain, "flair"), brain, voxel_mm)
    return {"features": features, "target": (reference - a)[brain],
            "scorer": SynthesisScorer(a, reference, brain, slice_axis)}


class Recipe:
    """Trains (and caches) one ensemble per set of training cases, and scores the candidate rules of a model
    on a case it did not see. The nested rule choice of a model trained on cases T is the leave-one-case-out
    over T: a model on T minus v, every candidate rule scored on v (:func:`enhancer.choose_rule`). For the
    all-case model those inner models are the leave-one-case-out folds; for a fold they train on one case."""

    def __init__(self, cases: dict, voxels: int, seed: int, epochs: int, rules: list[dict]):
        self.cases, self.voxels, self.seed, self.epochs, self.rules = cases, voxels, seed, epochs, rules
        self._models, self._gains = {}, {}

    def model(self, trained):
        key = tuple(sorted(trained))
        if key not in self._models:
            start = time.perf_counter()
            self._models[key] = train(self.cases, list(key), self.voxels, self.seed, self.epochs)
            print(f"trained on {', '.join(key)} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        return self._models[key]

    def gains(self, trained, case: str) -> dict:
        """Every candidate rule of the model on ``trained`` scored on ``case`` (not among them), and the
        enhancing-voxel AUCs of its score (the rule does not change them)."""
        from BBBAnomalyLib.metrics import roc_auc
        from BBBAnomalyLib.structural.enhancer import FEATURE_NAMES, added_enhancement

        key = (tuple(sorted(trained)), case)
        if case in trained:
            raise ValueError(f"{case} is a training case of this model")
        if key not in self._gains:
            start = time.perf_counter()
            data = self.cases[case]
            pred = self.model(trained).predict(data["features"])
            depth = data["features"][:, FEATURE_NAMES.index("depth_mm")]
            rows = [data["scorer"].gains(added_enhancement(pred["expected"], pred["epistemic"], pred["score"],
                                                           rule=rule, depth_mm=depth)) for rule in self.rules]
            y = data["target"]
            self._gains[key] = {"rules": rows, "baseline": data["scorer"].baseline,
                                "auc": {str(t): roc_auc(y > t, pred["score"]) if 0 < np.sum(y > t) < y.size else None
                                        for t in (30, 60, 90)}}
            print(f"  {len(self.rules)} rules of the model on {', '.join(key[0])} scored on {case} "
                  f"in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        return self._gains[key]

    def nested_rule(self, trained: list[str]) -> dict:
        """The rule for a model trained on ``trained``, chosen by leave-one-case-out inside ``trained`` only."""
        from BBBAnomalyLib.structural.enhancer import choose_rule

        if len(trained) < 2:
            raise ValueError("the nested rule choice needs at least two training cases")
        inner = {v: self.gains([c for c in trained if c != v], v) for v in trained}
        best, worst = choose_rule(self.rules, [[(inner[v]["rules"][i]["d_ssim"], inner[v]["rules"][i]["d_psnr_db"])
                                                for v in trained] for i in range(len(self.rules))])
        return {"rule": self.rules[best], "worst_objective": worst[best],
                "no_rule_beats_adding_nothing": best == 0,
                "inner_validation": {v: {"trained_on": [c for c in trained if c != v],
                                         "d_psnr_db": inner[v]["rules"][best]["d_psnr_db"],
                                         "d_ssim": inner[v]["rules"][best]["d_ssim"]} for v in trained},
                "candidates": len(self.rules)}

    def held_out(self, trained: list[str], case: str, rule: dict) -> dict:
        """The model on ``trained`` with ``rule`` on ``case``: PSNR/SSIM beside the plain T1, the AUCs."""
        g = self.gains(trained, case)
        row = g["rules"][self.rules.index(rule)]
        return {"brain_psnr_db": row["psnr_db"], "plain_t1_psnr_db": g["baseline"]["psnr_db"],
                "brain_ssim": row["ssim"], "plain_t1_ssim": g["baseline"]["ssim"],
                "d_psnr_db": row["d_psnr_db"], "d_ssim": row["d_ssim"], "enhancing_voxel_auc_30_60_90": list(g["auc"].values())}


def train(cases: dict, names: list[str], voxels: int, seed: int, epochs: int):
    import torch

    from BBBAnomalyLib.structural.enhancer import fit_ensemble

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    xs, ys, gs = [], [], []
    for g, name in enumerate(names):
        x, y = cases[name]["features"], cases[name]["target"]
        rows = rng.choice(len(y), min(voxels, len(y)), replace=False)
        xs.append(x[rows]), ys.append(y[rows]), gs.append(np.full(len(rows), g))
    return fit_ensemble(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), epochs=epochs, seed=seed)


def save(model, out: Path, name: str, trained: list[str], args, metrics: dict | None, choice: dict) -> Path:
    """Weights + card; ``choice`` (Recipe.nested_rule) goes into the config (``rule``) and the card."""
    import torch

    from BBBAnomalyLib.structural.enhancer import FEATURE_NAMES, member_groups, normalise_rule
    from BBBAnomalyLib.weights import write_entry

    model.rule = normalise_rule(choice["rule"])
    model.config["rule"] = dict(model.rule)
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
        "rule_choice": dict(choice, how=(
            "config.rule = alpha * max(James-Stein_k(E, V), 0) * score ** score_power, 0 within surface_margin_mm "
            "of the brain surface (enhancer.added_enhancement); chosen among the candidates (enhancer.candidate_rules, "
            "adding nothing first) by leave-one-case-out INSIDE the training cases only: a model on all training "
            "cases but one, every rule scored on that one against its plain T1; the rule with the largest worst "
            "min(SSIM gain, 0.01 x PSNR gain in dB) over those inner validation cases wins (enhancer.choose_rule)")),
        "metrics": metrics or {"note": "trained on every case; held-out numbers are those of the leave-one-case-out "
                                       "folds in docs/validation.md (same recipe)"},
        "intended_use": "the enhancement map, enhancement_probability and the synthetic T1Gd of `bbbanomaly t1flair`",
        "limitations": ("Three real cases from two sources (BraTS 2023, TCGA via BraTS-Toolkit), all 1 mm isotropic "
                        "and skull-stripped; the change it predicts mixes enhancement (vessels, dura, tumor rim) with "
                        "each case's T1 vs T1Gd sequence contrast, and it does not predict tumor enhancement. Any "
                        "number on a case listed in in_sample_cases is in-sample (the rule too: it was chosen on "
                        "them). " + DISCLAIMER.format(n=len(trained))),
    }
    write_entry(card, path)
    return path


def short_name(case: str) -> str:
    return case.split("-", 1)[1] if case.startswith(("TCGA-", "BraTS-")) else case


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", help="weights name (default t1flair-enhancer-real, or -loo-<case> with --hold-out)")
    ap.add_argument("--hold-out", nargs="*", default=[], help="case folder names left out of training")
    ap.add_argument("--loo", action="store_true", help="one fold per case (its rule by nested cross-validation "
                                                        "inside the fold), each scored on its held-out case")
    ap.add_argument("--fold-out", help="folder for the --loo folds (default --out)")
    ap.add_argument("--all", action="store_true", help="with --loo: also the all-case model (the folds are "
                                                        "its inner models, trained once)")
    ap.add_argument("--voxels", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rule choices and held-out scores here")
    args = ap.parse_args()
    from BBBAnomalyLib.structural.enhancer import candidate_rules

    cases = {}
    for folder in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        loaded = load_training_case(folder)
        if loaded is not None:
            cases[folder.name] = loaded
            print(f"{folder.name}: {len(loaded['target'])} brain voxels", file=sys.stderr)
    if len(cases) < 3:
        ap.error(f"{args.data} holds {len(cases)} case(s) with a T1, FLAIR and T1Gd; at least 3 are needed "
                 "(the rule is chosen by leave-one-case-out inside the training cases)")
    unknown = set(args.hold_out) - set(cases)
    if unknown:
        ap.error(f"--hold-out {', '.join(sorted(unknown))} is not a case of {args.data}")
    out = Path(args.out)
    recipe = Recipe(cases, args.voxels, args.seed, args.epochs, candidate_rules())
    results = {"objective": "worst over the inner validation cases of min(SSIM gain, 0.01 x PSNR gain in dB), both "
                            "against the plain T1", "candidates": recipe.rules, "folds": {}}
    if args.loo:
        for held in cases:
            trained = [n for n in cases if n != held]
            choice = recipe.nested_rule(trained)
            scores = recipe.held_out(trained, held, choice["rule"])
            args.hold_out = [held]
            save(recipe.model(trained), Path(args.fold_out or out), f"t1flair-enhancer-loo-{short_name(held)}", trained, args,
                 {"held_out": {held: scores}}, choice)
            g = recipe.gains(trained, held)  # every rule on the held-out case: NOT used by this fold's choice
            results["folds"][held] = {"trained_on": trained, "choice": choice, "held_out": scores,
                                      "every_rule_on_the_held_out_case": [
                                          {"d_psnr_db": r["d_psnr_db"], "d_ssim": r["d_ssim"]} for r in g["rules"]]}
            print(held, json.dumps({"rule": choice["rule"], **scores}), file=sys.stderr)
        args.hold_out = []
    if args.all or not args.loo:
        trained = [n for n in cases if n not in args.hold_out]
        choice = recipe.nested_rule(trained)
        metrics = {"held_out": {h: recipe.held_out(trained, h, choice["rule"]) for h in args.hold_out}} if args.hold_out else None
        if not args.hold_out and results["folds"]:
            metrics = {"note": ("this file saw every case listed in in_sample_cases: numbers on them with it are "
                                "in-sample, and so is its rule (chosen on them). Held-out numbers come from the "
                                "leave-one-case-out folds of the same recipe, each with the rule of ITS nested "
                                "cross-validation (docs/validation.md, T1/FLAIR)"),
                       "held_out_folds": {h: dict(f["held_out"], trained_on=f["trained_on"], rule=f["choice"]["rule"])
                                          for h, f in results["folds"].items()}}
        name = args.name or ("t1flair-enhancer-real" if not args.hold_out
                             else "t1flair-enhancer-loo-" + "-".join(short_name(h) for h in args.hold_out))
        results["model"] = {"name": name, "trained_on": trained, "choice": choice}
        print(save(recipe.model(trained), out, name, trained, args, metrics, choice))
    results["every_rule_scored"] = {f"{' + '.join(t)} -> {c}": [[r["d_ssim"], r["d_psnr_db"]] for r in g["rules"]]
                                    for (t, c), g in recipe._gains.items()}  # [SSIM gain, PSNR gain dB] per rule
    text = json.dumps(results, indent=2, default=float)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "candidates"}, indent=1, default=float)[:6000])


if __name__ == "__main__":
    main()
