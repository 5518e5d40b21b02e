#!/usr/bin/env python
"""PHAE's S0-guided pooling (issue 14, round 8): what it buys, and what it costs where its assumption fails.

The pooling (BBBAnomalyLib/perfusion/guided_pooling.py) averages a voxel's curve with the neighbours whose
pre-contrast signal S0 matches within noise. It assumes that neighbours of equal S0 have equal perfusion. Three
sets, every one through ``run_dsc`` as ``bbbanomaly dsc`` runs (kH = rho = 1, brain, AIF, NAWM and tumour masks):

  own        the project's DSC reference phantom at SNR 100 / 50 / 35 / 20 (Δt 1.5 s, 90 s): where the assumption
             holds (S0 and perfusion both follow the tissue mixture).
  checker    the assumption broken on purpose: grey and white matter flow alternates between x1.5 and x0.67 of the
             default in a 3D checkerboard of 1- or 3-voxel cells (two phantoms spliced, same noise), S0 unchanged.
             Reported: the ROI-mean bias over all GM, Lin's CCC, and the contrast kept: (mean CBF of high-flow GM /
             mean of low-flow GM) estimated over true (1 = kept, 0 = flattened to one value).
  texture    S0 made less informative: every voxel's signal scaled by an independent factor (log-normal, SD 10 %,
             as large as two thirds of the GM/WM S0 contrast, or SD 3 %), so that neighbours of different tissue
             can match.
             Also SD 5 % and 6 %: the level measured on real images (--real-texture).
  real texture  S0 scaled by a real T2's within-tissue texture (real_texture_factor; only with ../shared), spatially
             correlated as in the image.
  field      a smooth multiplicative field over the slab (coil shading: Gaussian-smoothed noise, sigma 20 mm,
             scaled to SD 10 %), which changes S0 slowly and should cost nothing.

Methods: oSVD (OI 0.095), PHAE per voxel (--guided-pooling off), PHAE with --guided-pooling on (the default, auto,
pools only below a baseline tSNR of 45: here at SNR 35 and 20), and, to show how
much of the gain is the pooling rather than the network, oSVD run on the same pooled curves (script-level: the
CLI offers the pooling to PHAE only).

    python scripts/validate_guided_pooling.py --out /tmp/gp.json      # ~3 min on one thread
    python scripts/validate_guided_pooling.py --table /tmp/gp.json
    python scripts/validate_guided_pooling.py --real-texture                # the real cases' texture level
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from BBBAnomalyLib import metrics  # noqa: E402
from BBBAnomalyLib.core.volume import Volume  # noqa: E402
from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.phantoms.dsc import default_tissues, make_dsc_phantom  # noqa: E402

METHODS = ("oSVD 0.095", "PHAE per voxel", "PHAE (guided pooling)", "oSVD on the pooled curves")
HIGH, LOW = 1.5, 1.0 / 1.5


def settings() -> list[dict]:
    out = [dict(set="own", snr=snr) for snr in (100, 50, 35, 20)]
    out += [dict(set="checker", snr=snr, cell=cell) for snr in (50, 20) for cell in (1, 3)]
    out += [dict(set="texture", snr=snr) for snr in (50, 20)]
    out += [dict(set="texture", snr=snr, sd=0.03) for snr in (50, 20)]
    # the real images' level (--real-texture: a structural T2's local CoV in white matter, 4.6-6.2 % with its noise)
    out += [dict(set="texture", snr=snr, sd=sd) for sd in (0.05, 0.06) for snr in (50, 20)]
    out += [dict(set="field", snr=snr) for snr in (50, 20)]
    if real_texture_factor((2, 2, 2)) is not None:  # with ../shared: a real T2's texture (real_texture_factor)
        out += [dict(set="real texture", snr=snr) for snr in (50, 20)]
    return out


def real_texture_factor(shape, folder: Path = ROOT.parent / "shared" / "data" / "brats",
                        case: str = "BraTS-GLI-00001-000") -> np.ndarray | None:
    """An S0 factor with a real image's texture, for a phantom grid of ``shape`` (2 mm): the real case's T2 at 2 mm
    (means of 2x2x2 blocks) divided, voxel by voxel, by the local mean of its own tissue class (3 k-means classes
    of log T2 in the brain; normalised Gaussian smoothing within the class, sigma 2 voxels), in each class's interior
    (eroded by a voxel; 1 at the classes' boundaries). Tissue contrast and
    coil shading are divided out; what is left is the texture between neighbours of one tissue, spatially
    correlated as in the image, plus the image's own noise (~3 %, so an upper bound). A central block of ``shape``
    of the real brain, by array position (the anatomies are not registered: the factor carries no tissue contrast,
    so where it lands does not matter); 1 outside the real brain; clipped to 0.7-1.3. None without the data."""
    import nibabel as nib
    from scipy import ndimage
    from sklearn.cluster import KMeans

    names = {c: (t1, t2) for c, t1, t2 in REAL_CASES}
    t1_name, t2_name = names[case]
    if not (folder / case / t2_name).is_file():
        return None

    def down(a):
        s = [d // 2 * 2 for d in a.shape]
        return a[:s[0], :s[1], :s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))

    t1 = np.asarray(nib.load(folder / case / t1_name).dataobj, np.float64)
    t2 = down(np.asarray(nib.load(folder / case / t2_name).dataobj, np.float64))
    brain = ndimage.binary_erosion(down((t1 > 0).astype(float)) > 0.99, iterations=1) & (t2 > 0)
    log_t2 = np.log(t2[brain])[:, None]
    labels = KMeans(3, n_init=4, random_state=0).fit_predict(log_t2)
    ratio = np.ones_like(t2)
    for c in range(3):
        member = np.zeros_like(brain)
        member[brain] = labels == c
        mean = (ndimage.gaussian_filter(np.where(member, t2, 0.0), 2.0)
                / np.maximum(ndimage.gaussian_filter(member.astype(float), 2.0), 1e-6))
        # inside the class only (eroded): a partial-volume voxel at a boundary has an S0 between two tissues and, in a
        # real brain, a perfusion between them too, so its deviation is not texture (and would land on the wrong
        # tissue here, the anatomies not being registered)
        interior = ndimage.binary_erosion(member, iterations=1)
        ratio[interior] = t2[interior] / mean[interior]
    ratio = np.clip(ratio, 0.7, 1.3)
    # a central block of the requested shape (the slab's 12 slices around the brain's middle axial slice)
    centre = [int(np.mean(ix)) for ix in np.nonzero(brain)]
    out = np.ones(shape, np.float32)
    src, dst = [], []
    for n, c, size in zip(shape, centre, ratio.shape):
        lo = c - n // 2
        a, b = max(lo, 0), min(lo + n, size)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = ratio[tuple(src)]
    return out


def _scaled(factor: float) -> dict:
    t = default_tissues()
    return {name: {"cbf": t[name]["cbf"] * factor} for name in ("gm", "wm")}


def make(setting: dict):
    """(phantom, high-flow map or None) of one setting; seed 5, never used to choose anything."""
    common = dict(snr=setting["snr"], seed=5)
    if setting["set"] == "own":
        return make_dsc_phantom(**common), None
    if setting["set"] in ("texture", "field", "real texture"):
        ph = make_dsc_phantom(**common)
        rng = np.random.default_rng(11)
        if setting["set"] == "real texture":
            factor = real_texture_factor(ph.masks["brain"].shape)
        elif setting["set"] == "texture":
            factor = np.exp(rng.normal(0.0, setting.get("sd", 0.1), ph.masks["brain"].shape)).astype(np.float32)
        else:
            from scipy import ndimage

            field = ndimage.gaussian_filter(rng.standard_normal(ph.masks["brain"].shape),
                                            20.0 / np.asarray(ph.signal.voxel_sizes), mode="reflect")
            factor = np.exp(0.1 * field / field[ph.masks["brain"]].std()).astype(np.float32)
        factor[ph.masks["aif"]] = 1.0  # the arteries keep their signal (the AIF is not the question here)
        data = np.asarray(ph.signal.data) * factor[..., None]
        return dataclasses.replace(ph, signal=Volume(data, ph.signal.affine, ph.signal.times, ph.signal.acquisition)), None
    high_ph = make_dsc_phantom(**common, tissues=_scaled(HIGH))
    low_ph = make_dsc_phantom(**common, tissues=_scaled(LOW))
    grid = np.indices(high_ph.masks["brain"].shape) // setting["cell"]
    high = (grid.sum(axis=0) % 2) == 0
    data = np.where(high[..., None], high_ph.signal.data, low_ph.signal.data)
    truth = dict(high_ph.truth)
    truth["cbf"] = Volume(np.where(high, high_ph.truth["cbf"].data, low_ph.truth["cbf"].data), high_ph.truth["cbf"].affine)
    signal = Volume(data, high_ph.signal.affine, high_ph.signal.times, high_ph.signal.acquisition)
    return dataclasses.replace(high_ph, signal=signal, truth=truth), high


def _run(ph, **params):
    m = ph.masks
    return run_dsc(ph.signal, DSCParameters(kh=1.0, density=1.0, **params), aif_mask=m["aif"], brain_mask=m["brain"],
                   nawm_mask=m["nawm"], tumor_mask=m["tumor"], keep_curves=params.get("method") == "osvd")


def osvd_on_pooled_curves(ph, osvd_result) -> np.ndarray:
    """oSVD on the curves PHAE's pooling would give (same guide, same weights), as a CBF volume."""
    from BBBAnomalyLib.dsc.deconvolution import DeconvolutionModel
    from BBBAnomalyLib.perfusion.guided_pooling import GuidedPooling, baseline_guide

    brain = osvd_result.brain_mask
    baseline = osvd_result.extras["baseline"]
    s0, sd = baseline_guide(np.asarray(ph.signal.data)[brain], slice(baseline.first, baseline.stop))
    pooling = GuidedPooling(brain, s0, sd, ph.signal.voxel_sizes)
    curves = np.ascontiguousarray(osvd_result.delta_r2s.data[brain])
    pooled = np.concatenate([pooling.pool(curves, slice(s, min(s + 8192, len(curves))))[0]
                             for s in range(0, len(curves), 8192)])
    dt = float(osvd_result.times[1] - osvd_result.times[0])
    cbf = np.zeros(brain.shape, np.float32)
    cbf[brain] = 6000.0 * DeconvolutionModel(osvd_result.aif, dt, "osvd", oi_target=0.095).fit(pooled).cbf
    return cbf


def record(ph, cbf: np.ndarray, high) -> dict:
    m, truth = ph.masks, ph.truth["cbf"].data
    rec = {t: 100.0 * (metrics.ratio_of_means(cbf, truth, m[t] & ~m["aif"]) - 1.0) for t in ("gm", "wm", "enhancing")}
    rec["ccc"] = metrics.lin_ccc(cbf, truth, m["brain"] & ~m["aif"])
    if high is not None:
        gm = m["gm"] & ~m["aif"]
        est = cbf[gm & high].mean() / cbf[gm & ~high].mean()
        true = truth[gm & high].mean() / truth[gm & ~high].mean()
        rec["contrast_kept"] = float((est - 1.0) / (true - 1.0))
    return rec


def measure(log=print) -> list[dict]:
    rows = []
    for setting in settings():
        ph, high = make(setting)
        osvd = _run(ph, method="osvd", osvd_oi_target=0.095)
        maps = {METHODS[0]: osvd.maps["cbf"].data,
                METHODS[1]: _run(ph, method="phae", device="cpu", phae_guided_pooling=False).maps["cbf"].data,
                METHODS[2]: _run(ph, method="phae", device="cpu", phae_guided_pooling="on").maps["cbf"].data,
                METHODS[3]: osvd_on_pooled_curves(ph, osvd)}
        for method, cbf in maps.items():
            rows.append({**setting, "method": method, **record(ph, cbf, high)})
        log(f"done {setting}")
    return rows


def tables(rows: list[dict]) -> str:
    lines = ["| set | SNR | " + " | ".join(METHODS) + " |", "|" + "---|" * (len(METHODS) + 2)]
    keyed = {}
    for r in rows:
        keyed.setdefault((r["set"], r["snr"], r.get("cell"), r.get("sd")), {})[r["method"]] = r
    for (name, snr, cell, sd), cells in keyed.items():
        label = name + (f", {cell}-voxel cells" if cell else "") + (f", SD {100 * sd:g} %" if sd else "")

        def fmt(r):
            text = f"{r['gm']:+.0f} / {r['wm']:+.0f} / {r['enhancing']:+.0f} ({r['ccc']:.2f})"
            return text + (f", contrast {r['contrast_kept']:.2f}" if "contrast_kept" in r else "")
        lines.append(f"| {label} | {snr} | " + " | ".join(fmt(cells[m]) if m in cells else "" for m in METHODS) + " |")
    return ("CBF: ROI-mean bias % GM / WM / rim (Lin's CCC over the brain); checker: share of the true high/low GM "
            "flow contrast kept\n\n" + "\n".join(lines) + "\n")


#: the real cases of ../shared/data/brats: (folder, T1 file, T2 file)
REAL_CASES = (("BraTS-GLI-00001-000", "BraTS-GLI-00001-000-t1n.nii.gz", "BraTS-GLI-00001-000-t2w.nii.gz"),
              ("TCGA-DU-7294", "TCGA-DU-7294_t1_bet.nii.gz", "TCGA-DU-7294_t2_bet.nii.gz"),
              ("TCGA-FG-6692", "TCGA-FG-6692_t1_bet.nii.gz", "TCGA-FG-6692_t2_bet.nii.gz"))


def real_texture(folder: Path = ROOT.parent / "shared" / "data" / "brats") -> list[dict]:
    """How much a real image's signal varies between neighbours of one tissue: the level of S0 texture the pooling
    meets. A proxy: structural T2-weighted images of the real cases (no DSC baseline exists here), at 1 mm and at
    2 mm (means of 2x2x2 blocks, the size of a DSC voxel at best). White matter = the 60th-97th percentile of the
    brain's T1, eroded by one voxel, T2 within 50 % of its median (no oedema or tumour). Per case: the T2's CoV over
    all of that white matter (with the coil's shading), the median CoV of 3x3x3 neighbourhoods inside it (what one
    pooling neighbourhood sees), and the noise part of it (neighbouring voxels' difference, MAD, / sqrt 2)."""
    import nibabel as nib
    from scipy import ndimage

    def down(a):
        s = [d // 2 * 2 for d in a.shape]
        return a[:s[0], :s[1], :s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))

    rows = []
    for case, t1_name, t2_name in REAL_CASES:
        if not (folder / case / t2_name).is_file():
            continue
        t1 = np.asarray(nib.load(folder / case / t1_name).dataobj, np.float64)
        t2 = np.asarray(nib.load(folder / case / t2_name).dataobj, np.float64)
        for label, (a1, a2, brain) in {"1 mm": (t1, t2, t1 > 0),
                                        "2 mm": (down(t1), down(t2), down((t1 > 0).astype(float)) > 0.99)}.items():
            lo, hi = np.percentile(a1[brain], [60, 97])
            wm = ndimage.binary_erosion(brain & (a1 > lo) & (a1 < hi), iterations=1)
            median = np.median(a2[wm])
            wm &= np.abs(a2 - median) < 0.5 * median
            mean = ndimage.uniform_filter(a2, 3)
            local = np.sqrt(np.maximum(ndimage.uniform_filter(a2 * a2, 3) - mean * mean, 0.0)) / np.maximum(mean, 1e-6)
            inner = ndimage.binary_erosion(wm, iterations=1)
            diff = (a2[1:] - a2[:-1])[inner[1:] & inner[:-1]]
            rows.append({"case": case, "grid": label, "wm_voxels": int(wm.sum()),
                         "cov_pct": 100 * float(a2[wm].std() / a2[wm].mean()),
                         "local_cov_pct": 100 * float(np.median(local[inner])),
                         "noise_pct": 100 * float(np.median(np.abs(diff)) / 0.6745 / np.sqrt(2) / median)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument("--table", type=Path, help="print the table of a JSON written by --out, measure nothing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real-texture", action="store_true",
                    help="only measure the S0-texture level of real images (../shared/data/brats), print it, and stop")
    args = ap.parse_args(argv)
    if args.real_texture:
        rows = real_texture()
        if not rows:
            print("error: no real case in ../shared/data/brats next to this checkout", file=sys.stderr)
            return 2
        for r in rows:
            print(f"{r['case']} {r['grid']}: white matter {r['wm_voxels']} voxels, T2 CoV {r['cov_pct']:.1f} %, "
                  f"median 3x3x3 CoV {r['local_cov_pct']:.1f} % (noise {r['noise_pct']:.1f} %)")
        return 0
    if args.table:
        rows = json.loads(args.table.read_text(encoding="utf-8"))
    else:
        import torch

        torch.set_num_threads(args.threads)
        rows = measure()
        if args.out:
            args.out.write_text(json.dumps(rows, indent=0), encoding="utf-8")
    print(tables(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
