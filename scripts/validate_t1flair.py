"""Validation of the T1/FLAIR pipeline (synthetic T1Gd, BBB status, 3D autoencoder anomaly).

  python scripts/validate_t1flair.py cases DIR --seeds 0 40 [--normal]   # phantoms in BraTS layout
  python scripts/validate_t1flair.py phantoms --json OUT.json             # held-apart phantoms
  python scripts/validate_t1flair.py real --json OUT.json                 # ../shared/data/brats
  ... --synthesis W --identifier W --cae W   # other weights than the bundled defaults (e.g. a
                                             # leave-one-case-out fold: see docs/validation.md)

Synthesis metrics are on the seed's [0, 255] normalised scale (the real/true T1Gd normalised with
its own histogram mode, like the seed's evaluation), in the whole brain and in the whole tumor.
Beside them: the normalised T1 itself as a "no synthesis" baseline. Status calls are the
contrastive maximum; the AUC is that of the calibrated p(disrupted). Everything printed is also written to --json.
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

from BBBAnomalyLib.metrics import psnr, roc_auc, ssim  # noqa: E402
from BBBAnomalyLib.report import machine_description  # noqa: E402
from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair  # noqa: E402
from BBBAnomalyLib.structural.normalisation import normalise_0_255  # noqa: E402

SEED_CLAIMS = {"synthesis_mae": 13.8, "synthesis_psnr_db": 26.5, "synthesis_ssim": 0.79, "status_auc_external": 0.813}


def synthesis_metrics(reference, estimate, mask, slice_axis: int) -> dict:
    sigma = [1.5, 1.5, 1.5]
    sigma[slice_axis] = 0.0  # slice-wise SSIM, as for the seed's 2D images
    diff = np.abs(estimate[mask] - reference[mask])
    return {"mae": float(diff.mean()), "psnr_db": psnr(reference, estimate, mask, data_range=255.0),
            "ssim": ssim(reference, estimate, mask, data_range=255.0, sigma=sigma)}


def status_metrics(labels, probabilities, calls) -> dict:
    """AUC of the calibrated probability; accuracy etc. of the contrastive-maximum calls."""
    y, p = np.asarray(labels, int), np.asarray(probabilities, float)
    call = np.asarray([c == "disrupted" for c in calls])
    out = {"n": int(y.size), "n_disrupted": int(y.sum()), "accuracy": float(np.mean(call == y)),
           "sensitivity": float(np.mean(call[y == 1])) if y.any() else None,
           "specificity": float(np.mean(~call[y == 0])) if (y == 0).any() else None}
    if 0 < y.sum() < y.size:
        rng = np.random.default_rng(0)  # stratified bootstrap: every resample keeps both classes
        pos, neg = p[y == 1], p[y == 0]
        boot = [roc_auc(np.r_[np.ones(pos.size), np.zeros(neg.size)],
                        np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]) for _ in range(1000)]
        low, high = np.percentile(boot, [2.5, 97.5])
        ci = type("CI", (), {"estimate": roc_auc(y, p), "low": float(low), "high": float(high)})
        out.update(auc=ci.estimate, auc_ci95=[ci.low, ci.high])
    return out


def _mean(rows, key):
    return {m: float(np.mean([r[key][m] for r in rows])) for m in rows[0][key]}


def evaluate_case(t1, flair, t1gd, brain, tumor, params, tumor_for_status=None):
    """run_t1flair + synthesis metrics against the real T1Gd; ROI from tumor_for_status (None = head)."""
    start = time.perf_counter()
    result = run_t1flair(t1, flair, params, brain_mask=brain, tumor_mask=tumor_for_status)
    seconds = time.perf_counter() - start
    reference = normalise_0_255(t1gd, brain, "t1gd")
    t1_baseline = normalise_0_255(t1.data, brain, "t1")
    axis = result.extras["grid"].axes[2]
    row = {"seconds": seconds, "bbb_status": result.report["bbb_status"], "anomaly": result.report["anomaly"]}
    for name in ("synthetic_t1gd", "synthetic_t1gd_enhancing", "synthetic_t1gd_non_enhancing"):
        est = result.maps[name].data
        row[name] = {"brain": synthesis_metrics(reference, est, brain, axis)}
        if tumor is not None and tumor.any():
            row[name]["tumor"] = synthesis_metrics(reference, est, tumor, axis)
    from BBBAnomalyLib.structural.pipeline import synthesis_on_native_grid

    ex = result.extras  # the same syntheses without the T1's native detail (plain interpolation)
    called = 1 if result.report["bbb_status"]["call"] == "disrupted" else 0
    plain = synthesis_on_native_grid(ex["grid"], ex["synthesis"][called], ex["network_t1"], None, brain, False)
    row["synthetic_t1gd_interpolated"] = {"brain": synthesis_metrics(reference, plain, brain, axis)}
    if tumor is not None and tumor.any():
        row["synthetic_t1gd_interpolated"]["tumor"] = synthesis_metrics(reference, plain, tumor, axis)
    row["t1_as_t1gd_baseline"] = {"brain": synthesis_metrics(reference, t1_baseline, brain, axis)}
    if tumor is not None and tumor.any():
        row["t1_as_t1gd_baseline"]["tumor"] = synthesis_metrics(reference, t1_baseline, tumor, axis)
        from BBBAnomalyLib.metrics import dice

        row["segmentation_head_dice"] = dice(result.maps["tumor_probability"].data >= 0.5, tumor)
        a = result.maps["anomaly"].data
        row["anomaly_voxel_auc_tumor_vs_brain"] = roc_auc(tumor[brain], a[brain])
    return result, row, reference


def cmd_cases(args):
    from BBBAnomalyLib.phantoms.structural import write_cases

    folders = write_cases(args.out, range(args.seeds[0], args.seeds[1]), tumor=not args.normal)
    print(f"wrote {len(folders)} cases to {args.out}")


def cmd_phantoms(args):
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    params = _parameters(args)
    rows, labels, probs, head_probs, head_low, calls, head_calls = [], [], [], [], [], [], []
    for seed in range(*args.synthesis_seeds):
        ph = make_structural_phantom(seed)
        true_label = "synthetic_t1gd_enhancing" if ph.enhancing else "synthetic_t1gd_non_enhancing"
        result, row, reference = evaluate_case(ph.t1, ph.flair, ph.t1gd.data, ph.brain, ph.whole_tumor, params,
                                               tumor_for_status=None)
        row["true_label_synthesis"] = row[true_label]
        row["et"] = int(ph.enhancing)
        rows.append(row)
        head_probs.append(row["bbb_status"]["probability"])
        head_calls.append(row["bbb_status"]["call"])
        head_low.append(row["bbb_status"]["low_confidence"])
        # the same syntheses scored on the true whole-tumor ROI (what the seed does at inference)
        labels.append(int(ph.enhancing))
        p, call = _rescore(result, ph.whole_tumor)
        probs.append(p)
        calls.append(call)
        print(f"seed {seed}: ET {int(ph.enhancing)}, p(head ROI) {head_probs[-1]:.2f}, p(true ROI) {probs[-1]:.2f}, "
              f"PSNR {row['synthetic_t1gd']['brain']['psnr_db']:.1f} dB ({row['seconds']:.0f} s)", file=sys.stderr)
        if seed == args.synthesis_seeds[0] and args.figure:
            from BBBAnomalyLib.structural.figures import t1flair_figure

            t1flair_figure(args.figure, ph.t1, ph.flair.data, result, reference, ph.whole_tumor,
                           title=f"held-apart phantom {seed} (ET {int(ph.enhancing)})")
    normal_scores = []
    for seed in range(*args.normal_seeds):
        ph = make_structural_phantom(seed, tumor=False)
        res = run_t1flair(ph.t1, ph.flair, _parameters(args, steps=1), brain_mask=ph.brain)
        normal_scores.append(res.report["anomaly"]["patient_score"])
    tumor_scores = [r["anomaly"]["patient_score"] for r in rows]
    out = {
        "machine": machine_description(), "steps": args.steps, "seed_claims": SEED_CLAIMS,
        "weights": _weights_used(params),
        "synthesis": {k: {"brain": _mean([r[k] for r in rows], "brain"), "tumor": _mean([r[k] for r in rows], "tumor")}
                      for k in ("synthetic_t1gd", "true_label_synthesis", "synthetic_t1gd_interpolated",
                                "t1_as_t1gd_baseline")},
        "status_true_roi": status_metrics(labels, probs, calls),
        "status_segmentation_head_roi": dict(status_metrics(labels, head_probs, head_calls),
                                             low_confidence_cases=int(sum(head_low))),
        "segmentation_head_dice_mean": float(np.mean([r["segmentation_head_dice"] for r in rows])),
        "anomaly": {"voxel_auc_tumor_vs_brain_mean": float(np.mean([r["anomaly_voxel_auc_tumor_vs_brain"] for r in rows])),
                    "patient_auc_tumor_vs_normal": roc_auc([1] * len(tumor_scores) + [0] * len(normal_scores),
                                                           tumor_scores + normal_scores),
                    "n_normal": len(normal_scores)},
        "seconds_per_case_mean": float(np.mean([r["seconds"] for r in rows])),
        "cases": rows,
    }
    if args.status_seeds[1] > args.status_seeds[0]:
        more_labels, more_probs, more_calls = _status_only(range(*args.status_seeds), args.steps,
                                                           params.synthesis_weights, params.identifier_weights)
        out["status_true_roi_more_cases"] = status_metrics(more_labels, more_probs, more_calls)
    _emit(out, args.json)


def _rescore(result, roi):
    from BBBAnomalyLib.structural.identification import contrastive_maximum, slice_scores

    ex = result.extras
    net_roi = ex["grid"].to_network(roi.astype(np.float32))
    rows = np.flatnonzero(net_roi.reshape(len(net_roi), -1).max(axis=1) >= 0.25)
    t1, fl, syn, model = ex["network_t1"], ex["network_flair"], ex["synthesis"], ex["identifier"]
    plus = slice_scores(model, t1[rows], fl[rows], syn[1, rows], net_roi[rows])
    minus = slice_scores(model, t1[rows], fl[rows], syn[0, rows], net_roi[rows])
    call = contrastive_maximum(plus, minus, 0.5, model.calibration.numpy().tolist())
    return call.probability, call.call


def _status_only(seeds, steps, synthesis=None, identifier_weights=None):
    """BBB status on the true tumor ROI, synthesising only the tumor slices (cheaper: more cases)."""
    import tempfile

    import torch

    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    from BBBAnomalyLib.structural.cases import load_case
    from BBBAnomalyLib.structural.identification import contrastive_maximum, slice_scores
    from BBBAnomalyLib.structural.models import load
    from BBBAnomalyLib.structural.parameters import DEFAULT_IDENTIFIER, DEFAULT_SYNTHESIS
    from BBBAnomalyLib.structural.training import synthesise_tumor_slices

    cpu = torch.device("cpu")
    diffusion, dcard = load(synthesis or DEFAULT_SYNTHESIS, "diffusion", cpu)
    identifier, _ = load(identifier_weights or DEFAULT_IDENTIFIER, "identifier", cpu)
    labels, probs, calls = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            folder = make_structural_phantom(seed).write(Path(tmp) / f"c{seed}", f"c{seed}")
            case = load_case(folder, dcard["size"])
            t1, fl, syn, rows = synthesise_tumor_slices(diffusion, case, steps, 0, cpu)
            roi = case.tumor[rows]
            call = contrastive_maximum(slice_scores(identifier, t1, fl, syn[1], roi), slice_scores(identifier, t1, fl, syn[0], roi),
                                       0.5, identifier.calibration.numpy().tolist())
            labels.append(case.et)
            probs.append(call.probability)
            calls.append(call.call)
    return labels, probs, calls


def cmd_real(args):
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.cases import find_case_files
    from BBBAnomalyLib.structural.figures import t1flair_figure

    root = Path(args.data)
    params = _parameters(args)
    out = {"machine": machine_description(), "steps": args.steps, "seed_claims": SEED_CLAIMS,
           "weights": _weights_used(params), "cases": {}}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (not args.only or p.name in args.only)):
        files = find_case_files(folder)
        t1, flair, t1gd = (read_volume(files[k]) for k in ("t1", "flair", "t1gd"))
        brain = (t1.data > 0) & (flair.data > 0)
        seg = read_volume(files["seg"]).data if "seg" in files else None
        tumor = seg > 0 if seg is not None else None
        entry = {}
        for roi_name, roi in (("segmentation head", None), ("reference segmentation", tumor)):
            if roi_name == "reference segmentation" and roi is None:
                continue
            result, row, reference = evaluate_case(t1, flair, t1gd.data, brain, tumor, params, tumor_for_status=roi)
            if seg is not None:
                from BBBAnomalyLib.structural.cases import et_label

                row["et_from_segmentation"] = et_label(seg)
            entry[roi_name] = row
            print(f"{folder.name} ({roi_name} ROI): {row['bbb_status']['call']} p {row['bbb_status']['probability']:.2f}, "
                  f"PSNR {row['synthetic_t1gd']['brain']['psnr_db']:.1f} dB ({row['seconds']:.0f} s)", file=sys.stderr)
            if args.figures and roi_name == "segmentation head":
                t1flair_figure(Path(args.figures) / f"t1flair_real_{folder.name}.png", t1, flair.data, result, reference,
                               tumor, title=folder.name + (f" (weights {Path(args.synthesis).stem})" if args.synthesis else ""))
        out["cases"][folder.name] = entry
    _emit(out, args.json)


def _parameters(args, steps=None) -> T1FlairParameters:
    """The pipeline's parameters with the weights chosen on the command line (default: bundled)."""
    chosen = {f"{k}_weights": getattr(args, k) for k in ("synthesis", "identifier", "cae") if getattr(args, k)}
    return T1FlairParameters(steps=steps or args.steps, device="cpu", **chosen)


def _weights_used(params) -> dict:
    return {k: getattr(params, f"{k}_weights") for k in ("synthesis", "identifier", "cae")}


def _emit(out, path):
    text = json.dumps(out, indent=2, default=float)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")
    print(text if len(text) < 4000 else json.dumps({k: v for k, v in out.items() if k != "cases"}, indent=2, default=float))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cases")
    c.add_argument("out")
    c.add_argument("--seeds", type=int, nargs=2, required=True, metavar=("FIRST", "STOP"))
    c.add_argument("--normal", action="store_true", help="normal anatomy (no tumor), for the autoencoder")
    c.set_defaults(func=cmd_cases)
    p = sub.add_parser("phantoms")
    p.add_argument("--synthesis-seeds", type=int, nargs=2, default=[5000, 5012])
    p.add_argument("--status-seeds", type=int, nargs=2, default=[6000, 6040])
    p.add_argument("--normal-seeds", type=int, nargs=2, default=[7000, 7006])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--json")
    p.add_argument("--figure", default=str(REPO / "docs" / "figures" / "t1flair_phantom.png"))
    p.set_defaults(func=cmd_phantoms)
    r = sub.add_parser("real")
    r.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"))
    r.add_argument("--steps", type=int, default=4)
    r.add_argument("--json")
    r.add_argument("--figures", default=str(REPO / "docs" / "figures"))
    r.add_argument("--only", nargs="*", help="case folder names (default: all)")
    r.set_defaults(func=cmd_real)
    for sp in (p, r):
        for k in ("synthesis", "identifier", "cae"):
            sp.add_argument(f"--{k}", help=f"{k} weights: bundled name or .pt with its .json (default: the bundled demo)")
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
