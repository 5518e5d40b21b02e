"""Does N4 bias-field correction (`--bias-correct n4`) undo a smooth intensity field, and what does it cost?

  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias                       # every case, field and setting
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --cases TCGA-FG-6692  # one case (runs in parallel per case)
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --table               # the tables from the stored runs
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --fit-settings        # N4's shrink / iterations, measured
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --benchmark           # the added time, 240x240x155
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --lesion-out          # + the runs with n4-lesion-out
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --lesion-field        # N4's field in the tumour, per method
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --flair-only          # diagnostic: T1 left uncorrected
  python scripts/t1flair_bias_field.py --out /tmp/t1f_bias --field-evaluation    # where N4's time goes; field vs fit

The real cases (../shared/data/brats; never written there) get smooth multiplicative fields, independent on the T1
and on the FLAIR, whose shapes differ from the phantoms' training augmentation (exp of Gaussian-smoothed noise,
the same on every contrast): a random 2nd-degree polynomial (2 seeds), a sum of 3 broad Gaussians (2 seeds), a
linear ramp along each array axis (rising on the T1, falling on the FLAIR), and session 19's field
(t1flair_unusual_acquisitions.v_bias). Each is scaled to span 1 - a .. 1 + a over the brain, a = 0.15 and 0.30.
Every variant is run through ``run_t1flair`` (default weights, 4 steps, 1 torch thread) with ``bias_correct`` "n4"
and (for a subset) "none", on the original grid, and compared with the unbiased case run without correction:
anomaly-map tumour AUC (segmentation > 0, the TCGA cases), enhancement_probability's enhancing-voxel AUC (real
T1Gd - T1 > 30 on the seed's 0-255 scale), the BBB call and p, the correlation of the maps with the unbiased run,
N4's field range and the time. Runs are kept in ``--out/runs_<case>.json`` (a rerun skips stored runs).
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
sys.path.insert(0, str(REPO / "scripts"))

import t1flair_unusual_acquisitions as audit  # noqa: E402  (load_case, auc, v_bias, CASES, BRATS)

SHAPES = ("poly1", "poly2", "gauss1", "gauss2", "ramp0", "ramp1", "ramp2", "audit")
#: The subset also run without correction (the error N4 is there to remove).
UNCORRECTED = ("poly1", "gauss1", "ramp2", "audit")


# --- fields ---------------------------------------------------------------------------------------------------

def _coordinates(brain):
    """Array coordinates scaled to -1..1 over the brain's bounding box (float32, one per axis)."""
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0)
    return [((np.arange(n, dtype=np.float32) - 0.5 * (a + b)) / max(0.5 * (b - a), 1.0)).reshape(
        [-1 if i == axis else 1 for i in range(3)]) for axis, (n, a, b) in enumerate(zip(brain.shape, lo, hi))]


def _span(raw, brain, amplitude):
    """``raw`` mapped linearly onto 1 - amplitude .. 1 + amplitude over the brain's voxels."""
    lo, hi = float(raw[brain].min()), float(raw[brain].max())
    return (1.0 - amplitude + 2.0 * amplitude * (raw - lo) / (hi - lo)).astype(np.float32)


def field(shape: str, brain, amplitude: float, seed: int) -> np.ndarray:
    """A smooth multiplicative field on ``brain``'s grid, spanning 1 ± amplitude over the brain."""
    x, y, z = _coordinates(brain)
    rng = np.random.default_rng(seed)
    if shape == "poly":  # every term of degree 1 and 2
        terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
        c = rng.standard_normal(len(terms))
        raw = sum(ci * t for ci, t in zip(c, terms))
    elif shape == "gauss":  # three broad bumps and dips inside the brain's box
        raw = 0
        for _ in range(3):
            centre, width, sign = rng.uniform(-0.8, 0.8, 3), rng.uniform(0.5, 0.9), rng.choice([-1.0, 1.0])
            raw = raw + sign * np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
                                      / (2 * width ** 2))
    elif shape.startswith("ramp"):
        raw = (x, y, z)[int(shape[4:])] * (1.0 if seed % 2 else -1.0)
    else:
        raise ValueError(shape)
    return _span(np.broadcast_to(raw, brain.shape), brain, amplitude)


def biased_pair(arrays, affine, shape: str, amplitude: float):
    """(T1, FLAIR) with independent fields (the T1's seed 1, the FLAIR's 2; ramps rise on one, fall on the other)."""
    if shape == "audit":
        out = audit.v_bias(1 - amplitude, 1 + amplitude)(arrays, affine)
        return out["t1"][0], out["flair"][0]
    brain = (arrays["t1"] != 0) | (arrays["flair"] != 0)
    kind = shape.rstrip("0123456789") if not shape.startswith("ramp") else shape
    base = int(shape[-1]) * 10 if not shape.startswith("ramp") else 0
    return tuple((arrays[k] * field(kind, brain, amplitude, base + seed)).astype(np.float32)
                 for k, seed in (("t1", 1), ("flair", 2)))


# --- runs -----------------------------------------------------------------------------------------------------

def run_one(case, variant, setting, arrays, affine, folder: Path):
    import torch

    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair

    torch.set_num_threads(1)
    if variant == "original":
        t1, flair = arrays["t1"], arrays["flair"]
    else:
        shape, amplitude = variant.rsplit("_", 1)
        t1, flair = biased_pair(arrays, affine, shape, float(amplitude) / 100.0)
    t1_in, flair_in = t1.copy(), flair.copy()
    started = time.time()
    res = run_t1flair(Volume(t1, affine), Volume(flair, affine),
                      T1FlairParameters(steps=4, device="cpu", threads=1, bias_correct=setting))
    seconds = time.time() - started
    assert np.array_equal(t1, t1_in) and np.array_equal(flair, flair_in), "the input was modified"
    maps = {k: res.maps[k].data.astype(np.float32) for k in ("synthetic_t1gd", "enhancement_probability", "anomaly",
                                                              "tumor_probability")}
    maps["brain"] = res.brain_mask
    np.savez_compressed(folder / f"{variant}__{setting}.npz", **maps)
    rep = res.report
    bbb = rep["bbb_status"]
    return {"case": case, "variant": variant, "setting": setting, "seconds": seconds,
            "timings_s": rep["timings_s"], "bias_field": rep["bias_field"],
            "call": bbb["call"], "p": bbb["probability"], "identifier_p": bbb.get("identifier_probability"),
            "roi_ml": bbb["tumor_roi_ml"], "anomaly_z": rep["anomaly"]["patient_score_z"],
            "enhancement_ml": rep["summary"]["enhancement_ml"],
            "applicability": {c["name"]: c["value"] for c in rep["applicability"]["checks"]},
            "warnings": [w for w in rep["warnings"] if not w.startswith("BBB status INDETERMINATE")]}


def measure(row, folder: Path, arrays):
    """AUCs and correlations with the unbiased uncorrected run (original__none) on the brain of both runs."""
    from BBBAnomalyLib.structural.normalisation import normalise_0_255

    here = folder / f"{row['variant']}__{row['setting']}.npz"
    base = folder / "original__none.npz"
    if not here.exists() or not base.exists():
        return row
    m, b = dict(np.load(here)), dict(np.load(base))
    common = m["brain"] & b["brain"]
    for k in ("synthetic_t1gd", "enhancement_probability", "anomaly"):
        row[f"r_{k}"] = float(np.corrcoef(m[k][common], b[k][common])[0, 1])
    t1n = normalise_0_255(arrays["t1"], b["brain"], "t1")
    t1c = normalise_0_255(arrays["t1c"], b["brain"], "t1gd")
    row["enhancing_auc"] = audit.auc(m["enhancement_probability"][common], (t1c - t1n > 30)[common])
    if "seg" in arrays:
        tumour = (arrays["seg"] > 0)[common]
        row["anomaly_tumour_auc"] = audit.auc(m["anomaly"][common], tumour)
        seg = (m["tumor_probability"] >= 0.5) & common
        ref = (arrays["seg"] > 0) & common
        row["tumour_dice"] = float(2 * (seg & ref).sum() / max(seg.sum() + ref.sum(), 1))
    return row


def plan(full: bool = False, lesion_out: bool = False):
    """The runs, most telling first (a sweep cut short still answers the decision rule's first questions).
    Without ``full``: the subset measured in session 20 on a shared 2-core machine. ``lesion_out``: then the same
    n4 runs with the lesion left out of the fit (session 22), the unbiased and the ±30 %% ramp first."""
    runs = [("original", "none"), ("original", "n4")]
    if lesion_out:
        runs += [(v, "n4-lesion-out") for v in ("original", "ramp2_30", "gauss1_15", "audit_15", "audit_30",
                                                 "poly1_15")]
        return runs
    if full:
        first, rest = ("audit", "poly1", "gauss1", "ramp2"), ("poly2", "gauss2", "ramp0", "ramp1")
        runs += [(f"{s}_{a}", "n4") for a in (15, 30) for s in first]
        runs += [(f"{s}_{a}", "none") for a in (15, 30) for s in UNCORRECTED]
        runs += [(f"{s}_{a}", "n4") for a in (15, 30) for s in rest]
        return runs
    runs += [("poly1_15", "n4"), ("audit_15", "n4"), ("audit_30", "n4"), ("gauss1_15", "n4"), ("gauss1_15", "none"),
             ("ramp2_30", "n4"), ("ramp2_30", "none")]
    return runs


# --- tables -----------------------------------------------------------------------------------------------------

def fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(rows):
    lines = ["| case | field | bias_correct | anomaly AUC (Δ) | enh. AUC (Δ) | call (p) | r synth / p_enh / anomaly "
             "| N4 field T1 p1-p99 / FLAIR | N4 s | run s |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["case"]: r for r in rows if r["variant"] == "original" and r["setting"] == "none"}
    for r in rows:
        b = base.get(r["case"], {})

        def delta(key):
            if r.get(key) is None or b.get(key) is None:
                return fmt(r.get(key))
            return f"{r[key]:.3f} ({r[key] - b[key]:+.3f})"
        bf = r["bias_field"]
        rng = "—" if not bf["method"].startswith("n4") else "{:.2f}-{:.2f} / {:.2f}-{:.2f}".format(
            bf["t1"].get("field_p1", 1), bf["t1"].get("field_p99", 1), bf["flair"].get("field_p1", 1),
            bf["flair"].get("field_p99", 1))
        lines.append(f"| {r['case']} | {r['variant']} | {r['setting']} | {delta('anomaly_tumour_auc')} "
                     f"| {delta('enhancing_auc')} | {r['call']} ({r['p']:.2f}) | {fmt(r.get('r_synthetic_t1gd'))} / "
                     f"{fmt(r.get('r_enhancement_probability'))} / {fmt(r.get('r_anomaly'))} | {rng} "
                     f"| {r['timings_s'].get('bias_field', 0):.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def summary(rows):
    """The decision rule's numbers: worst changes against the unbiased uncorrected run."""
    out = []
    base = {r["case"]: r for r in rows if r["variant"] == "original" and r["setting"] == "none"}
    for setting in ("none", "n4", "n4-lesion-out"):
        for amp in ("original", "15", "30"):
            sel = [r for r in rows if r["setting"] == setting and (r["variant"] == "original" if amp == "original"
                                                                   else r["variant"].endswith("_" + amp))]
            if not sel:
                continue
            parts = []
            for key in ("anomaly_tumour_auc", "enhancing_auc"):
                d = [r[key] - base[r["case"]][key] for r in sel if r.get(key) is not None
                     and base.get(r["case"], {}).get(key) is not None]
                if d:
                    parts.append(f"{key} Δ {min(d):+.3f}..{max(d):+.3f} (|Δ| > 0.03: {sum(abs(x) > 0.03 for x in d)}"
                                 f"/{len(d)})")
            flips = sum(r["call"] != base[r["case"]]["call"] for r in sel if r["case"] in base)
            parts.append(f"calls changed {flips}/{len(sel)}; max |Δp| "
                         f"{max(abs(r['p'] - base[r['case']]['p']) for r in sel if r['case'] in base):.3f}")
            out.append(f"- {setting}, {'unbiased' if amp == 'original' else '±' + amp + ' %'} ({len(sel)} runs): "
                       + "; ".join(parts))
    return "\n".join(out)


# --- N4's own settings, and the time --------------------------------------------------------------------------

def fit_settings(case="TCGA-FG-6692"):
    """Recovery of a known ±15 % field (session 19's shape) on the T1 and N4's time, per fit spacing and iterations."""
    from BBBAnomalyLib.structural import bias_field as bf

    arrays, affine = audit.load_case(case)
    t1 = arrays["t1"]
    brain = t1 > 0
    biased = audit.v_bias(0.85, 1.15)(arrays, affine)["t1"][0]
    true = np.log(biased[brain] / t1[brain])
    true -= true.mean()
    lines = ["| fit spacing mm | iterations | rms error of the recovered log field | true field rms "
             "| time s (biased) |",
             "|---|---|---|---|---|"]
    for spacing in (2.0, 3.0, 4.0, 6.0):
        for its in ((50, 50, 50, 50), (25, 25, 25, 25), (50, 50, 50)):
            started = time.perf_counter()
            corrected, _ = bf.correct(biased, brain, (1.0, 1.0, 1.0), "T1", [], spacing, its)
            seconds = time.perf_counter() - started
            plain, _ = bf.correct(t1, brain, (1.0, 1.0, 1.0), "T1", [], spacing, its)
            # what N4 removed from the biased image beyond what it removes from the unbiased one = the added field
            est = np.log(biased[brain] / corrected[brain]) - np.log(t1[brain] / plain[brain])
            est -= est.mean()
            lines.append(f"| {spacing:g} | {'x'.join(map(str, its))} | {np.sqrt(np.mean((est - true) ** 2)):.4f} "
                         f"| {true.std():.4f} | {seconds:.1f} |")
    return "\n".join(lines)


def lesion_field(cases, k_values=(3.0,), dilations=(8.0,)):
    """How much of the tumour's FLAIR signal N4's field takes: its log field's mean inside the segmented tumour
    minus that in the rest of the brain (unbiased cases), plain and with the lesion left out, and what was left out."""
    from BBBAnomalyLib.structural import bias_field as bf

    lines = ["| case | fit | k | dilation mm | FLAIR field tumour - brain (log) | T1 (log) | left out ml "
             "| tumour left out | lesion estimate s | N4 s (T1 + FLAIR) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        arrays, _ = audit.load_case(case)
        if "seg" not in arrays:
            continue
        brain = (arrays["t1"] != 0) | (arrays["flair"] != 0)
        seg = (arrays["seg"] > 0) & brain

        def difference(image, corrected):
            ok = brain & (image > 0)
            log_field = np.log(image[ok] / corrected[ok])
            return float(log_field[seg[ok]].mean() - log_field[~seg[ok]].mean())
        settings = [("n4", None, None)] + [("n4-lesion-out", k, d) for k in k_values for d in dilations]
        for method, k, dilation in settings:
            mask, info, estimate_s = None, {}, 0.0
            if k is not None:
                started = time.perf_counter()
                mask, info = bf.lesion_estimate(arrays["flair"], brain, (1.0, 1.0, 1.0), threads=1, k=k,
                                                dilation_mm=dilation)
                estimate_s = time.perf_counter() - started
            started = time.perf_counter()
            t1, _ = bf.correct(arrays["t1"], brain, (1.0, 1.0, 1.0), "T1", [], threads=1, exclude=mask)
            flair, _ = bf.correct(arrays["flair"], brain, (1.0, 1.0, 1.0), "FLAIR", [], threads=1, exclude=mask)
            n4_s = time.perf_counter() - started
            covered = "—" if mask is None else f"{(mask & seg).sum() / seg.sum():.2f}"
            lines.append(f"| {case} | {method} | {fmt(k, 1)} | {fmt(dilation, 0)} "
                         f"| {difference(arrays['flair'], flair):+.3f} | {difference(arrays['t1'], t1):+.3f} "
                         f"| {info.get('excluded_ml', '—')} | {covered} | {estimate_s:.1f} | {n4_s:.1f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def flair_only(case, out: Path):
    """Diagnostic: the unbiased case with n4-lesion-out applied to the FLAIR only (the T1 as given), to tell which
    image's correction moves which map. Needs ``out/<case>/original__none.npz`` (a normal run first)."""
    import shutil

    from BBBAnomalyLib.structural import pipeline

    folder = out / "flair_only" / case
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / case / "original__none.npz", folder / "original__none.npz")
    original = pipeline.correct_pair

    def correct_flair_only(t1, flair, brain, voxel_mm, method, warnings, threads=None):
        _, flair_out, report = original(t1, flair, brain, voxel_mm, method, warnings, threads=threads)
        report["t1"] = {"method": "none (diagnostic: the T1 as given)", "field_p1": 1.0, "field_p99": 1.0}
        return t1, flair_out, report
    arrays, affine = audit.load_case(case)
    pipeline.correct_pair = correct_flair_only
    try:
        row = run_one(case, "original", "n4-lesion-out", arrays, affine, folder)
    finally:
        pipeline.correct_pair = original
    row = measure(row, folder, arrays)
    return (f"{case}, n4-lesion-out on the FLAIR only: anomaly AUC {fmt(row.get('anomaly_tumour_auc'))}, "
            f"enhancement AUC {fmt(row.get('enhancing_auc'))}, call {row['call']} (identifier p "
            f"{fmt(row['identifier_p'])}), tumour Dice {fmt(row.get('tumour_dice'))}")


def field_evaluation(cases):
    """Per case and image: CPU seconds of N4's fit and of evaluating its field (ITK's full-resolution evaluation of
    sessions 20-22 against ``evaluate_log_field``), and each evaluation's |difference| from the B-spline N4 fitted,
    at the brain's voxels: the exact B-spline over the shrunk grid's span every 0.5 voxel (Shrink's offsets are
    multiples of half a voxel, so every image voxel is on that grid)."""
    import SimpleITK as sitk

    from BBBAnomalyLib.structural import bias_field as bf

    lines = ["| case | image | fit CPU s | full-res evaluation CPU s | evaluate_log_field CPU s "
             "| full-res: max / p99 abs. log error | evaluate_log_field: max / p99 |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        arrays, _ = audit.load_case(case)
        brain = (arrays["t1"] != 0) | (arrays["flair"] != 0)
        box = bf.brain_box(brain)
        in_box = brain[box]
        for name in ("t1", "flair"):
            crop = np.asarray(arrays[name][box], np.float32)
            image = sitk.GetImageFromArray(crop)
            mask = sitk.GetImageFromArray((in_box & (crop > 0)).astype(np.uint8))
            mask.CopyInformation(image)
            factors = bf.shrink_factors((1.0, 1.0, 1.0))
            small, small_mask = sitk.Shrink(image, factors), sitk.Shrink(mask, factors)
            n4 = sitk.N4BiasFieldCorrectionImageFilter()
            n4.SetMaximumNumberOfIterations(list(bf.ITERATIONS))
            n4.SetConvergenceThreshold(bf.CONVERGENCE)
            n4.SetNumberOfThreads(1)
            seconds = [time.process_time()]
            n4.Execute(small, small_mask)
            seconds.append(time.process_time())
            old = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image))
            seconds.append(time.process_time())
            new = bf.evaluate_log_field(n4, image, small, factors)
            seconds.append(time.process_time())
            reference = sitk.Image([8 * (n - 1) + 1 for n in small.GetSize()], sitk.sitkFloat32)
            reference.SetOrigin(small.GetOrigin())
            reference.SetSpacing([0.5, 0.5, 0.5])
            exact = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(reference))
            voxels = np.argwhere(in_box)
            where = 2 * voxels - np.array([round(2 * v) for v in small.GetOrigin()[::-1]])
            inside = np.all((where >= 0) & (where < np.array(exact.shape)), axis=1)
            truth = exact[tuple(where[inside].T)]
            errors = [np.abs(field[tuple(voxels[inside].T)] - truth) for field in (old, new)]
            lines.append(f"| {case} | {name} | {seconds[1] - seconds[0]:.2f} | {seconds[2] - seconds[1]:.2f} "
                         f"| {seconds[3] - seconds[2]:.2f} | "
                         + " | ".join(f"{e.max():.4f} / {np.percentile(e, 99):.4f}" for e in errors) + " |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def benchmark(case="TCGA-FG-6692", repeats=3):
    """The bias_field step alone (both images) on the 240x240x155 case, ``repeats`` times; torch/ITK threads: 2."""
    from BBBAnomalyLib.structural.bias_field import correct_pair

    arrays, _ = audit.load_case(case)
    brain = (arrays["t1"] != 0) | (arrays["flair"] != 0)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        correct_pair(arrays["t1"], arrays["flair"], brain, (1.0, 1.0, 1.0), "n4", [], threads=2)
        times.append(time.perf_counter() - started)
    return f"N4 on T1 + FLAIR, {arrays['t1'].shape}, 2 threads: " + ", ".join(f"{t:.1f}" for t in times) + " s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="working folder (maps, runs_<case>.json); not in ../shared")
    ap.add_argument("--cases", nargs="*", default=list(audit.CASES))
    ap.add_argument("--table", action="store_true", help="only print the tables of the stored runs")
    ap.add_argument("--full", action="store_true", help="every field shape and seed at both amplitudes (78 runs)")
    ap.add_argument("--fit-settings", action="store_true", help="measure N4's fit spacing and iterations")
    ap.add_argument("--benchmark", action="store_true", help="time the bias_field step on a 240x240x155 case")
    ap.add_argument("--lesion-out", action="store_true",
                    help="also run bias_correct n4-lesion-out (the lesion left out of N4's fit) on the fields")
    ap.add_argument("--flair-only", action="store_true",
                    help="diagnostic: n4-lesion-out on the FLAIR only, the T1 as given (unbiased cases)")
    ap.add_argument("--field-evaluation", action="store_true",
                    help="N4's fit vs field-evaluation CPU time and the evaluated field's error against the fit")
    ap.add_argument("--lesion-field", action="store_true",
                    help="measure N4's field inside the tumour (plain and lesion left out) on the TCGA cases")
    args = ap.parse_args(argv)
    if audit.BRATS.resolve() in args.out.resolve().parents:
        ap.error("write elsewhere than ../shared")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fit_settings:
        print(fit_settings())
        return
    if args.benchmark:
        print(benchmark())
        return
    if args.flair_only:
        for case in args.cases:
            print(flair_only(case, args.out), flush=True)
        return
    if args.field_evaluation:
        text = field_evaluation(args.cases)
        (args.out / "field_evaluation.md").write_text(text + "\n")
        return
    if args.lesion_field:
        text = lesion_field([c for c in args.cases if c.startswith("TCGA")])
        (args.out / "lesion_field.md").write_text(text + "\n")
        return
    rows = []
    for case in args.cases:
        store = args.out / f"runs_{case}.json"
        runs = json.loads(store.read_text()) if store.exists() else {}
        folder = args.out / case
        folder.mkdir(exist_ok=True)
        arrays, affine = audit.load_case(case)
        if not args.table:
            for variant, setting in plan(args.full, args.lesion_out):
                key = f"{variant}/{setting}"
                if key in runs:
                    continue
                print(f"{case}/{key} ...", flush=True)
                runs[key] = measure(run_one(case, variant, setting, arrays, affine, folder), folder, arrays)
                store.write_text(json.dumps(runs, indent=1))
        for key in runs:
            runs[key] = measure(runs[key], folder, arrays)
        store.write_text(json.dumps(runs, indent=1))
        rows += [runs[k] for k in runs]
    text = table(rows) + "\n\n" + summary(rows)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
