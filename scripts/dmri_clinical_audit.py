"""Session 23: `bbbanomaly dmri` on the DWI a glioma clinic actually has (outside-in, through the CLI).

  nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python scripts/dmri_clinical_audit.py --out /tmp/dmri_clinical \
      [--seed 1000] [--cases NAME ...] [--models recdisc vae]

One noiseless simulation of phantom patient ``--seed`` (BBBAnomalyLib/phantoms/dmri.py, 2.5 mm LAS, tumour) with ONE
gradient table holding every volume any case needs (b0; x/y/z at b = 50/500/800/1000/1500/2000; 64 directions at
1000; 30 at 2000 and 3000; Jones' 6 at 1000; 64 at 800 and 1500), so every case is the same subject and tumour.
Each case takes its volumes, gets Rician noise (b0 SNR 30, the same seed), is written as NIfTI + FSL bval/bvec and
run through ``bbbanomaly dmri`` (the CLI's main(), in process): the exit code, the stderr line, and for a map: r with
the reference run (1 b0 + 64 directions at b = 1000) inside the phantom brain analysed by both, tumour voxel AUC and
Dice in GM+WM, anomaly volume, warnings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np

import os

REPO = Path(os.environ.get("BBB_REPO", Path(__file__).resolve().parents[1]))  # the checkout this script is in
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from BBBAnomalyLib.dmri.gradients import canonical_directions  # noqa: E402
from BBBAnomalyLib.phantoms import dmri_physics as phys  # noqa: E402
from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom  # noqa: E402

SNR = 30.0
XYZ = np.eye(3)  # a 3-scan trace acquires along the scanner's (here the image's) axes
PHI = (1 + 5 ** 0.5) / 2
JONES6 = np.array([[0, 1, PHI], [0, -1, PHI], [1, PHI, 0], [-1, PHI, 0], [PHI, 0, 1], [PHI, 0, -1]], float)
JONES6 /= np.linalg.norm(JONES6, axis=1, keepdims=True)
TETRA = np.array([[1, 1, -1], [1, -1, 1], [-1, 1, 1], [-1, -1, -1]], float) / np.sqrt(3)  # Siemens 4-scan trace


def _rot(seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))[0]


BLOCKS = {  # name: (b, directions)
    "b0": (0.0, np.zeros((1, 3))),
    "b50_ref": (50.0, np.array([[0.6, 0.64, 0.48]])),
    **{f"xyz{b}": (float(b), XYZ) for b in (500, 800, 1000, 1500, 2000)},
    "tetra1000": (1000.0, TETRA),
    "d64_1000": (1000.0, canonical_directions(64) @ _rot(7).T),
    "d64_800": (800.0, canonical_directions(64) @ _rot(7).T),
    "d64_1500": (1500.0, canonical_directions(64) @ _rot(7).T),
    "d30_2000": (2000.0, canonical_directions(30) @ _rot(8).T),
    "d30_3000": (3000.0, canonical_directions(30) @ _rot(9).T),
    "jones6_1000": (1000.0, JONES6),
}


class Subject:
    """Noiseless volumes of one patient for every block; cases assemble, distort and add noise."""

    def __init__(self, seed: int):
        order = list(BLOCKS)
        self.slices, bvals, bvecs, start = {}, [], [], 0
        for name in order:
            b, dirs = BLOCKS[name]
            self.slices[name] = slice(start, start + len(dirs))
            start += len(dirs)
            bvals.append(np.full(len(dirs), b))
            bvecs.append(dirs)
        with phys.gradient_table_as(np.concatenate(bvals), np.concatenate(bvecs)):
            p = make_dmri_phantom(seed, tumor=True, snr=1e9, n_directions=64)
        self.p, self.data, self.affine, self.masks = p, p.dwi.data, p.dwi.affine, p.masks
        self.bvals, self.bvecs = np.concatenate(bvals), np.concatenate(bvecs)

    def block(self, name):
        s = self.slices[name]
        return self.data[..., s], self.bvals[s], self.bvecs[s]


def noisy(data, seed=0):
    return phys.rician(np.asarray(data, np.float32), phys.S0["wm"] / SNR, np.random.default_rng(seed))


def assemble(subject, names, seed=0):
    parts = [subject.block(n) for n in names]
    data = noisy(np.concatenate([p[0] for p in parts], -1), seed)
    return data, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def trace_of(data, bvals, b):
    """Siemens TRACEW / Philips isotropic: the geometric mean of the directional images at b."""
    sel = np.isclose(bvals, b)
    return np.exp(np.log(np.maximum(data[..., sel], 1e-6)).mean(-1))


# --- susceptibility distortion along the phase-encoding axis (array axis 1 = A-P in this LAS storage) ----------
def displacement_field(subject, peak_vox: float):
    """A smooth off-resonance displacement (voxels along axis 1): an orbitofrontal blob (peak ``peak_vox``) and the
    two temporal poles (0.75 x), sigma 12 mm, plus a 0.1 x peak linear term; the shape of 3T B0 inhomogeneity."""
    brain = subject.masks["brain"]
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0)
    v = abs(subject.affine[0, 0])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in brain.shape], indexing="ij"), -1).astype(float)
    span = hi - lo
    # LAS: axis 0 runs right->left... x index: position only matters relative to the brain's box
    centres = [(lo + span * np.array([0.5, 0.93, 0.2]), 1.0),  # anterior (axis 1 high = anterior), inferior
               (lo + span * np.array([0.15, 0.7, 0.15]), 0.75), (lo + span * np.array([0.85, 0.7, 0.15]), 0.75)]
    field = np.zeros(brain.shape)
    for c, w in centres:
        r2 = (((grid - c) * v) ** 2).sum(-1)
        field += w * np.exp(-r2 / (2 * 12.0 ** 2))
    field += 0.1 * (grid[..., 2] - lo[2]) / max(span[2], 1)
    return peak_vox * field


def distort(data, field, sign):
    """EPI forward model: the signal at y appears at y + sign*d(y); I_d(y') = I(y' - sign d) (1 - sign dd/dy)."""
    from scipy import ndimage

    d = sign * field
    jac = 1 - np.gradient(d, axis=1)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in field.shape], indexing="ij"), 0).astype(float)
    grid[1] -= d
    out = np.empty_like(data)
    for k in range(data.shape[-1]):
        out[..., k] = ndimage.map_coordinates(data[..., k], grid, order=3, mode="constant") * jac
    return np.maximum(out, 0)


def blip(subject, peak_vox, order="ap_first", n_ap=1, n_pa=1, dw="d64_1000", seed=0):
    field = displacement_field(subject, peak_vox)
    b0 = subject.block("b0")[0]
    dwd, dwb, dwv = subject.block(dw)
    ap = distort(np.concatenate([b0] * n_ap + [dwd], -1), field, +1)
    pa = distort(np.concatenate([b0] * n_pa, -1), field, -1)
    b0_ap, dw_ap = ap[..., :n_ap], ap[..., n_ap:]
    if order == "ap_first":
        data = np.concatenate([b0_ap, pa, dw_ap], -1)
    elif order == "pa_first":
        data = np.concatenate([pa, b0_ap, dw_ap], -1)
    elif order == "pa_last":
        data = np.concatenate([b0_ap, dw_ap, pa], -1)
    else:  # "ap_only": the same AP series without the reversed b0 (what topup's users would give / the reference)
        data = np.concatenate([b0_ap, dw_ap], -1)
    nb0 = n_ap + (0 if order == "ap_only" else n_pa)
    bvals = np.r_[np.zeros(nb0), dwb]
    bvecs = np.r_[np.zeros((nb0, 3)), dwv]
    if order == "pa_last":
        bvals, bvecs = np.r_[np.zeros(n_ap), dwb, np.zeros(n_pa)], np.r_[np.zeros((n_ap, 3)), dwv, np.zeros((n_pa, 3))]
    return noisy(data, seed), bvals, bvecs


# --- cases ---------------------------------------------------------------------------------------------------------
def case_table(s):
    C = {}
    C["reference_64"] = lambda: assemble(s, ["b0", "d64_1000"])
    C["three_dir_1000"] = lambda: assemble(s, ["b0", "xyz1000"])
    C["three_dir_500_1000"] = lambda: assemble(s, ["b0", "xyz500", "xyz1000"])
    C["three_dir_b50_500_1000"] = lambda: assemble(s, ["b50_ref", "xyz500", "xyz1000"])
    C["four_scan_trace_1000"] = lambda: assemble(s, ["b0", "tetra1000"])

    def with_trace(blocks, bs):
        data, bvals, bvecs = assemble(s, blocks)
        traces = [trace_of(data, bvals, b) for b in bs]
        return (np.concatenate([data] + [t[..., None] for t in traces], -1), np.r_[bvals, bs],
                np.r_[bvecs, np.zeros((len(bs), 3))])

    C["three_dir_plus_trace"] = lambda: with_trace(["b0", "xyz1000"], [1000.0])

    def trace_only(bs, nan_vec=False):
        data, bvals, bvecs = assemble(s, ["b0"] + [f"xyz{int(b)}" for b in bs])
        traces = [trace_of(data, bvals, b) for b in bs]
        vecs = np.zeros((1 + len(bs), 3))
        return np.concatenate([data[..., :1]] + [t[..., None] for t in traces], -1), np.r_[0.0, bs], vecs

    C["trace_only_1000"] = lambda: trace_only([1000.0])

    def trace_as_b0(blocks=("b0", "d64_1000")):  # the trace kept, its b-value lost (bval 0, bvec 0)
        data, bvals, bvecs = with_trace(list(blocks), [1000.0])
        bvals = bvals.copy()
        bvals[-1] = 0.0
        return data, bvals, bvecs

    C["trace_as_b0"] = trace_as_b0
    C["trace_as_b0_nrrd"] = trace_as_b0  # written as a DWMRI NRRD (a zero gradient is a b0 there)
    C["trace_as_b0_jones6"] = lambda: trace_as_b0(("b0", "jones6_1000"))
    C["plus_trace_64"] = lambda: with_trace(["b0", "d64_1000"], [1000.0])
    C["trace_only_500_1000"] = lambda: trace_only([500.0, 1000.0])

    def trace_given_direction():  # a converter that writes a nominal vector for the trace image
        d, bv, _ = trace_only([1000.0])
        return d, bv, np.array([[0, 0, 0], [0.577, 0.577, 0.577]], float)

    C["trace_only_nominal_vector"] = trace_given_direction
    C["multishell_0_1000_2000_3000"] = lambda: assemble(s, ["b0", "d64_1000", "d30_2000", "d30_3000"])
    C["single_shell_800"] = lambda: assemble(s, ["b0", "d64_800"])
    C["single_shell_1500"] = lambda: assemble(s, ["b0", "d64_1500"])
    C["three_dir_1500"] = lambda: assemble(s, ["b0", "xyz1500"])

    def nex2(block):
        data, bvals, bvecs = assemble(s, ["b0", block, block])
        return data, bvals, bvecs

    C["nex2_64"] = lambda: nex2("d64_1000")
    C["nex2_jones6"] = lambda: nex2("jones6_1000")
    C["nex2_three_dir"] = lambda: nex2("xyz1000")
    C["jones6"] = lambda: assemble(s, ["b0", "jones6_1000"])

    def interleaved(n_b0=10, every=7):
        b0 = s.block("b0")
        dw = s.block("d64_1000")
        cols, bv, vec = [], [], []
        for i in range(64):
            if i % every == 0 and len([x for x in bv if x == 0]) < n_b0:
                cols.append(b0[0][..., 0]); bv.append(0.0); vec.append(np.zeros(3))
            cols.append(dw[0][..., i]); bv.append(dw[1][i]); vec.append(dw[2][i])
        return noisy(np.stack(cols, -1)), np.array(bv), np.array(vec)

    C["b0_interleaved_10"] = interleaved
    for peak in (2.0, 4.0):
        C[f"blip_ap_only_{peak:g}"] = lambda peak=peak: blip(s, peak, "ap_only")
        C[f"blip_pair_{peak:g}"] = lambda peak=peak: blip(s, peak, "ap_first")
        C[f"blip_pa_first_{peak:g}"] = lambda peak=peak: blip(s, peak, "pa_first")
    C["blip_pa_last_4"] = lambda: blip(s, 4.0, "pa_last")
    C["blip_ap_only_4_x3"] = lambda: blip(s, 4.0, "ap_only", n_ap=3)
    C["blip_3ap_1pa_4"] = lambda: blip(s, 4.0, "ap_first", n_ap=3, n_pa=1)
    C["blip_ap_only_4_jones6"] = lambda: blip(s, 4.0, "ap_only", dw="jones6_1000")
    C["blip_pair_4_jones6"] = lambda: blip(s, 4.0, "ap_first", dw="jones6_1000")
    return C


FILE_CASES = {  # written specially: (what to write) -> files
    "bval_one_more": "bval with one more entry than volumes",
    "bvec_one_fewer": "bvec with one fewer direction than volumes",
    "both_one_more": "bval and bvec with one more entry than volumes (a trace volume dropped from the image)",
    "adc_map_as_dwi": "the scanner's ADC map (3D) given as the DWI",
    "trace_no_bvec": "b0 + trace image, bval only, no bvec",
}


def write_case(folder, data, affine, bvals, bvecs_ras, special=None):
    from dmri_unusual_acquisitions import write_nifti

    path = write_nifti(folder, data, affine, bvals, bvecs_ras)
    bval, bvec = folder / "dwi.bval", folder / "dwi.bvec"
    if special == "bval_one_more":
        np.savetxt(bval, np.r_[bvals, 1000.0][None], fmt="%.6g")
    elif special == "bvec_one_fewer":
        vec = np.loadtxt(bvec)
        np.savetxt(bvec, vec[:, :-1], fmt="%.8f")
    elif special == "both_one_more":
        np.savetxt(bval, np.r_[bvals, 1000.0][None], fmt="%.6g")
        vec = np.loadtxt(bvec)
        np.savetxt(bvec, np.c_[vec, np.zeros(3)], fmt="%.8f")
    elif special == "trace_no_bvec":
        bvec.unlink()
    return path, bval, bvec


def run_cli(path, bval, bvec, out, model):
    from BBBAnomalyLib.cli import main

    argv = ["dmri", str(path), "--out", str(out), "--model", model, "--device", "cpu", "--quiet"]
    if bval is not None and Path(bval).exists():
        argv += ["--bval", str(bval)]
    if bvec is not None and Path(bvec).exists():
        argv += ["--bvec", str(bvec)]
    err, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
        code = main(argv)
    return code, err.getvalue().strip()


def measure(out, ref_maps, masks, affine):
    import nibabel as nib
    from BBBAnomalyLib.metrics import dice, roc_auc

    anomaly = np.asarray(nib.load(out / "anomaly.nii.gz").dataobj, np.float32)
    flagged = np.asarray(nib.load(out / "anomaly_mask.nii.gz").dataobj) > 0
    analysed = np.asarray(nib.load(out / "brain_mask.nii.gz").dataobj) > 0
    report = json.loads((out / "report.json").read_text())
    region = masks["gm_wm"] & analysed
    truth = masks["tumor"]
    row = {"auc": roc_auc(truth[region], anomaly[region]), "dice": dice(flagged[region], truth[region]),
           "volume_ml": report["summary"]["anomaly_volume_ml"],
           "warnings": [w for w in report["warnings"] if "research option" not in w], "input": report["input"],
           "sha": __import__("hashlib").sha256(anomaly.tobytes()).hexdigest()[:12]}
    if ref_maps is not None:
        ra, rb = ref_maps
        both = masks["brain"] & analysed & rb
        row["r"] = float(np.corrcoef(anomaly[both], ra[both])[0, 1])
    return row, (anomaly, analysed)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--cases", nargs="*")
    ap.add_argument("--models", nargs="*", default=["recdisc"])
    ap.add_argument("--reference", default="reference_64", help="the case every other is correlated with")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    s = Subject(args.seed)
    cases = case_table(s)
    names = args.cases or (list(cases) + list(FILE_CASES))
    rows = []
    refs = {}
    for model in args.models:
        for name in [args.reference] + [n for n in names if n != args.reference]:
            folder = work / f"{name}"
            shutil.rmtree(folder, ignore_errors=True)
            special = name if name in FILE_CASES else None
            if special == "adc_map_as_dwi":
                data, bvals, bvecs = assemble(s, ["b0", "xyz1000"])
                adc = -np.log(np.maximum(trace_of(data, bvals, 1000.0) / np.maximum(data[..., 0], 1e-6), 1e-6)) / 1e3
                import nibabel as nib

                folder.mkdir(parents=True)
                nib.save(nib.Nifti1Image((adc * 1e6).astype(np.float32), s.affine), folder / "adc.nii")
                path, bval, bvec = folder / "adc.nii", None, None
            else:
                if special in ("trace_no_bvec",):
                    data, bvals, bvecs = cases["trace_only_1000"]()
                elif special:
                    data, bvals, bvecs = cases["reference_64"]()
                else:
                    data, bvals, bvecs = cases[name]()
                if name.endswith("_nrrd"):
                    from dmri_unusual_acquisitions import write_dwmri_nrrd

                    path, bval, bvec = folder / "dwi.nrrd", None, None
                    write_dwmri_nrrd(path, data, s.affine, np.where(bvals > 0, bvals, 0.0), bvecs)
                else:
                    path, bval, bvec = write_case(folder, data, s.affine, bvals, bvecs, special)
            out = folder / "out"
            code, err = run_cli(path, bval, bvec, out, model)
            row = {"case": name, "model": model, "exit": code, "stderr": err}
            if code == 0:
                m, maps = measure(out, refs.get(model), s.masks, s.affine)
                row.update(m)
                if name == args.reference:
                    refs[model] = maps
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                              if k != "input"}), flush=True)
            rows.append(row)
            shutil.rmtree(folder / "out", ignore_errors=True)
            for f in list(folder.glob("*.nii")) + list(folder.glob("*.nrrd")):
                f.unlink()
    (work / f"rows_{args.seed}_{args.reference}.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
