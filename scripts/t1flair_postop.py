"""Post-operative anatomy inserted into the real cases: what the T1/FLAIR maps do, and the post-operative checks.

  python scripts/t1flair_postop.py --out /tmp/t1f_postop                      # every case and variant (~25 runs)
  python scripts/t1flair_postop.py --out /tmp/t1f_postop --cases TCGA-FG-6692 --variants original cavity_rim_tumour_r10
  python scripts/t1flair_postop.py --out /tmp/t1f_postop --table              # the table from the stored runs
  python scripts/t1flair_postop.py --out /tmp/t1f_postop --phantoms           # the checks on the held-apart phantoms
  python scripts/t1flair_postop.py --out /tmp/t1f_postop --unusual            # ... on session 19's acquisitions
  python scripts/t1flair_postop.py --out /tmp/t1f_postop --phantoms --tumour-seeds 6020 6080 --normal-seeds 0 0

Each case of ../shared/data/brats (never written there) gets, with intensities from its OWN tissue (a 3-class k-means of
the brain's T1 outside the dilated lesion: CSF, grey and white matter):

* a cavity: a ball at the CSF class's median T1 and median FLAIR;
* a methaemoglobin rim: a 2 mm shell around the cavity (or a solid ball, ``haematoma``) at the white-matter class's
  99th T1 percentile and the brain's 99th FLAIR percentile;
* each with the case's own noise added (1.4826 MAD of the T1/FLAIR minus its 3x3x3 median, in white matter) and a
  one-voxel partial-volume edge,

placed at the tumour's centre (replacing part of it), beside the tumour (its edge R + 3 mm from the tumour), or in
normal tissue (the mirror of the tumour's centre across the midline). The tumour is the segmentation (TCGA cases) or
the largest FLAIR-abnormal piece (BraTS-GLI-00001-000, no segmentation here). Each variant goes through
``run_t1flair`` (default weights, 4 steps, 1 thread) and is compared voxel by voxel with the run on the unmodified pair:
enhancement (> 0) and ``enhancement_probability`` in the rim, ``anomaly`` in the cavity against the original run's
tumour mean, ``tumor_probability``, the BBB call and the identifier's own p, the warnings and ``report["post_operative"]``.
Runs are kept in ``--out/runs.json`` (a rerun skips those already there unless ``--again``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BRATS = REPO.parent / "shared" / "data" / "brats"
CASES = {
    "TCGA-FG-6692": ("TCGA-FG-6692_t1_bet", "TCGA-FG-6692_fla_bet", "TCGA-FG-6692_seg_fusion", "TCGA-FG-6692_t1c_bet"),
    "TCGA-DU-7294": ("TCGA-DU-7294_t1_bet", "TCGA-DU-7294_fla_bet", "TCGA-DU-7294_seg_fusion", "TCGA-DU-7294_t1c_bet"),
    "BraTS-GLI-00001-000": ("BraTS-GLI-00001-000-t1n", "BraTS-GLI-00001-000-t2f", None, "BraTS-GLI-00001-000-t1c"),
}
# variant -> (place, cavity radius mm (0: none), rim: "shell" | "ball" | None, rim/ball size mm)
VARIANTS = {
    "original": None,
    "cavity_tumour_r10": ("tumour", 10.0, None, 0.0),
    "cavity_rim_tumour_r10": ("tumour", 10.0, "shell", 2.0),
    "cavity_rim_tumour_r6": ("tumour", 6.0, "shell", 2.0),
    "cavity_rim_beside_r6": ("beside", 6.0, "shell", 2.0),
    "haematoma_beside_r5": ("beside", 0.0, "ball", 5.0),
    "cavity_normal_r10": ("normal", 10.0, None, 0.0),
    "cavity_rim_normal_r10": ("normal", 10.0, "shell", 2.0),
}


def load_case(name):
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.tumor_roi import flair_abnormality

    t1n, fln, segn, _ = CASES[name]
    t1 = read_volume(BRATS / name / f"{t1n}.nii.gz")
    flair = read_volume(BRATS / name / f"{fln}.nii.gz")
    t1d, fld = np.asarray(t1.data, np.float32), np.asarray(flair.data, np.float32)
    brain = (t1d > 0) & (fld > 0)
    if segn:
        tumour = np.asarray(read_volume(BRATS / name / f"{segn}.nii.gz").data) > 0
    else:
        abnormal = flair_abnormality(fld, brain, float(np.prod(t1.voxel_sizes[:3]) / 1000))
        labels, n = ndimage.label(abnormal)
        tumour = labels == (1 + int(np.argmax(np.bincount(labels.ravel())[1:])))
    return t1, flair, t1d, fld, brain, tumour & brain


def real_enhancement_level(name, t1d, brain):
    """Median of the case's REAL T1Gd (normalised like the synthetic one, 0-255) where it enhances (real T1Gd - T1 >
    30 units, the validation's definition): how bright enhancement looks on this case."""
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.normalisation import normalise_0_255

    t1c = np.asarray(read_volume(BRATS / name / f"{CASES[name][3]}.nii.gz").data, np.float32)
    real, plain = normalise_0_255(t1c, brain, "t1gd"), normalise_0_255(t1d, brain, "t1")
    enhancing = brain & (real - plain > 30)
    return {"real_t1gd_enhancing_median": float(np.median(real[enhancing])), "enhancing_ml": float(enhancing.sum() / 1000)}


def tissue_levels(t1d, fld, brain, tumour):
    """The insertion intensities from the case's own tissue (module docstring)."""
    from BBBAnomalyLib.structural.postop import tissue_classes

    away = brain & ~ndimage.binary_dilation(tumour, iterations=3)
    values = t1d[away]
    step = max(1, values.size // 200_000)
    _, labels = tissue_classes(values[::step])
    t1_s, fl_s = values[::step], fld[away][::step]
    white = t1_s[labels == 2]
    residual_t1 = (t1d - ndimage.median_filter(t1d, 3))
    residual_fl = (fld - ndimage.median_filter(fld, 3))
    wm_mask = away & (t1d >= np.percentile(white, 25)) & (t1d <= np.percentile(white, 75))
    mad = lambda r: float(1.4826 * np.median(np.abs(r[wm_mask] - np.median(r[wm_mask]))))
    return {"csf_t1": float(np.median(t1_s[labels == 0])), "csf_flair": float(np.median(fl_s[labels == 0])),
            "blood_t1": float(np.percentile(white, 99)), "blood_flair": float(np.percentile(fld[brain], 99)),
            "wm_t1_median": float(np.median(white)), "noise_t1": mad(residual_t1), "noise_flair": mad(residual_fl)}


def _centre(tumour, brain, affine, place, radius, voxel_mm):
    """Voxel index of the insertion's centre."""
    depth = ndimage.distance_transform_edt(brain, sampling=voxel_mm)
    com = np.array(ndimage.center_of_mass(tumour))
    if place == "tumour":
        inside = np.argwhere(tumour)
        return tuple(inside[np.argmin(((inside - com) ** 2).sum(1))])
    if place == "beside":
        away = ndimage.distance_transform_edt(~tumour, sampling=voxel_mm)
        ok = (np.abs(away - (radius + 3.0)) <= 0.75) & (depth > radius + 6.0)
        cand = np.argwhere(ok)
        return tuple(cand[np.argmin(((cand - com) ** 2).sum(1))])
    # normal: the mirror of the tumour's centre across the brain's left-right middle (array axis nearest RAS x)
    axis = int(np.argmax(np.abs(np.asarray(affine)[0, :3])))
    coords = np.argwhere(brain)
    middle = 0.5 * (coords[:, axis].min() + coords[:, axis].max())
    target = com.copy()
    target[axis] = 2 * middle - com[axis]
    far = ndimage.distance_transform_edt(~tumour, sampling=voxel_mm)
    ok = (depth > radius + 6.0) & (far > radius + 15.0)
    cand = np.argwhere(ok)
    return tuple(cand[np.argmin(((cand - target) ** 2).sum(1))])


def insert(t1d, fld, brain, tumour, affine, voxel_mm, levels, spec, seed=0):
    """(t1, flair, cavity mask, rim mask): the variant's images and where the insertion is."""
    place, radius, rim, rim_mm = spec
    size = radius if radius > 0 else rim_mm
    c = _centre(tumour, brain, affine, place, size + (rim_mm if rim == "shell" else 0.0), voxel_mm)
    grid = np.indices(brain.shape, dtype=np.float32)
    dist = np.sqrt(sum(((grid[i] - c[i]) * voxel_mm[i]) ** 2 for i in range(3)))
    del grid
    t1o, flo = t1d.copy(), fld.copy()
    rng = np.random.default_rng(seed)

    def paint(weight, t1_level, fl_level):
        w = np.clip(weight, 0.0, 1.0) * brain
        noise_t1 = rng.normal(0, levels["noise_t1"], brain.shape).astype(np.float32)
        noise_fl = rng.normal(0, levels["noise_flair"], brain.shape).astype(np.float32)
        t1o[:] = (1 - w) * t1o + w * (t1_level + noise_t1)
        flo[:] = (1 - w) * flo + w * (fl_level + noise_fl)

    cavity = np.zeros(brain.shape, bool)
    rim_mask = np.zeros(brain.shape, bool)
    if rim == "shell":
        outer = radius + rim_mm
        paint(outer + 0.5 - dist, levels["blood_t1"], levels["blood_flair"])  # a ball of blood, then the fluid inside
        rim_mask = (dist <= outer) & (dist > radius + 0.5) & brain
    elif rim == "ball":
        paint(rim_mm + 0.5 - dist, levels["blood_t1"], levels["blood_flair"])
        rim_mask = (dist <= rim_mm) & brain
    if radius > 0:
        paint(radius + 0.5 - dist, levels["csf_t1"], levels["csf_flair"])
        cavity = (dist <= radius - 0.5) & brain
    np.clip(t1o, 0, None, out=t1o)
    np.clip(flo, 0, None, out=flo)
    t1o[~brain] = 0
    flo[~brain] = 0
    return t1o, flo, cavity, rim_mask, [int(v) for v in c]


def run_one(t1, flair_vol, t1d, fld, brain):
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair

    params = T1FlairParameters(steps=4, threads=1)
    return run_t1flair(Volume(t1d, t1.affine), Volume(fld, flair_vol.affine), params)


def _mean(values, mask):
    return float(values[mask].mean()) if mask.any() else None


def measure(result, base, cavity, rim, tumour, brain):
    """The variant's numbers; ``base`` the unmodified run's maps (None for the original itself)."""
    maps = {k: np.asarray(result.maps[k].data) for k in ("enhancement", "enhancement_probability", "anomaly",
                                                         "tumor_probability", "synthetic_t1gd")}
    st = result.report["bbb_status"]
    row = {"call": st["call"], "p": st["probability"], "identifier_p": st.get("identifier_probability"),
           "reasons": st["reasons"], "roi_ml": st.get("tumor_roi_ml"), "roi_plausible": st.get("roi_plausible"),
           "enhancement_ml": result.report["summary"]["enhancement_ml"],
           "warnings": result.report["warnings"], "post_operative": result.report["post_operative"],
           "anomaly_tumour_mean": _mean(maps["anomaly"], tumour & brain),
           "anomaly_brain_mean": _mean(maps["anomaly"], brain & ~tumour)}
    for name, mask in (("rim", rim), ("cavity", cavity)):
        if not mask.any():
            continue
        r = {"ml": float(mask.sum() / 1000.0),
             "enhancement_fires_fraction": float((maps["enhancement"][mask] > 0).mean()),
             "enhancement_mean": _mean(maps["enhancement"], mask),
             "enhancement_ge6_fraction": float((maps["enhancement"][mask] >= 6.0).mean()),
             "synthetic_t1gd_mean": _mean(maps["synthetic_t1gd"], mask),
             "enhancement_probability_mean": _mean(maps["enhancement_probability"], mask),
             "anomaly_mean": _mean(maps["anomaly"], mask),
             "tumor_probability_mean": _mean(maps["tumor_probability"], mask)}
        if base is not None:
            r["base_enhancement_fires_fraction"] = float((base["enhancement"][mask] > 0).mean())
            r["new_enhancement_fraction"] = float(((maps["enhancement"][mask] > 0) & ~(base["enhancement"][mask] > 0)).mean())
            r["base_enhancement_probability_mean"] = _mean(base["enhancement_probability"], mask)
            r["base_synthetic_t1gd_mean"] = _mean(base["synthetic_t1gd"], mask)
            r["base_anomaly_mean"] = _mean(base["anomaly"], mask)
            r["base_tumor_probability_mean"] = _mean(base["tumor_probability"], mask)
        row[name] = r
    return row, maps


def audit(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "runs.json"
    runs = json.loads(store.read_text()) if store.exists() else {}
    for name in args.cases:
        t1, flair, t1d, fld, brain, tumour = load_case(name)
        voxel_mm = np.asarray(t1.voxel_sizes[:3], np.float64)
        levels = tissue_levels(t1d, fld, brain, tumour)
        levels.update(real_enhancement_level(name, t1d, brain))
        base_maps = None
        for variant in ["original"] + [v for v in args.variants if v != "original"]:
            key = f"{name}/{variant}"
            spec = VARIANTS[variant]
            if spec is None:
                t1v, flv, cavity, rim, centre = t1d, fld, np.zeros_like(brain), np.zeros_like(brain), None
            else:
                t1v, flv, cavity, rim, centre = insert(t1d, fld, brain, tumour, t1.affine, voxel_mm, levels, spec)
            if key in runs and not args.again and (variant != "original" or base_maps is not None):
                continue
            start = time.time()
            result = run_one(t1, flair, t1v, flv, brain)
            row, maps = measure(result, base_maps, cavity, rim, tumour, brain)
            if variant == "original":
                base_maps = maps
            row.update(levels=levels, centre=centre, seconds=time.time() - start)
            runs[key] = row
            store.write_text(json.dumps(runs, indent=1, default=float))
            print(f"{key}: {row['call']} p {row['p']:.2f}, enhancement {row['enhancement_ml']:.2f} ml, "
                  f"post-op warned {row['post_operative']['warned']} ({row['seconds']:.0f} s)", file=sys.stderr)
    table(runs, out)


def table(runs, out):
    lines = ["| case / variant | rim: enh > 0 / >= 6 (base > 0) | rim p(enh) base->now | rim synth. T1Gd base->now "
             "(real enhancing) | cavity anomaly / tumour mean | cavity tumour-prob base->now | BBB call (p; own p) | "
             "ROI ml | T1-bright ml / on enh | cavity ml | warned |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        rim, cav, po = r.get("rim"), r.get("cavity"), r["post_operative"]
        f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
        rim_s = (f"{f(rim['enhancement_fires_fraction'])} / {f(rim['enhancement_ge6_fraction'])} "
                 f"({f(rim.get('base_enhancement_fires_fraction'))})") if rim else "-"
        rimp = f"{f(rim.get('base_enhancement_probability_mean'))}->{f(rim['enhancement_probability_mean'])}" if rim else "-"
        rims = (f"{f(rim.get('base_synthetic_t1gd_mean'), 0)}->{f(rim['synthetic_t1gd_mean'], 0)} "
                f"({f(r['levels'].get('real_t1gd_enhancing_median'), 0)})") if rim else "-"
        case = key.split("/")[0]
        tumour_mean = runs.get(f"{case}/original", r)["anomaly_tumour_mean"]
        cava = f"{f(cav['anomaly_mean'], 3)} / {f(tumour_mean, 3)}" if cav else "-"
        cavt = f"{f(cav.get('base_tumor_probability_mean'))}->{f(cav['tumor_probability_mean'])}" if cav else "-"
        lines.append(f"| {key} | {rim_s} | {rimp} | {rims} | {cava} | {cavt} | {r['call']} ({f(r['p'])}; "
                     f"{f(r['identifier_p'])}) | {f(r['roi_ml'], 1)} | {f(po['t1_hyperintense_ml'])} / "
                     f"{f(po['enhancement_on_t1_hyperintense_ml'])} | {f(po['cavity_ml'], 1)} | {po['warned']} |")
    text = "\n".join(lines)
    (Path(out) / "table.md").write_text(text + "\n")
    print(text)


def phantoms(args):
    """The image-only post-operative findings on the held-apart phantoms (validate_t1flair.py phantoms' seeds)."""
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    from BBBAnomalyLib.structural.postop import find_post_operative

    rows = {}
    seeds = [(s, True) for s in range(*args.tumour_seeds)] + [(s, False) for s in range(*args.normal_seeds)]
    for seed, tumour in seeds:
        ph = make_structural_phantom(seed, tumor=tumour)
        f = find_post_operative(np.asarray(ph.t1.data, np.float32), np.asarray(ph.flair.data, np.float32),
                                np.asarray(ph.brain, bool), ph.t1.voxel_sizes[:3])
        rows[f"{seed}{'' if tumour else ' normal'}"] = {
            "t1_hyperintense_ml": f.t1_bright_ml, "cavity_ml": f.cavity_ml,
            "max_shell_fraction": max([c["shell_flair_abnormal_fraction"] for c in f.cavities], default=0.0)}
        print(seed, rows[f"{seed}{'' if tumour else ' normal'}"], file=sys.stderr)
    (Path(args.out) / f"phantoms_{args.tumour_seeds[0]}.json").write_text(json.dumps(rows, indent=1))
    fired = [k for k, v in rows.items() if v["t1_hyperintense_ml"] > 0 or v["cavity_ml"] > 0]
    print(f"held-apart phantoms: findings on {len(fired)} of {len(rows)}: {fired}")


UNUSUAL = ("thick3", "thick5", "oblique15", "zscore", "bias0.85-1.15", "bias0.7-1.3", "crop_top20", "t1c_as_t1")


def unusual(args):
    """The image-only findings on session 19's unusual-but-ordinary acquisitions of the unmodified real cases
    (scripts/t1flair_unusual_acquisitions.py's variants on the T1's grid): false alarms outside 1 mm BraTS space."""
    sys.path.insert(0, str(REPO / "scripts"))
    import t1flair_unusual_acquisitions as s19
    from BBBAnomalyLib.structural.postop import find_post_operative

    rows = {}
    for case in args.cases:
        arrays, affine = s19.load_case(case)
        for name in UNUSUAL:
            made = s19.VARIANTS[name](arrays, affine)
            t1, t1_affine, _ = made["t1"]
            flair = made["flair"][0]
            brain = (np.asarray(t1) != 0) & (np.asarray(flair) != 0)
            voxel = np.linalg.norm(np.asarray(t1_affine)[:3, :3], axis=0)
            f = find_post_operative(np.asarray(t1, np.float32), np.asarray(flair, np.float32), brain, voxel)
            rows[f"{case}/{name}"] = {"t1_hyperintense_ml": f.t1_bright_ml, "cavity_ml": f.cavity_ml,
                                      "max_shell_fraction": max([c["shell_flair_abnormal_fraction"] for c in f.cavities],
                                                                default=0.0)}
            print(f"{case}/{name}", rows[f"{case}/{name}"], file=sys.stderr)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "unusual.json").write_text(json.dumps(rows, indent=1))
    fired = [k for k, v in rows.items() if v["t1_hyperintense_ml"] > 0 or v["cavity_ml"] > 0]
    print(f"unusual acquisitions of the unmodified cases: findings on {len(fired)} of {len(rows)}: {fired}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--again", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--phantoms", action="store_true")
    ap.add_argument("--unusual", action="store_true", help="the findings on session 19's acquisitions of the cases")
    ap.add_argument("--tumour-seeds", type=int, nargs=2, default=[5000, 5012], metavar=("FIRST", "STOP"),
                    help="tumour phantoms for --phantoms (default: validate_t1flair.py phantoms' held-apart seeds)")
    ap.add_argument("--normal-seeds", type=int, nargs=2, default=[7000, 7006], metavar=("FIRST", "STOP"))
    args = ap.parse_args()
    if args.table:
        table(json.loads((Path(args.out) / "runs.json").read_text()), args.out)
    elif args.unusual:
        unusual(args)
    elif args.phantoms:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        phantoms(args)
    else:
        audit(args)


if __name__ == "__main__":
    main()
