"""Validation of the T1/FLAIR pipeline (synthetic T1Gd, BBB status, 3D autoencoder anomaly).

  python scripts/validate_t1flair.py cases DIR --seeds 0 40 [--normal]   # phantoms in BraTS layout
  python scripts/validate_t1flair.py phantoms --json OUT.json             # held-apart phantoms
  python scripts/validate_t1flair.py real --json OUT.json                 # ../shared/data/brats
  python scripts/validate_t1flair.py swap --json OUT.json                 # T1/FLAIR role checks (swap, T2, T1Gd)
  python scripts/validate_t1flair.py evidence CARD.json REAL.json ...     # the identifier's record on real scans
                                                                          # (leave-one-case-out `real` runs) into its card
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
from BBBAnomalyLib.core.report import machine_description  # noqa: E402
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
    """AUC and Brier score of the calibrated probability; coverage (fraction not indeterminate) and the accuracy,
    sensitivity and specificity of the calls that were made."""
    y, p = np.asarray(labels, int), np.asarray(probabilities, float)
    calls = np.asarray(calls)
    decided = calls != "indeterminate"
    call = calls == "disrupted"
    out = {"n": int(y.size), "n_disrupted": int(y.sum()), "brier": float(np.mean((p - y) ** 2)),
           "coverage": float(decided.mean()),
           "accuracy_of_calls": float(np.mean(call[decided] == y[decided])) if decided.any() else None,
           "sensitivity": float(np.mean(call[decided & (y == 1)])) if (decided & (y == 1)).any() else None,
           "specificity": float(np.mean(~call[decided & (y == 0)])) if (decided & (y == 0)).any() else None,
           "wrong_calls": int(np.sum(decided & (call != y)))}
    if 0 < y.sum() < y.size:
        rng = np.random.default_rng(0)  # stratified bootstrap: every resample keeps both classes
        pos, neg = p[y == 1], p[y == 0]
        boot = [roc_auc(np.r_[np.ones(pos.size), np.zeros(neg.size)],
                        np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]) for _ in range(1000)]
        low, high = np.percentile(boot, [2.5, 97.5])
        out.update(auc=roc_auc(y, p), auc_ci95=[float(low), float(high)])
    return out


def reliability(labels, probabilities, bins=5) -> list[dict]:
    """Reliability curve: per probability bin, the mean predicted p and the observed fraction disrupted."""
    y, p = np.asarray(labels, float), np.asarray(probabilities, float)
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if inside.any():
            out.append({"bin": [float(lo), float(hi)], "n": int(inside.sum()), "mean_p": float(p[inside].mean()),
                        "observed": float(y[inside].mean())})
    return out


def _mean(rows, key):
    return {m: float(np.mean([r[key][m] for r in rows])) for m in rows[0][key]}


#: Enhancing voxels of a real/true T1Gd: normalised T1Gd - normalised T1 above a threshold (0-255 scale; the
#: normalised T1's robust sd is 31 units). 30 also catches the two sequences' different grey/white contrast;
#: 60 and 90 (about 2 and 3 sd) leave enhancement, vessels and dura.
ENHANCING_THRESHOLDS = (30.0, 60.0, 90.0)


def enhancement_metrics(reference, t1_baseline, result, brain) -> dict:
    """Per threshold: enhancing-voxel AUC (reference - T1 > threshold) of the written enhancement map, of the
    expected change before shrinkage, of the unshrunk ET+ change, and of the FLAIR (a trivial baseline)."""
    est = result.extras["enhancement"]
    grid = result.extras["grid"]
    scores = {"enhancement_map": result.maps["enhancement"].data[brain],
              "expected_change": grid.to_native(est.expected, fill=0.0)[brain],
              "et_plus_change": grid.to_native(est.if_enhancing, fill=0.0)[brain]}
    if "enhancement_probability" in result.maps:  # the enhancer: its score and its unshrunk predicted change
        scores["enhancement_probability"] = result.maps["enhancement_probability"].data[brain]
        scores["enhancer_change"] = result.extras["enhancer_maps"]["predicted_change"][brain]
    flair = result.extras.get("flair_0255")
    if flair is not None:
        scores["flair_baseline"] = flair[brain]
    out = {"added_ml": result.report["summary"]["enhancement_ml"], "thresholds": {}}
    difference = (reference - t1_baseline)[brain]
    for threshold in ENHANCING_THRESHOLDS:
        truth = difference > threshold
        row = {"enhancing_voxels": int(truth.sum()), "enhancing_fraction": float(truth.mean())}
        if 0 < truth.sum() < truth.size:
            row.update({f"auc_{k}": roc_auc(truth, v) for k, v in scores.items()})
        out["thresholds"][str(int(threshold))] = row
    return out


def evaluate_case(t1, flair, t1gd, brain, tumor, params, tumor_for_status=None):
    """run_t1flair + synthesis metrics against the real T1Gd; ROI from tumor_for_status (None = head)."""
    start = time.perf_counter()
    result = run_t1flair(t1, flair, params, brain_mask=brain, tumor_mask=tumor_for_status)
    seconds = time.perf_counter() - start
    reference = normalise_0_255(t1gd, brain, "t1gd")
    t1_baseline = normalise_0_255(t1.data, brain, "t1")
    axis = result.extras["grid"].axes[2]
    row = {"seconds": seconds, "bbb_status": result.report["bbb_status"], "anomaly": result.report["anomaly"],
           "applicability": result.report["applicability"], "warnings": result.report["warnings"]}
    if np.shape(flair.data) == np.shape(brain):  # a trivial baseline for the enhancing voxels: FLAIR brightness
        result.extras["flair_0255"] = normalise_0_255(np.asarray(flair.data, np.float32), brain, "flair")
    row["enhancement"] = enhancement_metrics(reference, t1_baseline, result, brain)
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
        more_labels, more_probs, more_calls, _ = _status_only(range(*args.status_seeds), args.steps,
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
    labels, probs, calls, ties = [], [], [], []
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
            ties.append(call.s_enhancing == call.s_non_enhancing)
    return labels, probs, calls, ties


CANDIDATE_BANDS = [(0.45, 0.55), (0.4, 0.6), (0.35, 0.65), (0.3, 0.7), (0.25, 0.75), (0.2, 0.8)]


def _calls(probs, ties, band):
    from BBBAnomalyLib.structural.identification import call_from_probability

    return ["indeterminate" if tie else call_from_probability(p, band) for p, tie in zip(probs, ties)]


def cmd_calibration(args):
    """Reliability and Brier score of p(disrupted) on held-apart phantoms (true tumor ROI), the indeterminate
    band chosen on the tuning phantoms, and the real cases of earlier `real` runs (--real-json) beside them."""
    params = _parameters(args)
    if args.phantoms_from:  # the phantom part of an earlier run: only the real cases are added
        out = json.loads(Path(args.phantoms_from).read_text(encoding="utf-8"))
        out.pop("real", None)
        _add_real(out, args.real_json)
        if args.figure:
            _calibration_figure(args.figure, out, tuple(out["chosen_band"]))
        _emit(out, args.json)
        return
    tuning = _status_only(range(*args.tuning_seeds), args.steps, params.synthesis_weights, params.identifier_weights)
    test = _status_only(range(*args.test_seeds), args.steps, params.synthesis_weights, params.identifier_weights)
    bands = []
    for band in CANDIDATE_BANDS:
        m = status_metrics(tuning[0], tuning[1], _calls(tuning[1], tuning[3], band))
        bands.append({"band": list(band), "coverage": m["coverage"], "accuracy_of_calls": m["accuracy_of_calls"]})
    good = [b for b in bands if b["accuracy_of_calls"] is not None and b["accuracy_of_calls"] >= args.target_accuracy]
    chosen = tuple(good[0]["band"]) if good else tuple(bands[-1]["band"])
    out = {"machine": machine_description(), "weights": _weights_used(params), "steps": args.steps,
           "tuning_seeds": args.tuning_seeds, "test_seeds": args.test_seeds, "target_accuracy": args.target_accuracy,
           "bands_on_tuning": bands, "chosen_band": list(chosen),
           "tuning": dict(status_metrics(tuning[0], tuning[1], _calls(tuning[1], tuning[3], chosen)),
                          reliability=reliability(tuning[0], tuning[1])),
           "test": dict(status_metrics(test[0], test[1], _calls(test[1], test[3], chosen)),
                        reliability=reliability(test[0], test[1]),
                        probabilities=[float(v) for v in test[1]], labels=[int(v) for v in test[0]])}
    _add_real(out, args.real_json)
    if args.figure:
        _calibration_figure(args.figure, out, chosen)
    _emit(out, args.json)


def _add_real(out, paths):
    real = []
    for path in paths or []:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for case, entry in data["cases"].items():
            for roi_name, row in entry.items():
                if "et_from_segmentation" in row:
                    real.append({"case": case, "roi": roi_name, "weights": data["weights"]["identifier"],
                                 "label": int(row["et_from_segmentation"]), "p": row["bbb_status"]["probability"],
                                 "call": row["bbb_status"]["call"]})
    if real:
        out["real"] = dict(status_metrics([r["label"] for r in real], [r["p"] for r in real], [r["call"] for r in real]),
                           runs=real)


def _calibration_figure(path, out, band):
    from BBBAnomalyLib.figures import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4))
    ax = axes[0]
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="perfect calibration")
    ax.axvspan(*band, color="0.85", label=f"indeterminate band {band[0]:.2f}-{band[1]:.2f}")
    for key, colour, name in (("tuning", "tab:blue", "tuning phantoms"), ("test", "tab:red", "held-apart phantoms")):
        rel = out[key]["reliability"]
        ax.plot([r["mean_p"] for r in rel], [r["observed"] for r in rel], "o-", color=colour,
                label=f"{name} (n={out[key]['n']}, Brier {out[key]['brier']:.3f})")
        for r in rel:
            ax.annotate(str(r["n"]), (r["mean_p"], r["observed"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for r in out.get("real", {}).get("runs", []):  # jittered vertically so that overlapping runs stay visible
        ax.plot(r["p"], r["label"] + (0.03 if "head" in r["roi"] else -0.03), "k*" if "head" in r["roi"] else "k^",
                markersize=8)
    if out.get("real"):
        ax.plot([], [], "k*", label="real run, segmentation-head ROI")
        ax.plot([], [], "k^", label=f"real run, reference ROI (all {out['real']['n']} runs: Brier {out['real']['brier']:.3f})")
    ax.set_xlabel("calibrated p(disrupted)")
    ax.set_ylabel("observed fraction disrupted")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=6, loc="center right", framealpha=0.9)
    ax.set_title("reliability of p(disrupted); real cases: weights that never saw them", fontsize=8)
    ax = axes[1]
    p, y = np.asarray(out["test"]["probabilities"]), np.asarray(out["test"]["labels"])
    ax.hist([p[y == 0], p[y == 1]], bins=np.linspace(0, 1, 21), stacked=True, color=["tab:blue", "tab:red"],
            label=["intact (truth)", "disrupted (truth)"])
    ax.axvspan(*band, color="0.85", zorder=0)
    ax.set_xlabel("calibrated p(disrupted)")
    ax.set_ylabel("held-apart phantoms")
    ax.legend(fontsize=7)
    t = out["test"]
    ax.set_title(f"held-apart phantoms: coverage {t['coverage']:.2f}, accuracy of calls "
                 f"{t['accuracy_of_calls'] if t['accuracy_of_calls'] is None else round(t['accuracy_of_calls'], 2)}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_cae(args):
    """Patient z-scores of the 3D autoencoder on normal brains it did not train on (e.g. a template held out) and
    on the real cases (whole brain; voxel AUC tumor vs rest where a segmentation exists)."""
    import torch

    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural import cae as cae_mod
    from BBBAnomalyLib.structural.cases import case_folders, find_case_files, load_case
    from BBBAnomalyLib.structural.models import load
    from BBBAnomalyLib.structural.normalisation import normalise

    model, card = load(args.cae, "cae", torch.device("cpu"))
    out = {"weights": args.cae, "score_reference": card.get("score_reference"),
           "score_stats": [float(v) for v in model.score_stats], "normal": {}, "real": {}}
    with torch.inference_mode():
        for root in args.normal or []:
            for folder in case_folders(root):
                c = load_case(folder, 16, need_t1gd=False)
                _, score, z = cae_mod.anomaly(model, [c.volumes["t1"], c.volumes["flair"]], c.volumes["brain"],
                                              card["reshape"])
                out["normal"][folder.name] = {"score": score, "z": z}
        for folder in sorted(Path(args.data).iterdir()):
            if not folder.is_dir():
                continue
            files = find_case_files(folder)
            t1, flair = read_volume(files["t1"]).data, read_volume(files["flair"]).data
            brain = (t1 > 0) & (flair > 0)
            amap, score, z = cae_mod.anomaly(model, [normalise(t1, brain, "t1"), normalise(flair, brain, "flair")],
                                             brain, card["reshape"])
            row = {"score": score, "z": z}
            if "seg" in files:
                tumor = read_volume(files["seg"]).data > 0
                row["voxel_auc_tumor_vs_brain"] = roc_auc(tumor[brain], amap[brain])
            out["real"][folder.name] = row
    zs = [v["z"] for v in out["normal"].values()]
    if zs:
        out["normal_z_summary"] = {"n": len(zs), "mean": float(np.mean(zs)), "max": float(np.max(zs))}
    _emit(out, args.json)


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
            if (roi_name == "reference segmentation" and roi is None) or roi_name.split()[0] not in args.rois:
                continue
            result, row, reference = evaluate_case(t1, flair, t1gd.data, brain, tumor, params, tumor_for_status=roi)
            if seg is not None:
                from BBBAnomalyLib.structural.cases import et_label

                row["et_from_segmentation"] = et_label(seg)
            entry[roi_name] = row
            print(f"{folder.name} ({roi_name} ROI): {row['bbb_status']['call']} p {row['bbb_status']['probability']:.2f}, "
                  f"PSNR {row['synthetic_t1gd']['brain']['psnr_db']:.1f} dB ({row['seconds']:.0f} s)", file=sys.stderr)
            if args.figures and roi_name == "segmentation head":
                truth = None
                if seg is not None:
                    from BBBAnomalyLib.structural.cases import et_label

                    truth = "disrupted" if et_label(seg) else "intact"
                t1flair_figure(Path(args.figures) / f"t1flair_real_{folder.name}.png", t1, flair.data, result, reference,
                               tumor, title=folder.name + (f" (weights {Path(args.synthesis).stem})" if args.synthesis else ""),
                               truth=truth)
        out["cases"][folder.name] = entry
    _emit(out, args.json)


def cmd_evidence(args):
    """Write the identifier's record on real scans into its model card (``real_evidence``, read by
    structural/real_evidence.py): every labelled run of the given `real` JSONs, which must come from weights
    that never saw the case (leave-one-case-out folds of the card's recipe, or weights trained without real
    cases). The p recorded is the pipeline's after the tumor ROI's weight, run with --status-evidence phantom
    (or from before that option existed), i.e. the p that the record then weighs."""
    from BBBAnomalyLib.structural.real_evidence import RealEvidence

    runs = []
    for path in args.real_json:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for case, entry in sorted(data["cases"].items()):
            for roi_name, row in entry.items():
                if "et_from_segmentation" not in row:
                    continue  # no label (no segmentation): not evidence
                status = row["bbb_status"]
                if (status.get("real_evidence") or {}).get("weight", 1.0) < 1.0:
                    raise SystemExit(f"{path}: {case} was run with --status-evidence real; rerun it with "
                                     "--status-evidence phantom so that the record holds the identifier's own p")
                runs.append({"case": case, "roi": roi_name, "label": int(row["et_from_segmentation"]),
                             "p": float(status["probability"]), "weights": data["weights"]["identifier"]})
    card_path = Path(args.card)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["real_evidence"] = {"runs": runs, "source": args.source}
    evidence = RealEvidence.from_card(card)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    _emit({"card": str(card_path), **evidence.to_json(), "reason": evidence.describe()}, args.json)


def _order_checks(t1, flair, brain, affine, axis) -> dict:
    from BBBAnomalyLib.structural.applicability import check_structural_input

    checks = {c.name: c for c in check_structural_input(t1, flair, affine, brain, axis, True).checks}
    return {name: {"value": checks[name].value, "status": checks[name].status}
            for name in ("t1_flair_order", "t1_flair_bright_tail", "t1_contrast", "flair_contrast") if name in checks}


def _resliced(images, brain, affine, axis, mm):
    """The images (linear) and brain mask resliced to ``mm`` slices along ``axis``: a thick-slice input."""
    from scipy import ndimage

    vox = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    factor = [1.0, 1.0, 1.0]
    factor[axis] = vox[axis] / mm
    out = [ndimage.zoom(np.asarray(a, np.float32), factor, order=1) for a in images]
    affine = np.array(affine, float)
    affine[:3, axis] *= mm / vox[axis]
    return out, ndimage.zoom(brain.astype(np.float32), factor, order=1) > 0.5, affine


def cmd_swap(args):
    """The T1/FLAIR role checks (applicability.py) on the real cases and template phantoms, as given, with the T1
    and FLAIR swapped, and with the T2 / T1Gd given as the T1; at the native grid and resliced to 7 mm."""
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.cases import _on_grid, find_case_files
    from BBBAnomalyLib.structural.preprocessing import slice_axis

    inputs = []
    for folder in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        files = find_case_files(folder)
        t2 = [p for p in sorted(folder.iterdir()) if any(t in p.name for t in ("-t2w.", "_t2_", "_t2."))]
        if t2:
            files["t2"] = t2[0]
        t1 = read_volume(files["t1"])
        other = {k: _on_grid(read_volume(files[k]), t1, order=1).astype(np.float32) for k in ("flair", "t1gd", "t2")
                 if k in files}
        brain = (t1.data > 0) & (other["flair"] > 0)
        inputs.append((folder.name, t1.data.astype(np.float32), other, brain, t1.affine, slice_axis(t1.affine)))
    sys.path.insert(0, str(REPO / "scripts"))
    import normal_templates
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    for name in normal_templates.TEMPLATES:
        anatomy = normal_templates.template(name)
        for seed, tumor in ((3, False), (4, True)):
            ph = make_structural_phantom(seed, tumor=tumor, anatomy=anatomy)
            inputs.append((f"{name} phantom {seed} ({'tumour' if tumor else 'normal'})", ph.t1.data.astype(np.float32),
                           {"flair": ph.flair.data.astype(np.float32)}, ph.brain, ph.t1.affine, 2))
    out = {}
    for name, t1, other, brain, affine, axis in inputs:
        roles = {"as given": (t1, other["flair"]), "swapped": (other["flair"], t1)}
        roles.update({f"{k} as the T1": (other[k], other["flair"]) for k in ("t2", "t1gd") if k in other})
        row = {}
        for role, (a, b) in roles.items():
            row[role] = _order_checks(a, b, brain, affine, axis)
            (a7, b7), brain7, affine7 = _resliced([a, b], brain, affine, axis, 7.0)
            row[role + " @ 7 mm"] = _order_checks(a7, b7, brain7, affine7, axis)
        out[name] = row
        print(name, json.dumps({r: {c: v["status"] for c, v in checks.items()} for r, checks in row.items()}),
              file=sys.stderr)
    _emit({"machine": machine_description(), "cases": out}, args.json)


def _parameters(args, steps=None) -> T1FlairParameters:
    """The pipeline's parameters with the weights chosen on the command line (default: bundled)."""
    chosen = {f"{k}_weights": getattr(args, k) for k in ("synthesis", "identifier", "cae", "enhancer")
              if getattr(args, k, None)}
    # phantoms: the phantom calibration as it is (where it was measured); real cases: --status-evidence
    return T1FlairParameters(steps=steps or args.steps, device="cpu",
                             status_evidence=getattr(args, "status_evidence", "phantom"), **chosen)


def _weights_used(params) -> dict:
    return {k: getattr(params, f"{k}_weights") for k in ("synthesis", "identifier", "cae", "enhancer")}


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
    cal = sub.add_parser("calibration")
    cal.add_argument("--tuning-seeds", type=int, nargs=2, default=[6000, 6020])
    cal.add_argument("--test-seeds", type=int, nargs=2, default=[6020, 6080])
    cal.add_argument("--target-accuracy", type=float, default=0.8,
                     help="the band is the narrowest candidate whose calls on the tuning phantoms reach this accuracy")
    cal.add_argument("--real-json", nargs="*", help="JSON of `real` runs (leave-one-case-out folds) to plot beside")
    cal.add_argument("--phantoms-from", metavar="JSON", help="reuse the phantom results of an earlier calibration run")
    cal.add_argument("--steps", type=int, default=4)
    cal.add_argument("--json")
    cal.add_argument("--figure", default=str(REPO / "docs" / "figures" / "t1flair_calibration.png"))
    cal.set_defaults(func=cmd_calibration)
    ca = sub.add_parser("cae")
    ca.add_argument("--cae", required=True)
    ca.add_argument("--normal", nargs="*", help="folders of normal cases not trained on")
    ca.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"))
    ca.add_argument("--json")
    ca.set_defaults(func=cmd_cae)
    sw = sub.add_parser("swap", help="T1/FLAIR role checks on real cases and template phantoms, 1-2 and 7 mm")
    sw.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"))
    sw.add_argument("--json")
    sw.set_defaults(func=cmd_swap)
    ev = sub.add_parser("evidence", help="write an identifier's leave-one-case-out record on real scans into its card")
    ev.add_argument("card", help="the identifier's model card (.json beside its .pt)")
    ev.add_argument("real_json", nargs="+", help="JSON of `real` runs by weights that never saw the case")
    ev.add_argument("--source", required=True, help="one line: which weights made the runs, when, with which ROIs")
    ev.add_argument("--json")
    ev.set_defaults(func=cmd_evidence)

    r = sub.add_parser("real")
    r.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"))
    r.add_argument("--steps", type=int, default=4)
    r.add_argument("--json")
    r.add_argument("--figures", default=str(REPO / "docs" / "figures"))
    r.add_argument("--only", nargs="*", help="case folder names (default: all)")
    r.add_argument("--rois", nargs="+", choices=["segmentation", "reference"], default=["segmentation", "reference"],
                   help="which status ROIs to run: the segmentation head's, the reference segmentation (default both)")
    r.add_argument("--status-evidence", choices=["real", "phantom"], default="real",
                   help="real (default, what a user gets): p weighed by the identifier's record on real scans; "
                        "phantom: the identifier's own p (to make a leave-one-case-out record for `evidence`)")
    r.set_defaults(func=cmd_real)
    for sp in (p, r, cal):
        for k in ("synthesis", "identifier", "cae", "enhancer"):
            sp.add_argument(f"--{k}", help=f"{k} weights: bundled name or .pt with its .json (default: the bundled demo)")
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
