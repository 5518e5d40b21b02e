"""What does a T1 and a FLAIR that are not registered to each other do to the T1/FLAIR maps, and does
`--register rigid` undo it?

  python scripts/t1flair_misregistration.py --out /tmp/t1f_motion                         # every case and variant
  python scripts/t1flair_misregistration.py --out /tmp/t1f_motion --cases TCGA-FG-6692    # one case
  python scripts/t1flair_misregistration.py --out /tmp/t1f_motion --settings none         # only without registration
  python scripts/t1flair_misregistration.py --out /tmp/t1f_motion --table                 # tables of the stored runs
  python scripts/t1flair_misregistration.py --out /tmp/t1f_motion --accuracy              # registration alone
  python scripts/t1flair_misregistration.py --out /tmp/t1f_motion --benchmark             # its CPU time

The real cases (../shared/data/brats; never written there) are co-registered: they are the ground truth. The
patient's motion between the T1 and the FLAIR series is simulated without touching the FLAIR's voxels: the FLAIR's
affine becomes ``W @ affine`` for a rigid world motion W about the brain's centre, so the pipeline's own
world-coordinate resampling (the one interpolation a clinic's FLAIR also gets) puts the FLAIR's anatomy W away from
the T1's. Motions: translations of 1, 2, 4 mm (left-right, anterior-posterior, superior-inferior), rotations of 1,
2, 4 degrees (about the three axes), two combined ones (2 mm + 2 degrees, 3 mm + 3 degrees about mixed axes), and a
FLAIR stored on its own grid as a clinic's would be: 0.9 x 0.9 x 5 mm axial slabs (the mean of 5 mm, like a 2D
FLAIR) without and with a motion, and a 1 mm grid tilted 15 degrees (an AC-PC angled acquisition) with a motion.
"grid" controls (the FLAIR on its own grid, no motion) separate the interpolation's own effect from the motion's.

Each variant is run through ``run_t1flair`` (default weights, 4 steps, 1 torch thread) with ``register`` "none"
(the pipeline before `--register`) and "rigid", and compared with the unmoved case run without registration
(``original/none``) on the voxels that are brain in both runs: anomaly-map tumour AUC (segmentation > 0, the TCGA
cases), enhancement_probability's enhancing-voxel AUC (real T1Gd - T1 > 30 on the seed's 0-255 scale), the
anomaly map's false-positive volume (ml of non-tumour brain above the unmoved run's 99th percentile there) at the
brain's and the ventricles' edges (within 3 mm of the brain mask's border or of the CSF) and elsewhere, the BBB
call and p (and the identifier's own p), the registration found and the time. Runs are kept in
``--out/runs_<case>.json`` (a rerun skips stored runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import t1flair_bias_field as bias_audit  # noqa: E402  (measure: the AUCs, Dice and correlations)
import t1flair_unusual_acquisitions as audit  # noqa: E402  (load_case, auc, CASES, BRATS)

#: name -> (translation mm in world x, y, z; rotation degrees about world x, y, z). World = the NIfTI affine's frame.
MOTIONS = {
    "none": ((0, 0, 0), (0, 0, 0)),
    "t1x": ((1, 0, 0), (0, 0, 0)),
    "t2y": ((0, 2, 0), (0, 0, 0)),
    "t4z": ((0, 0, 4), (0, 0, 0)),
    "r1x": ((0, 0, 0), (1, 0, 0)),  # nodding (pitch): the most common head motion in a scanner
    "r2y": ((0, 0, 0), (0, 2, 0)),
    "r4z": ((0, 0, 0), (0, 0, 4)),
    "c2": ((1.2, -1.0, 1.2), (1.5, -1.0, 0.8)),  # about 2 mm and 2 degrees
    "c3": ((-2.0, 1.5, 1.5), (-2.0, 1.5, 1.2)),  # about 3 mm and 3 degrees
    "c6": ((3.5, -3.0, 3.0), (4.0, -3.0, 3.0)),  # about 5.5 mm and 5.8 degrees: "sometimes more"
}
#: The FLAIR's storage: its own 1 mm grid (the T1's), 0.9 x 0.9 x 5 mm axial slabs, or a 1 mm grid tilted 15 degrees.
GRIDS = ("same", "thick5", "tilt15")
#: Variants, most telling first: (grid, motion).
VARIANTS = [("same", "none"), ("same", "c2"), ("same", "c3"), ("same", "c6"), ("thick5", "none"), ("thick5", "c2"),
            ("same", "t2y"), ("same", "r2y"), ("same", "t1x"), ("same", "r1x"), ("same", "t4z"), ("same", "r4z"),
            ("tilt15", "c2")]
SETTINGS = ("none", "rigid")


def variant_name(grid: str, motion: str) -> str:
    return "original" if (grid, motion) == ("same", "none") else f"{grid}_{motion}"


def world_motion(affine, brain, motion: str) -> np.ndarray:
    """4x4 world rigid transform: rotation about the brain's centre (world), then the translation."""
    shift, angles = (np.asarray(v, float) for v in MOTIONS[motion])
    centre = (affine @ np.r_[np.argwhere(brain).mean(axis=0), 1.0])[:3]
    w = np.eye(4)
    w[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    w[:3, 3] = centre - w[:3, :3] @ centre + shift
    return w


def flair_grid(flair, affine, grid: str):
    """(array, affine) of the FLAIR stored on ``grid`` (no motion)."""
    if grid == "same":
        return flair, affine
    if grid == "thick5":  # 0.9 x 0.9 mm pixels, 5 mm slabs: the mean over 5 mm along z, sampled every 5 mm
        slab = ndimage.uniform_filter1d(np.asarray(flair, np.float32), 5, axis=2, mode="constant")
        m = np.diag([0.9, 0.9, 5.0, 1.0])
        m[:3, 3] = [0.0, 0.0, 2.0]  # slab k's centre at old index 5k + 2
        shape = (int(flair.shape[0] / 0.9), int(flair.shape[1] / 0.9), flair.shape[2] // 5)
        out = ndimage.affine_transform(slab, m[:3, :3], m[:3, 3], output_shape=shape, order=1, mode="constant")
        return out.astype(np.float32), affine @ m
    if grid == "tilt15":  # the same 1 mm voxels' grid tilted 15 degrees about the left-right axis, about the centre
        c = (np.array(flair.shape) - 1) / 2.0
        m = np.eye(4)
        m[:3, :3] = Rotation.from_euler("x", 15, degrees=True).as_matrix()
        m[:3, 3] = c - m[:3, :3] @ c
        out = ndimage.affine_transform(np.asarray(flair, np.float32), m[:3, :3], m[:3, 3], order=1, mode="constant")
        return out.astype(np.float32), affine @ m
    raise ValueError(grid)


def moved_flair(arrays, affine, grid: str, motion: str):
    brain = arrays["t1"] != 0
    data, aff = flair_grid(arrays["flair"], affine, grid)
    return data, world_motion(affine, brain, motion) @ aff


# --- runs -----------------------------------------------------------------------------------------------------

def run_one(case, grid, motion, setting, arrays, affine, folder: Path):
    import torch

    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair

    torch.set_num_threads(1)
    t1 = arrays["t1"]
    flair, flair_affine = moved_flair(arrays, affine, grid, motion)
    t1_in, flair_in, flair_affine_in = t1.copy(), flair.copy(), flair_affine.copy()
    extra = {} if "register" not in T1FlairParameters.__dataclass_fields__ else {"register": setting}
    started = time.time()
    res = run_t1flair(Volume(t1, affine), Volume(flair, flair_affine),
                      T1FlairParameters(steps=4, device="cpu", threads=1, **extra))
    seconds = time.time() - started
    assert np.array_equal(t1, t1_in) and np.array_equal(flair, flair_in), "the input was modified"
    assert np.array_equal(flair_affine, flair_affine_in), "the input's affine was modified"
    maps = {k: res.maps[k].data.astype(np.float32) for k in ("synthetic_t1gd", "enhancement_probability", "anomaly",
                                                              "tumor_probability")}
    maps["brain"] = res.brain_mask
    name = variant_name(grid, motion)
    np.savez_compressed(folder / f"{name}__{setting}.npz", **maps)
    rep = res.report
    bbb = rep["bbb_status"]
    truth = world_motion(affine, t1 != 0, motion)
    return {"case": case, "variant": name, "grid": grid, "motion": motion, "setting": setting, "seconds": seconds,
            "timings_s": rep["timings_s"], "registration": rep.get("registration"),
            "true_rotation_deg": float(Rotation.from_matrix(truth[:3, :3]).magnitude() * 180 / np.pi),
            "true_max_displacement_mm": max_displacement(truth, affine, t1 != 0),
            "call": bbb["call"], "p": bbb["probability"], "identifier_p": bbb.get("identifier_probability"),
            "roi_ml": bbb["tumor_roi_ml"], "anomaly_z": rep["anomaly"]["patient_score_z"],
            "enhancement_ml": rep["summary"]["enhancement_ml"],
            "applicability": {c["name"]: c["value"] for c in rep["applicability"]["checks"]},
            "warnings": [w for w in rep["warnings"] if not w.startswith("BBB status INDETERMINATE")]}


def max_displacement(world, affine, brain, step=4) -> float:
    """Largest |W p - p| (mm) over the brain's voxels (every ``step``-th along each axis)."""
    idx = np.argwhere(brain[::step, ::step, ::step]) * step
    p = idx @ affine[:3, :3].T + affine[:3, 3]
    return float(np.linalg.norm(p @ world[:3, :3].T + world[:3, 3] - p, axis=1).max())


def edge_zone(t1, brain, mm=3.0):
    """Brain voxels within ``mm`` of the brain mask's border or of the CSF (the ventricles and sulci: the darkest
    5 % of the brain on the T1, opened once): where a shifted FLAIR's bright/dark edges fall."""
    values = t1[brain]
    csf = ndimage.binary_opening(brain & (t1 < np.percentile(values, 5)))
    near_csf = ndimage.distance_transform_edt(~csf) <= mm
    near_border = ndimage.distance_transform_edt(brain) <= mm
    return brain & (near_csf | near_border)


def measure(row, folder: Path, arrays):
    """AUCs, false-positive volumes and correlations against the unmoved run without registration (the AUCs, Dice and
    correlations as the bias-field audit measures them; the false positives by zone here)."""
    row = bias_audit.measure(row, folder, arrays)
    here = folder / f"{row['variant']}__{row['setting']}.npz"
    base = folder / "original__none.npz"
    if not here.exists() or not base.exists():
        return row
    m, b = dict(np.load(here)), dict(np.load(base))
    common = m["brain"] & b["brain"]
    tumour = (arrays["seg"] > 0) if "seg" in arrays else np.zeros(common.shape, bool)
    # false positives: the non-tumour brain above the unmoved run's 99th percentile there (1 % by construction)
    healthy = common & ~ndimage.binary_dilation(tumour, iterations=3)
    threshold = np.percentile(b["anomaly"][healthy], 99)
    edges = edge_zone(arrays["t1"], b["brain"])
    voxel_ml = 0.001 * float(abs(np.linalg.det(np.eye(3))))  # the cases' 1 mm grid
    for zone, where in (("edge", healthy & edges), ("inner", healthy & ~edges)):
        row[f"fp_{zone}_ml"] = float((m["anomaly"][where] > threshold).sum() * voxel_ml)
        row[f"fp_{zone}_base_ml"] = float((b["anomaly"][where] > threshold).sum() * voxel_ml)
    return row


def plan(settings, grids=None):
    return [(g, mo, s) for g, mo in VARIANTS for s in settings if grids is None or g in grids]


# --- tables -----------------------------------------------------------------------------------------------------

def fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(rows):
    lines = ["| case | variant (true max mm / deg) | register | anomaly AUC (Δ) | enh. AUC (Δ) | FP ml edge / inner "
             "(unmoved) | call (p, identifier p) | r anomaly / p_enh / synth. T1Gd | tumour Dice | found: max mm / deg "
             "| reg. s | run s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["case"]: r for r in rows if r["variant"] == "original" and r["setting"] == "none"}
    for r in rows:
        b = base.get(r["case"], {})

        def delta(key):
            if r.get(key) is None or b.get(key) is None:
                return fmt(r.get(key))
            return f"{r[key]:.3f} ({r[key] - b[key]:+.3f})"
        reg = r.get("registration") or {}
        reg = reg.get("estimate", reg)  # register none: the quick estimate
        found = "—" if reg.get("max_displacement_mm") is None else \
            f"{reg['max_displacement_mm']:.2f} / {reg['rotation_deg']:.2f}"
        fp = "—" if r.get("fp_edge_ml") is None else \
            f"{r['fp_edge_ml']:.1f} / {r['fp_inner_ml']:.1f} ({r['fp_edge_base_ml']:.1f} / {r['fp_inner_base_ml']:.1f})"
        ident = fmt(r.get("identifier_p"), 2)
        truth = f"{r['true_max_displacement_mm']:.1f} / {r['true_rotation_deg']:.1f}"
        lines.append(f"| {r['case']} | {r['variant']} ({truth}) "
                     f"| {r['setting']} | {delta('anomaly_tumour_auc')} | {delta('enhancing_auc')} | {fp} "
                     f"| {r['call']} ({r['p']:.2f}, {ident}) | {fmt(r.get('r_anomaly'))} / "
                     f"{fmt(r.get('r_enhancement_probability'))} / {fmt(r.get('r_synthetic_t1gd'))} "
                     f"| {delta('tumour_dice')} | {found} | {r['timings_s'].get('registration', 0):.1f} "
                     f"| {r['seconds']:.0f} |")
    return "\n".join(lines)


def summary(rows):
    """The decision rule's numbers: worst changes against the unmoved run without registration."""
    out = []
    base = {r["case"]: r for r in rows if r["variant"] == "original" and r["setting"] == "none"}
    for setting in SETTINGS:
        for group, test in (("unmoved", lambda r: r["variant"] == "original"),
                            ("grid only", lambda r: r["motion"] == "none" and r["grid"] != "same"),
                            ("moved", lambda r: r["motion"] != "none")):
            sel = [r for r in rows if r["setting"] == setting and test(r) and r["case"] in base]
            if not sel:
                continue
            parts = []
            for key in ("anomaly_tumour_auc", "enhancing_auc"):
                d = [r[key] - base[r["case"]][key] for r in sel if r.get(key) is not None
                     and base[r["case"]].get(key) is not None]
                if d:
                    parts.append(f"{key} Δ {min(d):+.3f}..{max(d):+.3f} (|Δ| > 0.02: {sum(abs(x) > 0.02 for x in d)}"
                                 f"/{len(d)})")
            fp = [r["fp_edge_ml"] - r["fp_edge_base_ml"] for r in sel if r.get("fp_edge_ml") is not None]
            if fp:
                parts.append(f"edge FP ml added {min(fp):+.1f}..{max(fp):+.1f}")
            flips = sum(r["call"] != base[r["case"]]["call"] for r in sel)
            parts.append(f"calls changed {flips}/{len(sel)}")
            idp = [abs(r["identifier_p"] - base[r["case"]]["identifier_p"]) for r in sel
                   if r.get("identifier_p") is not None and base[r["case"]].get("identifier_p") is not None]
            if idp:
                parts.append(f"max |Δ identifier p| {max(idp):.3f}")
            regs = [r["registration"]["max_displacement_mm"] for r in sel
                    if (r.get("registration") or {}).get("max_displacement_mm") is not None]
            if regs:
                parts.append(f"motion found {min(regs):.2f}-{max(regs):.2f} mm")
            times = [r["seconds"] / base[r["case"]]["seconds"] for r in sel]
            parts.append(f"run time x{min(times):.2f}-{max(times):.2f} of the unmoved run's")
            out.append(f"- register {setting}, {group} ({len(sel)} runs): " + "; ".join(parts))
    return "\n".join(out)


# --- registration alone -------------------------------------------------------------------------------------------

def accuracy(cases):
    """The motion found by structural.alignment against the motion applied: the residual max displacement in the
    brain after composing the two, and the time, for every variant (no network run)."""
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.structural.alignment import align_flair

    lines = ["| case | variant | true max mm | found max mm | residual max / mean mm | s |",
             "|---|---|---|---|---|---|"]
    for case in cases:
        arrays, affine = audit.load_case(case)
        t1 = Volume(arrays["t1"], affine)
        brain = arrays["t1"] != 0
        idx = np.argwhere(brain[::3, ::3, ::3]) * 3
        world = idx @ affine[:3, :3].T + affine[:3, 3]
        for grid, motion in VARIANTS:
            flair, flair_affine = moved_flair(arrays, affine, grid, motion)
            started = time.perf_counter()
            aligned = align_flair(t1, Volume(flair, flair_affine), "rigid", brain, [], threads=2)
            seconds = time.perf_counter() - started
            # the FLAIR index each T1 voxel reads, against the index of the same anatomy (the applied motion's inverse)
            read = idx @ aligned.t1_to_flair[:3, :3].T + aligned.t1_to_flair[:3, 3]
            truth_w = world_motion(affine, brain, motion)
            right = np.c_[world, np.ones(len(world))] @ (np.linalg.inv(flair_affine) @ truth_w).T
            vox = np.linalg.norm(flair_affine[:3, :3], axis=0)
            err = np.linalg.norm((read - right[:, :3]) * vox, axis=1)
            reg = aligned.report
            lines.append(f"| {case} | {variant_name(grid, motion)} | {max_displacement(truth_w, affine, brain):.2f} "
                         f"| {reg['max_displacement_mm']:.2f} | {err.max():.2f} / {err.mean():.2f} | {seconds:.1f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def benchmark(case="TCGA-FG-6692", repeats=3):
    """CPU and wall seconds of placing the FLAIR on the T1 grid: the files' coordinates alone (before `--register`),
    the quick estimate (`none`) and the registration (`rigid`), unmoved and moved by c2, 1 ITK thread."""
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.structural.alignment import align_flair

    arrays, affine = audit.load_case(case)
    t1 = Volume(arrays["t1"], affine)
    lines = []
    for motion in ("none", "c2"):
        flair = Volume(*moved_flair(arrays, affine, "same", motion))
        for method in ("placed", "none", "rigid"):
            cpu, wall = [], []
            for _ in range(repeats):
                c0, w0 = time.process_time(), time.perf_counter()
                if method == "placed":
                    from BBBAnomalyLib.structural.preprocessing import flair_on_t1_grid
                    flair_on_t1_grid(t1, flair, [])
                else:
                    align_flair(t1, flair, method, None, [], threads=1)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
            lines.append(f"{case} motion {motion}, {method}: CPU {min(cpu):.2f} s, wall {min(wall):.2f} s "
                         f"(best of {repeats})")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="working folder (maps, runs_<case>.json); not in ../shared")
    ap.add_argument("--cases", nargs="*", default=list(audit.CASES))
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--grids", nargs="*", choices=GRIDS, help="only the variants on these FLAIR grids")
    ap.add_argument("--variants", nargs="*", help="only these variants (e.g. original same_c2 thick5_c2)")
    ap.add_argument("--table", action="store_true", help="only print the tables of the stored runs")
    ap.add_argument("--accuracy", action="store_true", help="the registration alone, against the applied motion")
    ap.add_argument("--benchmark", action="store_true", help="CPU and wall time of the FLAIR's placement step")
    args = ap.parse_args(argv)
    if audit.BRATS.resolve() in args.out.resolve().parents:
        ap.error("write elsewhere than ../shared")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.benchmark:
        (args.out / "benchmark.md").write_text(benchmark() + "\n")
        return
    if args.accuracy:
        text = accuracy(args.cases)
        (args.out / "accuracy.md").write_text(text + "\n")
        return
    rows = []
    for case in args.cases:
        store = args.out / f"runs_{case}.json"
        runs = json.loads(store.read_text()) if store.exists() else {}
        folder = args.out / case
        folder.mkdir(exist_ok=True)
        arrays, affine = audit.load_case(case)
        if not args.table:
            todo = [("same", "none", "none")] + plan(args.settings, args.grids)
            if args.variants:
                todo = [t for t in todo if variant_name(*t[:2]) in args.variants]
            for grid, motion, setting in todo:
                key = f"{variant_name(grid, motion)}/{setting}"
                if key in runs:
                    continue
                print(f"{case}/{key} ...", flush=True)
                runs[key] = measure(run_one(case, grid, motion, setting, arrays, affine, folder), folder, arrays)
                store.write_text(json.dumps(runs, indent=1))
        for key in runs:  # runs measured when they were made are not measured again
            if "enhancing_auc" not in runs[key]:
                runs[key] = measure(runs[key], folder, arrays)
        if not args.table:
            store.write_text(json.dumps(runs, indent=1))
        rows += [runs[k] for k in runs]
    text = table(rows) + "\n\n" + summary(rows)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
