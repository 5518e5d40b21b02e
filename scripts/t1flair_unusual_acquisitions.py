"""Outside-in audit of `run_t1flair` on legitimate but unusual acquisitions of the real cases.

  python scripts/t1flair_unusual_acquisitions.py --out /tmp/t1f_audit                     # every case and variant
  python scripts/t1flair_unusual_acquisitions.py --out /tmp/t1f_audit --cases TCGA-FG-6692 --variants original sagittal
  python scripts/t1flair_unusual_acquisitions.py --out /tmp/t1f_audit --table              # the table from the stored runs

Each variant of a real case (../shared/data/brats; never written there) is written as NIfTI files into
``--out/<case>/<variant>/``, read back with ``read_volume`` (the CLI's reader) and run through ``run_t1flair`` with
the default weights (4 steps, 1 torch thread). Its maps are brought back onto the ORIGINAL 1 mm grid (trilinear,
through both affines) and compared there with the run on the original pair, on the voxels that are brain in both
runs:

* ``r`` = correlation with the original run's map (synthetic T1Gd, enhancement_probability, anomaly);
* enhancing-voxel AUC of ``enhancement_probability`` (real T1Gd - T1 > 30 units on the seed's 0-255 scale, the
  validation's definition), tumour AUC of ``anomaly`` (segmentation > 0 against the rest of the brain), Dice of
  ``tumor_probability`` >= 0.5 with the segmentation;
* the BBB call (p; the identifier's own p), the tumour ROI, and every warning the report gives.

Results are kept per run in ``--out/runs.json`` (a rerun skips the runs already there unless ``--again``), and the
markdown table is printed (and written to ``--out/table.md``).
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
    "TCGA-FG-6692": ("TCGA-FG-6692_t1_bet", "TCGA-FG-6692_fla_bet", "TCGA-FG-6692_t1c_bet", "TCGA-FG-6692_seg_fusion"),
    "TCGA-DU-7294": ("TCGA-DU-7294_t1_bet", "TCGA-DU-7294_fla_bet", "TCGA-DU-7294_t1c_bet", "TCGA-DU-7294_seg_fusion"),
    "BraTS-GLI-00001-000": ("BraTS-GLI-00001-000-t1n", "BraTS-GLI-00001-000-t2f", "BraTS-GLI-00001-000-t1c", None),
}


# --- variants -------------------------------------------------------------------------------------------------
# A variant takes the case's arrays {t1, flair, t1c, seg} (float32; seg uint8) and their common affine and returns
# {role: (array, affine, storage)} for t1 and flair (storage: numpy dtype name, optionally with a scl_slope).

def _same(arrays, affine, **storage):
    return {k: (arrays[k], affine, storage.get(k, "float32")) for k in ("t1", "flair")}


def _resampled(data, affine, matrix, shape, order=1):
    """``data`` on a new grid whose voxel index i' sits at old index ``matrix @ [i', 1]``: (array, new affine)."""
    out = ndimage.affine_transform(np.asarray(data, np.float32), matrix[:3, :3], matrix[:3, 3], output_shape=shape,
                                   order=order, mode="constant", cval=0.0)
    return out, affine @ matrix


def _thick(data, affine, factor, axis=2):
    """Slices ``factor`` times thicker along ``axis``: the mean of each block of ``factor`` slices (a slab profile),
    the voxel centre at the block's centre."""
    n = data.shape[axis] // factor
    cut = np.take(np.asarray(data, np.float32), np.arange(n * factor), axis=axis)
    shape = list(cut.shape)
    shape[axis:axis + 1] = [n, factor]
    out = cut.reshape(shape).mean(axis=axis + 1)
    m = np.eye(4)
    m[axis, axis] = factor
    m[axis, 3] = 0.5 * (factor - 1)
    return out.astype(np.float32), affine @ m


def v_thick(factor):
    def make(a, aff):
        return {k: (*_thick(a[k], aff, factor), "float32") for k in ("t1", "flair")}
    return make


def v_flair_thick(factor):
    def make(a, aff):
        return {"t1": (a["t1"], aff, "float32"), "flair": (*_thick(a["flair"], aff, factor), "float32")}
    return make


def v_inplane(pixel):
    def make(a, aff):
        m = np.diag([pixel, pixel, 1.0, 1.0])
        m[:2, 3] = -0.5 + 0.5 * pixel  # the same field of view, voxel edges aligned
        shape = tuple(int(round(n / pixel)) for n in a["t1"].shape[:2]) + (a["t1"].shape[2],)
        return {k: (*_resampled(a[k], aff, m, shape), "float32") for k in ("t1", "flair")}
    return make


def _permuted(data, affine, order, flips=()):
    """The same voxels stored with the axes in ``order`` and the axes ``flips`` (of the new array) reversed."""
    out = np.transpose(data, order)
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for new, old in enumerate(order):
        m[old, new] = 1.0
    for ax in flips:
        out = np.flip(out, ax)
        flip = np.eye(4)
        flip[ax, ax] = -1
        flip[ax, 3] = out.shape[ax] - 1
        m = m @ flip
    return np.ascontiguousarray(out), affine @ m


def v_sagittal(a, aff):
    # BraTS arrays are (L-R, A-P, S-I): sagittal storage has L-R as the slice (third) axis, rows top to bottom
    return {k: (*_permuted(a[k], aff, (1, 2, 0), flips=(1,)), "float32") for k in ("t1", "flair")}


def v_coronal(a, aff):
    return {k: (*_permuted(a[k], aff, (0, 2, 1), flips=(1,)), "float32") for k in ("t1", "flair")}


def v_oblique(deg_pitch, deg_yaw=0.0):
    def make(a, aff):
        p, y = np.deg2rad(deg_pitch), np.deg2rad(deg_yaw)
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
        r = rx @ rz
        shape = a["t1"].shape
        centre = (np.array(shape) - 1) / 2.0
        pad = 16
        new_shape = tuple(int(n + 2 * pad) for n in shape)
        new_centre = (np.array(new_shape) - 1) / 2.0
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = centre - r @ new_centre
        return {k: (*_resampled(a[k], aff, m, new_shape), "float32") for k in ("t1", "flair")}
    return make


def v_scale(factor, dtype="float32"):
    def make(a, aff):
        return {k: (a[k] * np.float32(factor), aff, dtype) for k in ("t1", "flair")}
    return make


def v_slope(a, aff):
    # int16 on disk using its whole range, with the scl_slope (max |intensity| / 32000) that scales it back
    return {k: (a[k], aff, ("int16", float(np.abs(a[k]).max()) / 32000.0)) for k in ("t1", "flair")}


def v_uint16(a, aff):
    return {k: (np.clip(a[k], 0, None), aff, "uint16") for k in ("t1", "flair")}


def v_offset(value):
    def make(a, aff):  # an offset on the head (the background of the skull-stripped image stays 0)
        return {k: (np.where(a[k] != 0, a[k] + np.float32(value), 0).astype(np.float32), aff, "float32")
                for k in ("t1", "flair")}
    return make


def v_zscore(a, aff):
    """Each image z-scored over its nonzero voxels, background 0 (nnU-Net / BraTS-Toolkit style preprocessing)."""
    out = {}
    for k in ("t1", "flair"):
        d = a[k]
        nz = d != 0
        z = np.zeros_like(d)
        z[nz] = (d[nz] - d[nz].mean()) / d[nz].std()
        out[k] = (z, aff, "float32")
    return out


def v_bias(low, high):
    """An independent smooth multiplicative field from ``low`` to ``high`` on each image (no bias correction)."""
    def make(a, aff):
        out = {}
        for k, seed in (("t1", 1), ("flair", 2)):
            rng = np.random.default_rng(seed)
            coarse = rng.standard_normal((4, 4, 4))
            field = ndimage.zoom(coarse, np.array(a[k].shape) / 4.0, order=3)
            field = ndimage.gaussian_filter(field, 20)
            field = low + (high - low) * (field - field.min()) / (field.max() - field.min())
            out[k] = ((a[k] * field).astype(np.float32), aff, "float32")
        return out
    return make


def v_crop_top(fraction):
    def make(a, aff):
        brain = (a["t1"] != 0).any(axis=(0, 1))
        z = np.flatnonzero(brain)
        top = int(z.max() - fraction * (z.max() - z.min() + 1))
        return {k: (np.ascontiguousarray(a[k][:, :, :top + 1]), aff, "float32") for k in ("t1", "flair")}
    return make


def v_pad(margin):
    def make(a, aff):
        m = np.eye(4)
        m[:3, 3] = -margin
        return {k: (np.pad(a[k], margin), aff @ m, "float32") for k in ("t1", "flair")}
    return make


def v_swapped(a, aff):
    return {"t1": (a["flair"], aff, "float32"), "flair": (a["t1"], aff, "float32")}


def v_t1c_as_t1(a, aff):
    return {"t1": (a["t1c"], aff, "float32"), "flair": (a["flair"], aff, "float32")}


VARIANTS = {
    "original": lambda a, aff: _same(a, aff, t1="int16", flair="int16"),
    "thick3": v_thick(3),
    "thick5": v_thick(5),
    "flair5_t1_1": v_flair_thick(5),
    "inplane0.5": v_inplane(0.5),
    "sagittal": v_sagittal,
    "coronal": v_coronal,
    "oblique15": v_oblique(15.0),
    "oblique20_10": v_oblique(20.0, 10.0),
    "scale10": v_scale(10.0),
    "scale0.01": v_scale(0.01),
    "float64": v_scale(1.0, "float64"),
    "int16_slope": v_slope,
    "uint16": v_uint16,
    "offset+1000": v_offset(1000.0),
    "zscore": v_zscore,
    "bias0.85-1.15": v_bias(0.85, 1.15),
    "bias0.7-1.3": v_bias(0.7, 1.3),
    "crop_top10": v_crop_top(0.1),
    "crop_top20": v_crop_top(0.2),
    "pad40": v_pad(40),
    "swapped": v_swapped,
    "t1c_as_t1": v_t1c_as_t1,
}


def write(path: Path, data, affine, storage):
    import nibabel as nib

    dtype, slope = (storage, None) if isinstance(storage, str) else storage
    if slope is None:
        img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    else:
        raw = np.round(np.asarray(data, np.float64) / slope).astype(dtype)
        img = nib.Nifti1Image(raw, affine)
        img.header.set_slope_inter(slope, 0.0)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, str(path))


# --- measuring --------------------------------------------------------------------------------------------------

def load_case(case):
    import nibabel as nib

    names = CASES[case]
    folder = BRATS / case
    arrays, affine = {}, None
    for role, name in zip(("t1", "flair", "t1c", "seg"), names):
        if name is None:
            continue
        img = nib.load(str(folder / f"{name}.nii.gz"))
        arrays[role] = np.asarray(img.dataobj, np.uint8 if role == "seg" else np.float32)
        affine = img.affine if affine is None else affine
    return arrays, np.asarray(affine, np.float64)


def on_original_grid(volume, affine0, shape0, order=1):
    """A result map brought onto the original grid (0 outside the variant's field of view)."""
    to_variant = np.linalg.solve(volume.affine, affine0)
    return ndimage.affine_transform(np.asarray(volume.data, np.float32), to_variant[:3, :3], to_variant[:3, 3],
                                    output_shape=shape0, order=order, mode="constant", cval=0.0)


def auc(scores, labels, limit=400_000, seed=0):
    from BBBAnomalyLib.metrics import roc_auc

    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return None
    if scores.size > limit:
        pick = np.random.default_rng(seed).choice(scores.size, limit, replace=False)
        scores, labels = scores[pick], labels[pick]
        if labels.all() or not labels.any():
            return None
    return float(roc_auc(labels.astype(int), scores))


def run_variant(case, name, out: Path, arrays, affine0):
    import torch

    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair

    torch.set_num_threads(1)
    folder = out / case / name
    folder.mkdir(parents=True, exist_ok=True)
    files = VARIANTS[name](arrays, affine0)
    for role, (data, aff, storage) in files.items():
        write(folder / f"{role}.nii.gz", data, aff, storage)
    t1, flair = read_volume(folder / "t1.nii.gz"), read_volume(folder / "flair.nii.gz")
    started = time.time()
    try:
        res = run_t1flair(t1, flair, T1FlairParameters(steps=4, device="cpu", threads=1))
    except Exception as e:  # a refusal (InputError) or a crash: the line is the result
        return {"case": case, "variant": name, "outcome": "refused" if type(e).__name__ == "InputError" else "error",
                "line": f"{type(e).__name__}: {e}", "seconds": time.time() - started}
    seconds = time.time() - started
    shape0 = arrays["t1"].shape
    maps = {k: on_original_grid(res.maps[k], affine0, shape0) for k in
            ("synthetic_t1gd", "enhancement", "enhancement_probability", "anomaly", "tumor_probability")}
    from BBBAnomalyLib.core.volume import Volume

    maps["brain"] = on_original_grid(Volume(res.brain_mask.astype(np.float32), res.maps["anomaly"].affine), affine0,
                                     shape0, order=0) > 0.5
    np.savez_compressed(folder / "maps_on_original.npz", **{k: v.astype(np.float32) for k, v in maps.items()})
    rep = res.report
    bbb = rep["bbb_status"]
    checks = [c for c in rep["applicability"]["checks"] if c["status"] != "ok"]
    other = [w for w in rep["warnings"] if not w.startswith("BBB status INDETERMINATE")
             and not w.startswith("brain mask computed automatically (nonzero")
             and w not in [c["message"] for c in checks]]
    return {"case": case, "variant": name, "outcome": "warned" if (checks or other) else "silent",
            "seconds": seconds, "t1_shape": rep["input"]["t1_shape"], "voxel_mm": rep["input"]["voxel_mm"],
            "checks_not_ok": [c["name"] for c in checks], "other_warnings": other,
            "all_warnings": rep["warnings"],
            "applicability_values": {c["name"]: c["value"] for c in rep["applicability"]["checks"]},
            "call": bbb["call"], "p": bbb["probability"], "identifier_p": bbb.get("identifier_probability"),
            "roi_ml": bbb["tumor_roi_ml"], "roi_weight": bbb["roi_weight"], "roi_plausible": bbb["roi_plausible"],
            "flair_abnormality_ml": bbb["flair_abnormality_ml"], "segmentation_confidence": bbb["segmentation_confidence"],
            "brain_ml": float(res.brain_mask.sum() * np.prod(t1.voxel_sizes[:3]) / 1000.0),
            "enhancement_ml": rep["summary"]["enhancement_ml"], "anomaly_z": rep["anomaly"]["patient_score_z"]}


def compare(row, out: Path, arrays):
    """Map-level comparison with the original run, on the original grid."""
    from BBBAnomalyLib.structural.normalisation import normalise_0_255

    case = row["case"]
    here = out / case / row["variant"] / "maps_on_original.npz"
    base = out / case / "original" / "maps_on_original.npz"
    if not here.exists() or not base.exists():
        return row
    m, b = dict(np.load(here)), dict(np.load(base))
    m["brain"], b["brain"] = m["brain"] > 0.5, b["brain"] > 0.5
    brain0 = b["brain"]
    common = brain0 & m["brain"]
    row["brain_overlap"] = float(common.sum() / brain0.sum())
    for k in ("synthetic_t1gd", "enhancement_probability", "anomaly"):
        row[f"r_{k}"] = float(np.corrcoef(m[k][common], b[k][common])[0, 1])
    row["mean_abs_diff_synthetic"] = float(np.mean(np.abs(m["synthetic_t1gd"][common] - b["synthetic_t1gd"][common])))
    t1n = normalise_0_255(arrays["t1"], brain0, "t1")
    t1c = normalise_0_255(arrays["t1c"], brain0, "t1gd")
    enhancing = (t1c - t1n > 30)[common]
    row["enhancing_auc"] = auc(m["enhancement_probability"][common], enhancing)
    row["added_mean"] = float(m["enhancement"][common].mean())
    if "seg" in arrays:
        tumour = (arrays["seg"] > 0)[common]
        row["anomaly_tumour_auc"] = auc(m["anomaly"][common], tumour)
        inside = m["anomaly"][common][tumour].mean()
        row["anomaly_tumour_to_rest"] = float(inside / max(m["anomaly"][common][~tumour].mean(), 1e-9))
        seg = m["tumor_probability"] >= 0.5
        ref = arrays["seg"] > 0
        row["tumour_dice"] = float(2 * (seg & ref & common).sum() / max((seg & common).sum() + (ref & common).sum(), 1))
    return row


def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(rows):
    lines = ["| case | variant | outcome | warnings (checks not ok / other) | call (p; identifier p) | ROI ml (FLAIR ml, w) "
             "| r synth / p_enh / anomaly | enh. AUC | anomaly AUC | tumour Dice | added mean | brain ml | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["outcome"] in ("refused", "error"):
            lines.append(f"| {r['case']} | {r['variant']} | **{r['outcome']}** | {r['line'][:160]} | | | | | | | | | |")
            continue
        warn = ", ".join(r["checks_not_ok"]) or "—"
        if r["other_warnings"]:
            warn += "; " + "; ".join(w[:70] for w in r["other_warnings"])
        lines.append(
            f"| {r['case']} | {r['variant']} | {r['outcome']} | {warn} | {r['call']} ({fmt(r['p'])}; {fmt(r['identifier_p'])}) "
            f"| {fmt(r['roi_ml'], 1)} ({fmt(r['flair_abnormality_ml'], 1)}, {fmt(r['roi_weight'])}) "
            f"| {fmt(r.get('r_synthetic_t1gd'), 3)} / {fmt(r.get('r_enhancement_probability'), 3)} / "
            f"{fmt(r.get('r_anomaly'), 3)} | {fmt(r.get('enhancing_auc'), 3)} | {fmt(r.get('anomaly_tumour_auc'), 3)} "
            f"| {fmt(r.get('tumour_dice'))} | {fmt(r.get('added_mean'), 3)} | {fmt(r['brain_ml'], 0)} | {fmt(r['seconds'], 0)} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="working folder (variants, maps, runs.json); not in ../shared")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--again", action="store_true", help="rerun runs already in runs.json")
    ap.add_argument("--table", action="store_true", help="only print the table of the stored runs")
    args = ap.parse_args(argv)
    if BRATS.resolve() in args.out.resolve().parents:
        ap.error("write the variants elsewhere than ../shared")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "runs.json"
    runs = json.loads(store.read_text()) if store.exists() else {}
    if not args.table:
        for case in args.cases:
            arrays, affine0 = load_case(case)
            order = ["original"] + [v for v in args.variants if v != "original"]
            for name in order:
                key = f"{case}/{name}"
                if key in runs and not args.again:
                    continue
                print(f"{key} ...", flush=True)
                row = run_variant(case, name, args.out, arrays, affine0)
                runs[key] = compare(row, args.out, arrays)
                store.write_text(json.dumps(runs, indent=1))
            for name in args.variants:  # the original may have been rerun: compare again
                key = f"{case}/{name}"
                if key in runs and runs[key]["outcome"] not in ("refused", "error"):
                    runs[key] = compare(runs[key], args.out, arrays)
            store.write_text(json.dumps(runs, indent=1))
    rows = [runs[k] for k in sorted(runs, key=lambda k: (k.split("/")[0], list(VARIANTS).index(k.split("/")[1])
                                                         if k.split("/")[1] in VARIANTS else 99))]
    text = table(rows)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
