"""Outside-in audit of `run_dmri` on legitimate but unusual acquisitions of the diffusion phantom patient.

  python scripts/dmri_unusual_acquisitions.py --out /tmp/dmri_audit                    # every variant
  python scripts/dmri_unusual_acquisitions.py --out /tmp/dmri_audit --groups gradients intensity
  python scripts/dmri_unusual_acquisitions.py --out /tmp/dmri_audit --variants fsl_flip_y b0_x1.25
  python scripts/dmri_unusual_acquisitions.py --out /tmp/dmri_audit --table            # the table from the stored runs
  python scripts/dmri_unusual_acquisitions.py --out /tmp/dmri_audit --orientation-check dev|held   # calibration
  python scripts/dmri_unusual_acquisitions.py --out /tmp/dmri_audit --few-directions dev|held|sh|crop  # 6-14 dirs

The object is the phantom patient ``--seed`` (default 1000, a development case; BBBAnomalyLib/phantoms/dmri.py):
1 b0 + 64 directions at b = 1000, SNR 30, 2.5 mm LAS. Each variant is written to files (NIfTI + FSL bval/bvec
written with ``gradients.to_fsl`` for its storage, int16 with scl_slope where said, or a DWMRI NRRD), read back
with ``read_dwi`` (the CLI's reader) and run through ``run_dmri`` with both bundled models (vae, recdisc), the
default threshold and the automatic brain mask. Its maps are brought onto the reference grid (trilinear through
both affines) and compared with the reference run there:

* ``r``: correlation of the anomaly map with the reference run's, on the voxels that are phantom brain and
  analysed in both runs;
* tumour voxel AUC of the anomaly map and Dice of the anomaly mask with the phantom's tumour (core + edema +
  infiltration) inside GM+WM of the analysed brain (as scripts/validate_dmri.py), the anomaly volume (ml, from the
  report) and the fraction of the phantom's normal-appearing white matter flagged;
* every warning of the report (the VAE's standing "research option" line left out) or the refusal's line.

Groups and their references: ``storage``, ``gradients``, ``acquisition`` and ``intensity`` variants are the same
subject and tumour on the same 2.5 mm grid (the acquisition variants re-simulated with their own gradient table:
make_dmri_phantom draws the same random numbers, so only the table and the noise differ) and are compared with the
reference run of the 2.5 mm phantom as written. ``resolution`` variants (1 and 3 mm isotropic, 2x2x5 mm, 1x1 mm with
5 mm slices every 6 mm, oblique 18 degrees) are sampled from the same patient simulated noiseless at 1 mm (a
Gaussian voxel profile of each target voxel's widths, then Rician noise at SNR 30) and compared with that 1 mm
object sampled the same way at 2.5 mm (``res_2.5iso``).

``--orientation-check dev|held`` computes the fibre-coherence gradient check (BBBAnomalyLib/dmri/gradient_check.py)
on the bundle phantoms (tubes of anisotropic tissue: the brain phantom's smooth fibre field cannot tell a flipped
table from the right one) for the calibration rule in /work/notes/s20/dmri_unusual.md.

``--few-directions dev|held|sh|crop`` compares 6-14 direction tables (jones6, siemens6, electrostatic 12/13/14),
resampled through a diffusion tensor, with the same patient's 64-direction run (``sh``: the tensor against order-4
SH at 15-30 directions; ``crop``: dipy's real crop subsampled, S/S0 error on the canonical directions), for the rule
in /work/notes/s20/dmri_few_directions.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from BBBAnomalyLib.core.errors import InputError  # noqa: E402
from BBBAnomalyLib.core.volume import Volume  # noqa: E402
from BBBAnomalyLib.dmri.gradients import canonical_directions, to_fsl  # noqa: E402
from BBBAnomalyLib.phantoms import dmri_physics as phys  # noqa: E402
from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom  # noqa: E402

SNR = 30.0
MODELS = ("recdisc", "vae")
LPS = np.diag([-1.0, -1.0, 1.0])


# --- gradient tables ----------------------------------------------------------------------------------------------
def table(n: int, b=1000.0, n_b0: int = 1, seed: int = 7, full_sphere: bool = False):
    """(bvals, RAS unit directions): b0s first, then ``n`` evenly spread directions (half sphere, randomly rotated;
    ``full_sphere``: a Fibonacci set over the whole sphere, as some vendors' tables are), b jittered by 1 %."""
    rng = np.random.default_rng(seed)
    if full_sphere:
        k = np.arange(n) + 0.5
        z = 1 - 2 * k / n
        phi = np.pi * (1 + 5 ** 0.5) * k
        dirs = np.stack([np.sqrt(1 - z ** 2) * np.cos(phi), np.sqrt(1 - z ** 2) * np.sin(phi), z], 1)
    else:
        dirs = canonical_directions(n) @ np.linalg.qr(rng.standard_normal((3, 3)))[0].T
    bvals = np.r_[np.zeros(n_b0), np.asarray(b, float) * (1 + 0.01 * rng.uniform(-1, 1, n))]
    return bvals, np.r_[np.zeros((n_b0, 3)), dirs]



def patient(seed: int, tab=None, snr: float = SNR, **kw):
    if tab is None:
        return make_dmri_phantom(seed, tumor=True, snr=snr, n_directions=64, **kw)
    with phys.gradient_table_as(*tab):
        return make_dmri_phantom(seed, tumor=True, snr=snr, n_directions=64, **kw)


# --- storage: the same voxels in another array order --------------------------------------------------------------
def restored(data: np.ndarray, affine: np.ndarray, order, flips):
    """``data`` stored with its array axes reordered (new axis a = old axis order[a]) and ``flips`` reversed:
    (array, affine) describing the same world."""
    out = np.transpose(data, tuple(order) + tuple(range(3, data.ndim)))
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for new, old in enumerate(order):
        m[old, new] = 1.0
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis)
            f = np.eye(4)
            f[axis, axis] = -1
            f[axis, 3] = out.shape[axis] - 1
            m = m @ f
    return np.ascontiguousarray(out), affine @ m


def orientation_of(affine) -> str:
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))


# --- resampling the 1 mm object --------------------------------------------------------------------------------
def grid_for(extent_min, extent_max, voxel, rotation=np.eye(3), flips=(True, False, False)):
    """(affine, shape) of a grid of ``voxel`` (3 spacings, mm) covering the RAS box, axes ``rotation`` columns."""
    axes = rotation @ np.diag([-1.0 if f else 1.0 for f in flips])
    centre = 0.5 * (np.asarray(extent_min) + extent_max)
    size = np.abs(rotation.T) @ (np.asarray(extent_max) - extent_min)  # the box's extent along the new axes
    shape = tuple(int(np.floor(s / v)) + 1 for s, v in zip(size, voxel))
    affine = np.eye(4)
    affine[:3, :3] = axes * np.asarray(voxel)[None, :]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine, shape


def sample(fine_data, fine_affine, affine, shape, widths, order=1):
    """Each target voxel's value: the 1 mm data smoothed by a Gaussian of the target voxel's profile (box widths
    ``widths`` mm along the target axes, less the 1 mm already there), sampled at the voxel centres."""
    fine_axes = fine_affine[:3, :3] / np.linalg.norm(fine_affine[:3, :3], axis=0)
    target_axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    sigma = np.zeros(3)
    for t in range(3):
        f = int(np.argmax(np.abs(fine_axes.T @ target_axes[:, t])))
        sigma[f] = max(sigma[f], np.sqrt(max(widths[t] ** 2 - 1.0, 0.0) / 12.0))
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    coords = (np.linalg.inv(fine_affine) @ affine @ np.r_[ijk, np.ones((1, ijk.shape[1]))])[:3]
    vols = [fine_data] if fine_data.ndim == 3 else [fine_data[..., v] for v in range(fine_data.shape[3])]
    out = [ndimage.map_coordinates(ndimage.gaussian_filter(v.astype(np.float32), sigma) if sigma.any() else
                                   v.astype(np.float32), coords, order=order, mode="constant").reshape(shape)
           for v in vols]
    return out[0] if fine_data.ndim == 3 else np.stack(out, -1)


class Fine:
    """The patient simulated (nearly) noiseless at 1 mm with 1 b0 + 32 directions: the resolution variants' source."""

    def __init__(self, seed: int):
        self.p = make_dmri_phantom(seed, tumor=True, snr=1e6, n_directions=32, voxel_mm=1.0)
        brain = np.argwhere(self.p.masks["brain"])
        world = (self.p.dwi.affine @ np.c_[brain, np.ones(len(brain))].T)[:3]
        self.low, self.high = world.min(axis=1) - 12.0, world.max(axis=1) + 12.0

    def acquire(self, voxel, widths=None, rotation=np.eye(3), seed=0):
        affine, shape = grid_for(self.low, self.high, voxel, rotation)
        widths = widths or voxel
        data = sample(self.p.dwi.data, self.p.dwi.affine, affine, shape, widths)
        data = phys.rician(data, phys.S0["wm"] / SNR, np.random.default_rng(seed))
        masks = {k: sample(self.p.masks[k].astype(np.float32), self.p.dwi.affine, affine, shape, widths) >= 0.5
                 for k in ("brain", "gm_wm", "nawm", "tumor")}
        return data, affine, masks


# --- files -------------------------------------------------------------------------------------------------
def write_nifti(folder: Path, data, affine, bvals, bvecs_ras, *, fsl_bvecs=None, dtype="float32", slope=None):
    """dwi.nii + dwi.bval + dwi.bvec (FSL: ``gradients.to_fsl`` for this storage unless ``fsl_bvecs`` given)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    if dtype == "int16":
        stored = np.clip(np.round(data / slope), -32768, 32767).astype(np.int16)
    else:
        stored = np.asarray(data, np.float32)
    img = nib.Nifti1Image(stored, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, folder / "dwi.nii")
    vecs = to_fsl(bvecs_ras, affine) if fsl_bvecs is None else np.asarray(fsl_bvecs, float)
    np.savetxt(folder / "dwi.bval", np.asarray(bvals, float)[None, :], fmt="%.6g")
    np.savetxt(folder / "dwi.bvec", vecs.T, fmt="%.8f")
    return folder / "dwi.nii"


def write_dwmri_nrrd(path: Path, data, affine, bvals, bvecs_ras, *, space="left-posterior-superior", frame=None,
                     gradients=None, b_max=None):
    """A DWMRI NRRD as Slicer writes it (attached raw data, ``kinds: list domain domain domain``). Gradients in the
    measurement ``frame`` (None: no measurement frame line), scaled so that b_i = b_max |g_i|^2; ``gradients``:
    the vectors to write as they are (an error being simulated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flip = LPS if space.startswith("left") else np.eye(3)
    directions = flip @ affine[:3, :3]
    origin = flip @ affine[:3, 3]
    bvals = np.asarray(bvals, float)
    b_max = float(b_max or bvals.max())
    if gradients is None:
        world = (np.nan_to_num(bvecs_ras) @ flip.T) * np.sqrt(bvals / b_max)[:, None]
        gradients = world @ np.linalg.inv(frame).T if frame is not None else world
    vec = lambda v: "(" + ",".join(f"{x:.10g}" for x in v) + ")"  # noqa: E731
    lines = ["NRRD0005", "type: float", "dimension: 4", f"space: {space}",
             f"sizes: {data.shape[3]} {data.shape[0]} {data.shape[1]} {data.shape[2]}",
             "space directions: none " + " ".join(vec(directions[:, a]) for a in range(3)),
             "kinds: list domain domain domain", "endian: little", "encoding: raw", f"space origin: {vec(origin)}"]
    if frame is not None:
        lines.append("measurement frame: " + " ".join(vec(np.asarray(frame)[:, a]) for a in range(3)))
    lines += ["modality:=DWMRI", f"DWMRI_b-value:={b_max:g}"]
    lines += [f"DWMRI_gradient_{i:04d}:={g[0]:.10g} {g[1]:.10g} {g[2]:.10g}" for i, g in enumerate(gradients)]
    payload = np.ascontiguousarray(np.asarray(data, "<f4").transpose(2, 1, 0, 3)).tobytes()
    path.write_bytes(("\n".join(lines) + "\n\n").encode("latin-1") + payload)
    return path


# --- variants --------------------------------------------------------------------------------------------------
class Context:
    def __init__(self, seed: int):
        self.seed = seed
        self.ref = patient(seed)
        self._fine = None

    @property
    def fine(self) -> Fine:
        if self._fine is None:
            self._fine = Fine(self.seed)
        return self._fine

    def ref_masks(self):
        return {k: self.ref.masks[k] for k in ("brain", "gm_wm", "nawm", "tumor")}


def _plain(ctx, folder, data=None, affine=None, acq=None, **kw):
    dwi = ctx.ref.dwi
    acq = acq or dwi.acquisition
    return write_nifti(folder, dwi.data if data is None else data, dwi.affine if affine is None else affine,
                       acq.bvals, acq.bvecs, **kw)


def v_reference(ctx, folder):
    return {"path": _plain(ctx, folder)}


def v_storage(order, flips):
    def make(ctx, folder):
        data, affine = restored(ctx.ref.dwi.data, ctx.ref.dwi.affine, order, flips)
        return {"path": _plain(ctx, folder, data, affine), "storage": orientation_of(affine)}
    return make


def v_nrrd(space, frame_deg=0.0, storage=None):
    def make(ctx, folder):
        dwi = ctx.ref.dwi
        data, affine = (dwi.data, dwi.affine) if storage is None else restored(dwi.data, dwi.affine, *storage)
        a = np.radians(frame_deg)
        frame = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
        return {"path": write_dwmri_nrrd(folder / "dwi.nrrd", data, affine, dwi.acquisition.bvals,
                                         dwi.acquisition.bvecs, space=space, frame=frame)}
    return make


def v_fsl_error(transform, storage=None):
    """FSL bvec rows transformed: ``transform(fsl (n, 3)) -> (n, 3)`` (a sign or an order of the rows)."""
    def make(ctx, folder):
        dwi = ctx.ref.dwi
        data, affine = (dwi.data, dwi.affine) if storage is None else restored(dwi.data, dwi.affine, *storage)
        fsl = transform(to_fsl(dwi.acquisition.bvecs, affine), affine, dwi.acquisition.bvecs)
        return {"path": _plain(ctx, folder, data, affine, fsl_bvecs=fsl), "storage": orientation_of(affine)}
    return make


def v_nrrd_no_frame(storage):
    """A DWMRI NRRD whose gradients are in the image's axes (as a converter that skips the measurement frame
    writes them) with no measurement frame line: the reader takes them as world vectors."""
    def make(ctx, folder):
        dwi = ctx.ref.dwi
        data, affine = restored(dwi.data, dwi.affine, *storage)
        rotation = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        image_frame = np.nan_to_num(dwi.acquisition.bvecs) @ rotation  # R^T g
        g = image_frame * np.sqrt(dwi.acquisition.bvals / dwi.acquisition.bvals.max())[:, None]
        return {"path": write_dwmri_nrrd(folder / "dwi.nrrd", data, affine, dwi.acquisition.bvals, None,
                                         gradients=g), "storage": orientation_of(affine)}
    return make


def v_table(tab, post=None, nrrd=False, fsl_bvecs=None):
    """Re-simulated with the gradient table ``tab`` (bvals, RAS vectors); ``post(data, bvals, bvecs)`` may change
    what is stored (data, bvals, bvecs)."""
    def make(ctx, folder):
        tb = tab() if callable(tab) else tab
        p = patient(ctx.seed, tb)
        data, bvals, bvecs = p.dwi.data, p.dwi.acquisition.bvals, p.dwi.acquisition.bvecs
        if post is not None:
            data, bvals, bvecs = post(data.copy(), bvals.copy(), bvecs.copy())
        if nrrd:
            return {"path": write_dwmri_nrrd(folder / "dwi.nrrd", data, p.dwi.affine, bvals, bvecs)}
        fsl = fsl_bvecs(bvals, bvecs, p.dwi.affine) if fsl_bvecs else None
        return {"path": write_nifti(folder, data, p.dwi.affine, bvals, bvecs, fsl_bvecs=fsl)}
    return make


def v_data(change, **kw):
    """The reference's series changed by ``change(data) -> data``, same table and grid."""
    def make(ctx, folder):
        return {"path": _plain(ctx, folder, change(ctx.ref.dwi.data.astype(np.float32).copy()), **kw)}
    return make


def v_snr(snr):
    def make(ctx, folder):
        return {"path": write_nifti(folder, *(lambda p: (p.dwi.data, p.dwi.affine, p.dwi.acquisition.bvals,
                                                         p.dwi.acquisition.bvecs))(patient(ctx.seed, snr=snr)))}
    return make


def v_cut_top(fraction):
    def make(ctx, folder):
        brain = ctx.ref.masks["brain"]
        slices = np.flatnonzero(brain.any(axis=(0, 1)))
        keep = int(slices.max() - fraction * (slices.max() - slices.min() + 1)) + 1
        return {"path": _plain(ctx, folder, ctx.ref.dwi.data[:, :, :keep]), "grid": "same origin"}
    return make


def v_pad(pad_before, pad_after, noise: bool):
    def make(ctx, folder):
        data = ctx.ref.dwi.data
        widths = [(b, a) for b, a in zip(pad_before, pad_after)] + [(0, 0)]
        if noise:  # the background of a magnitude image: Rician noise of the series' own sigma
            rng = np.random.default_rng(5)
            padded = phys.rician(np.zeros(tuple(s + b + a for s, (b, a) in zip(data.shape, widths)), np.float32),
                                 phys.S0["wm"] / SNR, rng)
            padded[tuple(slice(b, b + s) for s, (b, _) in zip(data.shape, widths))] = data
        else:
            padded = np.pad(data, widths)
        shift = np.eye(4)
        shift[:3, 3] = -np.asarray(pad_before, float)
        return {"path": _plain(ctx, folder, padded, ctx.ref.dwi.affine @ shift)}
    return make


def v_resolution(voxel, widths=None, rotation_deg=0.0, fsl_error=None):
    def make(ctx, folder):
        a = np.radians(rotation_deg)
        rot = (np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
               @ np.array([[np.cos(a / 2), -np.sin(a / 2), 0], [np.sin(a / 2), np.cos(a / 2), 0], [0, 0, 1]]))
        data, affine, masks = ctx.fine.acquire(voxel, widths, rot)
        acq = ctx.fine.p.dwi.acquisition
        fsl = fsl_error(to_fsl(acq.bvecs, affine), affine, acq.bvecs) if fsl_error else None
        return {"path": write_nifti(folder, data, affine, acq.bvals, acq.bvecs, fsl_bvecs=fsl),
                "masks": masks, "affine": affine}
    return make


def _flip(axis):
    return lambda fsl, affine, ras: fsl * np.where(np.arange(3) == axis, -1.0, 1.0)


def _swap(a, b):
    order = [0, 1, 2]
    order[a], order[b] = b, a
    return lambda fsl, affine, ras: fsl[:, order]


def _world_as_fsl(frame):
    """The scanner's world vectors (RAS, or LPS as DICOM gives them) written where FSL's image frame belongs."""
    return lambda fsl, affine, ras: np.nan_to_num(ras) @ (LPS if frame == "LPS" else np.eye(3)).T


def _trace_appended(data, bvals, bvecs):
    trace = np.exp(np.log(np.maximum(data[..., bvals > 500], 1e-6)).mean(axis=-1))  # Siemens TRACEW
    return np.concatenate([data, trace[..., None]], -1), np.r_[bvals, 1000.0], np.r_[bvecs, np.zeros((1, 3))]


def _drift(data, bvals, bvecs):
    ramp = 1 + 0.03 * np.linspace(0, 1, data.shape[-1])  # 3 % signal drift over the series
    return data * ramp.astype(np.float32), bvals, bvecs


def _b0_as(b):
    def post(data, bvals, bvecs):
        bvals[bvals < 1] = b
        return data, bvals, bvecs
    return post


def _b0_scaled(factor):
    def change(data):
        data[..., 0] *= factor  # the reference has one b0, volume 0
        return data
    return change


def _interleaved():
    bv, bd = table(64)
    b0_at = [0, 17, 34, 51, 68]
    bvals, bvecs = np.zeros(69), np.zeros((69, 3))
    weighted = [i for i in range(69) if i not in b0_at]
    bvals[weighted], bvecs[weighted] = bv[1:], bd[1:]
    return bvals, bvecs


def _b0_last():
    bv, bd = table(64)
    return np.r_[bv[1:], 0.0], np.r_[bd[1:], np.zeros((1, 3))]


def _nex2():
    bv, bd = table(32)
    return np.r_[bv, bv[1:]], np.r_[bd, bd[1:]]


def _multishell(shells=(1000, 2000, 3000), n=30):
    parts = [table(n, b, n_b0=0, seed=7 + i) for i, b in enumerate(shells)]
    return np.r_[0.0, np.concatenate([p[0] for p in parts])], np.r_[np.zeros((1, 3)), np.concatenate([p[1] for p in parts])]


def _length_encodes_b(data, bvals, bvecs):
    """A 1000/2000 two-shell table written with b = 2000 for every DW volume and |g|^2 = b / 2000."""
    b_file = np.where(bvals > 50, 2000.0, 0.0)
    scaled = bvecs * np.sqrt(bvals / 2000.0)[:, None]
    return data, b_file, scaled


def _fsl_nonunit(bvals, bvecs, affine):
    return to_fsl(bvecs, affine)  # to_fsl is linear: the lengths stay


VARIANTS = {
    # name: (group, builder, what it is)
    "reference": ("reference", v_reference, "the 2.5 mm LAS phantom written and read back"),
    # storage: the same voxels in another order, FSL bvecs written for that storage
    "sagittal": ("storage", v_storage((1, 2, 0), (False, True, False)), "sagittal slices (axes y, z, x)"),
    "coronal": ("storage", v_storage((0, 2, 1), (False, True, False)), "coronal slices (axes x, z, y)"),
    "RAS": ("storage", v_storage((0, 1, 2), (True, False, False)), "RAS (positive determinant)"),
    "LPS": ("storage", v_storage((0, 1, 2), (False, True, False)), "LPS, DICOM order (positive determinant)"),
    "LPI": ("storage", v_storage((0, 1, 2), (False, True, True)), "LPI (negative determinant)"),
    "nrrd_LPS": ("storage", v_nrrd("left-posterior-superior"), "DWMRI NRRD, LPS space, identity frame"),
    "nrrd_RAS_frame30": ("storage", v_nrrd("right-anterior-superior", 30.0), "DWMRI NRRD, RAS, frame rotated 30°"),
    "nrrd_sagittal": ("storage", v_nrrd("left-posterior-superior", 20.0, ((1, 2, 0), (False, True, False))),
                      "DWMRI NRRD stored sagittally, frame rotated 20°"),
    # gradient-table errors
    "fsl_flip_x": ("gradients", v_fsl_error(_flip(0)), "FSL bvec: x row negated"),
    "fsl_flip_y": ("gradients", v_fsl_error(_flip(1)), "FSL bvec: y row negated"),
    "fsl_flip_z": ("gradients", v_fsl_error(_flip(2)), "FSL bvec: z row negated"),
    "fsl_swap_xy": ("gradients", v_fsl_error(_swap(0, 1)), "FSL bvec: x and y rows swapped"),
    "fsl_swap_yz": ("gradients", v_fsl_error(_swap(1, 2)), "FSL bvec: y and z rows swapped"),
    "fsl_swap_xz": ("gradients", v_fsl_error(_swap(0, 2)), "FSL bvec: x and z rows swapped"),
    "world_LPS_as_fsl": ("gradients", v_fsl_error(_world_as_fsl("LPS")), "DICOM (LPS world) vectors as .bvec"),
    "world_RAS_as_fsl_on_LPS": ("gradients", v_fsl_error(_world_as_fsl("RAS"), ((0, 1, 2), (False, True, False))),
                                "RAS world vectors as .bvec of an LPS-stored image"),
    "world_RAS_as_fsl_oblique": ("resolution", v_resolution((2.5,) * 3, rotation_deg=18.0,
                                                            fsl_error=_world_as_fsl("RAS")),
                                 "RAS world vectors as .bvec of an oblique (18°) image"),
    "nrrd_no_frame_sagittal": ("gradients", v_nrrd_no_frame(((1, 2, 0), (False, True, False))),
                               "DWMRI NRRD, sagittal, image-frame gradients, no measurement frame"),
    # acquisition: other tables (re-simulated)
    "b0_interleaved": ("acquisition", v_table(_interleaved), "5 b0s interleaved with 64 directions"),
    "b0_last": ("acquisition", v_table(_b0_last), "the b0 stored last"),
    "b0_as_b5": ("acquisition", v_table(lambda: table(64), _b0_as(5.0)), "the b0 stored as b = 5"),
    "b0_as_b50": ("acquisition", v_table(lambda: (np.r_[50.0, table(64)[0][1:]], np.r_[[[0.6, 0.64, 0.48]],
                                                                                     table(64)[1][1:]])),
                  "the 'b0' acquired at b = 50 (a direction given)"),
    "b0_drift": ("acquisition", v_table(_interleaved, _drift), "5 interleaved b0s, 3 % signal drift"),
    "trace_appended": ("acquisition", v_table(lambda: table(64), _trace_appended),
                       "a trace-weighted (isotropic) volume, bvec 0 at b = 1000, appended"),
    "nex2_32": ("acquisition", v_table(_nex2), "32 directions acquired twice"),
    "full_sphere_64": ("acquisition", v_table(lambda: table(64, full_sphere=True)), "64 over the full sphere"),
    "hemisphere_30": ("acquisition", v_table(lambda: (np.r_[0.0, np.full(30, 1000.0)],
                                                      np.r_[np.zeros((1, 3)), canonical_directions(30)])),
                      "30 directions, one hemisphere, unrotated"),
    "dirs_6": ("acquisition", v_table(lambda: table(6)), "6 directions (through a tensor)"),
    "dirs_6_siemens": ("acquisition", v_table(lambda: scheme_table("siemens6")), "Siemens' 6-direction set (tensor)"),
    "dirs_12": ("acquisition", v_table(lambda: table(12)), "12 directions (through a tensor)"),
    "dirs_13": ("acquisition", v_table(lambda: table(13)), "13 directions (through a tensor)"),
    "dirs_20": ("acquisition", v_table(lambda: table(20)), "20 directions"),
    "dirs_30": ("acquisition", v_table(lambda: table(30)), "30 directions"),
    "b700": ("acquisition", v_table(lambda: table(64, 700.0)), "b = 700"),
    "b800": ("acquisition", v_table(lambda: table(64, 800.0)), "b = 800"),
    "b1300": ("acquisition", v_table(lambda: table(64, 1300.0)), "b = 1300"),
    "multishell": ("acquisition", v_table(_multishell), "0/1000/2000/3000, 30 directions each"),
    "bvec_length_encodes_b": ("acquisition", v_table(lambda: _multishell((1000, 2000)), _length_encodes_b,
                                                     fsl_bvecs=_fsl_nonunit),
                              "1000/2000 shells as bval 2000 everywhere, |g|^2 = b/2000 (FSL files)"),
    "nrrd_scaled_multishell": ("acquisition", v_table(lambda: _multishell((1000, 2000)), nrrd=True),
                               "1000/2000 shells in a DWMRI NRRD (scaled gradients)"),
    # intensity storage
    "int16_slope": ("intensity", v_data(lambda d: d, dtype="int16", slope=1e-4), "int16 with scl_slope 1e-4"),
    "x10": ("intensity", v_data(lambda d: d * 10), "intensities x 10"),
    "x0.01": ("intensity", v_data(lambda d: d * 0.01), "intensities x 0.01"),
    "offset_0.05": ("intensity", v_data(lambda d: d + 0.05), "an offset of 5 % of the WM b0"),
    "offset_0.1": ("intensity", v_data(lambda d: d + 0.1), "an offset of 10 % of the WM b0"),
    "b0_x0.8": ("intensity", v_data(_b0_scaled(0.8)), "the b0 stored x 0.8 relative to the DW volumes"),
    "b0_x1.25": ("intensity", v_data(_b0_scaled(1.25)), "the b0 stored x 1.25"),
    "b0_x2": ("intensity", v_data(_b0_scaled(2.0)), "the b0 stored x 2"),
    "snr10": ("intensity", v_snr(10.0), "Rician noise, b0 SNR 10"),
    "snr20": ("intensity", v_snr(20.0), "b0 SNR 20"),
    "snr40": ("intensity", v_snr(40.0), "b0 SNR 40"),
    "cut_top_20": ("intensity", v_cut_top(0.2), "the top 20 % of the brain outside the field of view"),
    "cut_top_30": ("intensity", v_cut_top(0.3), "the top 30 % cut"),
    "off_centre_fov": ("intensity", v_pad((60, 5, 30), (5, 60, 10), True), "brain off-centre in a 124x138x102 FOV"),
    "zero_padded": ("intensity", v_pad((20, 20, 20), (20, 20, 20), False), "20 voxels of zeros on every side"),
    # resolution (from the 1 mm object)
    "res_2.5iso": ("resolution", v_resolution((2.5, 2.5, 2.5)), "2.5 mm isotropic from the 1 mm object (reference)"),
    "res_1iso": ("resolution", v_resolution((1.0, 1.0, 1.0)), "1 mm isotropic"),
    "res_3iso": ("resolution", v_resolution((3.0, 3.0, 3.0)), "3 mm isotropic"),
    "res_2x2x5": ("resolution", v_resolution((2.0, 2.0, 5.0)), "2 x 2 x 5 mm"),
    "res_1x1x6_gap": ("resolution", v_resolution((1.0, 1.0, 6.0), (1.0, 1.0, 5.0)), "1 x 1 mm, 5 mm slices every 6"),
    "res_oblique18": ("resolution", v_resolution((2.5, 2.5, 2.5), rotation_deg=18.0), "2.5 mm, oblique 18°"),
}


# --- running and comparing ----------------------------------------------------------------------------------
def run_variant(ctx: Context, name: str, work: Path) -> list[dict]:
    from BBBAnomalyLib.dmri import DMRIParameters, read_dwi, run_dmri
    from BBBAnomalyLib.metrics import dice, roc_auc

    group, builder, what = VARIANTS[name]
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    rows = []
    try:
        built = builder(ctx, folder)
        dwi = read_dwi(built["path"])
        read_error = None
    except InputError as exc:
        built, dwi, read_error = {}, None, str(exc)
    resolution = group == "resolution"
    for model in MODELS:
        row = {"variant": name, "group": group, "what": what, "model": model, "storage": built.get("storage", "")}
        if read_error:
            rows.append({**row, "status": "refused", "message": read_error})
            continue
        try:
            result = run_dmri(dwi, DMRIParameters(model=model, device="cpu"))
        except InputError as exc:
            rows.append({**row, "status": "refused", "message": str(exc)})
            continue
        if resolution:
            ref_affine, ref_masks = ctx.res_ref["affine"], ctx.res_ref["masks"]
        else:
            ref_affine, ref_masks = ctx.ref.dwi.affine, ctx.ref_masks()
        shape = ref_masks["brain"].shape
        anomaly = onto(result.maps["anomaly"].data, dwi.affine, ref_affine, shape)
        flagged = onto(result.maps["anomaly_mask"].data.astype(np.float32), dwi.affine, ref_affine, shape) >= 0.5
        analysed = onto(result.brain_mask.astype(np.float32), dwi.affine, ref_affine, shape) >= 0.5
        region = ref_masks["gm_wm"] & analysed
        truth = ref_masks["tumor"]
        row.update(status="ran", auc=roc_auc(truth[region], anomaly[region]),
                   dice=dice(flagged[region], truth[region]),
                   volume_ml=result.report["summary"]["anomaly_volume_ml"],
                   nawm_flagged=float(flagged[ref_masks["nawm"] & analysed].mean()),
                   warnings=[w for w in result.report["warnings"] if "research option" not in w],
                   shell=result.report["input"], gradient_check=result.report.get("gradient_orientation"),
                   applicability={c["name"]: c["status"] for c in result.report["applicability"]["checks"]}
                   if isinstance(result.report.get("applicability"), dict) and "checks" in result.report["applicability"]
                   else None)
        row["_maps"] = (anomaly, analysed)
        rows.append(row)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def onto(values, affine, ref_affine, shape, order=1):
    """A map on its own grid, sampled at the reference grid's voxel centres."""
    if values.shape == tuple(shape) and np.allclose(affine, ref_affine, atol=1e-4):
        return values
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    coords = (np.linalg.inv(affine) @ ref_affine @ np.r_[ijk, np.ones((1, ijk.shape[1]))])[:3]
    return ndimage.map_coordinates(np.asarray(values, np.float32), coords, order=order, mode="constant",
                                   cval=0.0).reshape(shape)


def correlate(rows: list[dict], reference: dict, brain: np.ndarray) -> None:
    for row in rows:
        if row.get("status") != "ran" or row["model"] not in reference:
            continue
        anomaly, analysed = row["_maps"]
        ref_anomaly, ref_analysed = reference[row["model"]]
        both = brain & analysed & ref_analysed
        row["r"] = float(np.corrcoef(anomaly[both], ref_anomaly[both])[0, 1])


def verdict(row: dict, ref: dict | None) -> str:
    if row["status"] != "ran":
        return "refused"
    if ref is None or row is ref:
        return "reference"
    changed = (row.get("r", 1) < 0.95 or abs(row["auc"] - ref["auc"]) > 0.02 or abs(row["dice"] - ref["dice"]) > 0.1
               or abs(row["volume_ml"] - ref["volume_ml"]) > 0.25 * max(ref["volume_ml"], 4.0)
               or row["nawm_flagged"] > ref["nawm_flagged"] + 0.01)
    if not changed:
        return "same" + (" (warned)" if row["warnings"] else "")
    return "changed, warned" if row["warnings"] else "CHANGED, SILENT"


def table_markdown(rows: list[dict]) -> str:
    refs = {(r["model"], r["group"] == "resolution"): r for r in rows
            if r["variant"] in ("reference", "res_2.5iso") and r.get("status") == "ran"}
    lines = ["| variant | model | r | AUC | Dice | anomaly ml | NAWM flagged | verdict | warnings / refusal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = refs.get((r["model"], r["group"] == "resolution"))
        if r.get("status") != "ran":
            lines.append(f"| {r['variant']} | {r['model']} | | | | | | refused | {r['message'][:160]} |")
            continue
        words = "; ".join(w[:110] for w in r["warnings"])
        lines.append(f"| {r['variant']} | {r['model']} | {r.get('r', float('nan')):.3f} | {r['auc']:.3f} | "
                     f"{r['dice']:.2f} | {r['volume_ml']:.1f} | {100 * r['nawm_flagged']:.2f} % | "
                     f"{verdict(r, ref)} | {words} |")
    return "\n".join(lines)


def audit(args) -> None:
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "runs.json"
    stored = json.loads(store.read_text()) if store.is_file() else {}
    ctx = Context(args.seed)
    names = [n for n in VARIANTS if n not in ("reference", "res_2.5iso") and (not args.variants or n in args.variants)
             and (not args.groups or VARIANTS[n][0] in args.groups)]
    work = out / "work"
    reference: dict = {}
    res_reference: dict = {}
    need_res = any(VARIANTS[n][0] == "resolution" for n in names)  # the 1 mm object: 4 GB, ~1 min
    names = ["reference"] + (["res_2.5iso"] if need_res else []) + names
    for name in names:
        t0 = time.time()
        if name == "res_2.5iso":
            _, builder, _ = VARIANTS[name]
            built = builder(ctx, work / "_res_ref")
            ctx.res_ref = {"affine": built["affine"], "masks": built["masks"]}
            shutil.rmtree(work / "_res_ref", ignore_errors=True)
        if name in stored and not args.again and name not in ("reference", "res_2.5iso"):
            continue
        rows = run_variant(ctx, name, work)
        if name == "reference":
            reference = {r["model"]: r["_maps"] for r in rows if r["status"] == "ran"}
        if name == "res_2.5iso":
            res_reference = {r["model"]: r["_maps"] for r in rows if r["status"] == "ran"}
        brain = ctx.res_ref["masks"]["brain"] if VARIANTS[name][0] == "resolution" else ctx.ref.masks["brain"]
        correlate(rows, res_reference if VARIANTS[name][0] == "resolution" else reference, brain)
        for r in rows:
            r.pop("_maps", None)
        stored[name] = rows
        store.write_text(json.dumps(stored, indent=1, default=float))
        print(f"{name}: {time.time() - t0:.0f} s " + "; ".join(
            f"{r['model']} " + (f"r {r.get('r', 1):.3f} AUC {r['auc']:.3f} Dice {r['dice']:.2f} vol {r['volume_ml']:.0f}"
                                f" NAWM {100 * r['nawm_flagged']:.2f} % warn {len(r['warnings'])}"
                                if r["status"] == "ran" else f"refused: {r['message'][:100]}") for r in rows),
              flush=True)
    shutil.rmtree(work, ignore_errors=True)
    write_table(out, stored)


def write_table(out: Path, stored: dict) -> None:
    rows = [r for name in VARIANTS if name in stored for r in stored[name]]
    text = table_markdown(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)


# --- the gradient-orientation check's calibration: bundle phantoms ------------------------------------------------
def bundle_phantom(seed: int, voxel=(2.5, 2.5, 2.5), snr: float = 30.0, tab=None, rotation_deg: float = 0.0,
                   size_mm=(110.0, 110.0, 80.0), n_tubes: int = 28):
    """Tubes of white matter (FA 0.75 tensors along each tube's axis; straight segments and circular arcs, radius
    3-7 mm, random orientations, later tubes over earlier ones where they cross) in isotropic tissue (MD 0.85
    µm²/ms), Rician noise at a b0 SNR. Fibres here run ALONG the bundles that hold them, as in a brain and unlike
    the brain phantom's smooth field. Returns a Volume (RAS gradients) stored ``rotation_deg`` oblique."""
    rng = np.random.default_rng(seed)
    a = np.radians(rotation_deg)
    rot = (np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
           @ np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]]))
    half = np.asarray(size_mm) / 2
    affine, shape = grid_for(-half, half, voxel, rot)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    points = (affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    inside = np.all(np.abs(points) <= half - 4, axis=1)
    fibre = np.zeros((len(points), 3))
    wm = np.zeros(len(points), bool)
    for _ in range(n_tubes):
        radius = rng.uniform(3.0, 7.0)
        centre = rng.uniform(-half + 10, half - 10)
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        if rng.random() < 0.6:  # a straight segment
            rel = points - centre
            along = rel @ axis
            dist = np.linalg.norm(rel - along[:, None] * axis, axis=1)
            hit = (dist <= radius) & (np.abs(along) <= rng.uniform(25, 60))
            tangent = np.broadcast_to(axis, points.shape)
        else:  # an arc of a circle of radius R in the plane normal to ``axis``
            big = rng.uniform(20.0, 40.0)
            u = np.cross(axis, [1.0, 0, 0] if abs(axis[0]) < 0.9 else [0, 1.0, 0])
            u /= np.linalg.norm(u)
            v = np.cross(axis, u)
            rel = points - centre
            x, y, h = rel @ u, rel @ v, rel @ axis
            rho = np.hypot(x, y)
            angle = np.arctan2(y, x)
            dist = np.hypot(rho - big, h)
            hit = (dist <= radius) & (np.abs(angle) <= rng.uniform(1.0, 2.2))
            tangent = (-np.sin(angle))[:, None] * u + np.cos(angle)[:, None] * v
        hit &= inside
        fibre[hit] = tangent[hit]
        wm |= hit
    bvals, bvecs = tab if tab is not None else table(64, seed=seed + 100)
    signal = np.where(wm[:, None],
                      phys.tensor_signal(bvals, bvecs, np.full(len(points), 1.7e-3), np.full(len(points), 0.35e-3),
                                         np.where(wm[:, None], fibre, [[1.0, 0, 0]])),
                      phys.tensor_signal(bvals, bvecs, None, np.full(len(points), 0.85e-3)))
    signal = signal * inside[:, None]
    data = phys.rician(signal.reshape(tuple(shape) + (bvals.size,)).astype(np.float32), 1.0 / snr, rng)
    from BBBAnomalyLib.core.volume import Acquisition

    return Volume(data, affine, None, Acquisition(bvals=bvals, bvecs=bvecs))


def orientation_errors(affine) -> dict:
    """name -> (function of FSL rows, or None for an error given as a RAS-frame matrix) for the calibration."""
    return {"correct": lambda f, a, r: f, "flip_x": _flip(0), "flip_y": _flip(1), "flip_z": _flip(2),
            "swap_xy": _swap(0, 1), "swap_yz": _swap(1, 2), "swap_xz": _swap(0, 2),
            "world_RAS_as_fsl": _world_as_fsl("RAS"), "world_LPS_as_fsl": _world_as_fsl("LPS")}


def orientation_case(dwi: Volume, error_name: str) -> dict:
    """The check on ``dwi`` with its FSL table spoiled by ``error_name``: gain, named candidate, whether the named
    candidate undoes the error."""
    import dataclasses

    from BBBAnomalyLib.dmri import gradient_check as gc
    from BBBAnomalyLib.dmri.gradients import to_ras
    from BBBAnomalyLib.dmri.preprocessing import ModelInput, prepare

    acq = dwi.acquisition
    fsl = orientation_errors(dwi.affine)[error_name](to_fsl(acq.bvecs, dwi.affine), dwi.affine, acq.bvecs)
    used = to_ras(fsl, dwi.affine, "fsl")
    spoiled = Volume(dwi.data, dwi.affine, None, dataclasses.replace(acq, bvecs=used))
    spec = ModelInput.default()
    prepared = prepare(spoiled, spec, keep_signal=True)
    fa, e1 = gc.principal_directions(prepared.signal, spec.directions, spec.b_value)
    check = gc.check_orientation(fa, e1, prepared.brain, dwi.affine)
    # the error as a RAS matrix E (used = E true) from the shell's directions, and whether M_best undoes it
    weighted = acq.bvals > 50
    error = np.linalg.lstsq(acq.bvecs[weighted], used[weighted], rcond=None)[0].T
    frames = dict(gc.candidate_frames(dwi.affine))
    best = frames.get(check.best_label, np.eye(3))
    product = best @ error
    undone = bool(np.allclose(product, np.eye(3), atol=1e-3) or np.allclose(product, -np.eye(3), atol=1e-3))
    return {"error": error_name, "voxels": check.voxels, "given": check.given, "best": check.best,
            "gain": (check.best / check.given) if check.given else None, "best_label": check.best_label,
            "undoes_error": undone, "warned": check.warning is not None}


def orientation_calibration(which: str, out: Path) -> None:
    settings = []
    if which == "dev":
        for seed in range(4):
            settings.append((f"bundle {seed} 2.5mm SNR30 64dir LAS", bundle_phantom(seed)))
        for seed in (1000, 1001):
            settings.append((f"brain phantom {seed}", patient(seed).dwi))
        names = ["correct", "flip_x", "flip_y", "flip_z", "swap_xy", "swap_yz", "swap_xz"]
    else:
        for seed in range(10, 18):
            kind = seed % 4
            if kind == 0:
                settings.append((f"bundle {seed} oblique 18", bundle_phantom(seed, rotation_deg=18.0)))
            elif kind == 1:
                settings.append((f"bundle {seed} 2x2x5", bundle_phantom(seed, voxel=(2.0, 2.0, 5.0))))
            elif kind == 2:
                settings.append((f"bundle {seed} SNR15", bundle_phantom(seed, snr=15.0, rotation_deg=15.0)))
            else:
                settings.append((f"bundle {seed} 30 dirs", bundle_phantom(seed, tab=table(30, seed=seed),
                                                                          rotation_deg=-16.0)))
        names = list(orientation_errors(np.eye(4)))
    rows = []
    for label, dwi in settings:
        for name in (names if label.startswith("bundle") else ["correct"] + ([] if which == "held" else names[1:])):
            row = {"setting": label, **orientation_case(dwi, name)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if which == "held":
        from BBBAnomalyLib.dmri import read_dwi

        for seed in range(3000, 3006):
            row = {"setting": f"brain phantom {seed}", **orientation_case(patient(seed).dwi, "correct")}
            rows.append(row)
            print(json.dumps(row), flush=True)
        crop = read_dwi(REPO / "Testing" / "Data" / "dmri" / "small_64D.nii.gz")
        row = {"setting": "dipy real crop", **orientation_case(crop, "correct")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"orientation_{which}.json").write_text(json.dumps(rows, indent=1, default=float))


# --- clinical DTI with 6-14 directions: the tensor path against the 64-direction run (session 20) -----------------
def scheme(name: str) -> np.ndarray:
    """RAS unit directions of a standard scheme: 'jones6' (the icosahedron's 6 axes: Jones et al. 1999's optimum,
    the electrostatic 6), 'siemens6' (the (1,0,1)-type set of Siemens' 6-direction DTI), 'electrostaticN'
    (canonical_directions(N): electrostatic repulsion with antipodes, as Jones' and the vendors' N-direction sets)."""
    if name == "jones6":
        phi = (1 + 5 ** 0.5) / 2
        g = np.array([[0, 1, phi], [0, -1, phi], [1, phi, 0], [-1, phi, 0], [phi, 0, 1], [phi, 0, -1]], float)
    elif name == "siemens6":
        g = np.array([[1, 0, 1], [-1, 0, 1], [0, 1, 1], [0, 1, -1], [1, 1, 0], [-1, 1, 0]], float)
    else:
        g = canonical_directions(int(name.removeprefix("electrostatic")))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def scheme_table(name: str, seed: int = 7):
    g = scheme(name)
    rng = np.random.default_rng(seed)
    return np.r_[0.0, 1000.0 * (1 + 0.01 * rng.uniform(-1, 1, len(g)))], np.r_[np.zeros((1, 3)), g]


@contextlib.contextmanager
def resampling_forced(path: str | None, floor: float | None = None):
    """``path`` 'tensor' / 'sh': every shell resampled that way (None: the pipeline's choice); ``floor``: the tensor
    path's log floor (None: tensor_resampling.LOG_FLOOR)."""
    from BBBAnomalyLib.dmri import gradients, tensor_resampling

    saved = gradients.SH_MIN_DIRECTIONS, tensor_resampling.LOG_FLOOR
    if path is not None:
        gradients.SH_MIN_DIRECTIONS = 10 ** 6 if path == "tensor" else 1
    if floor is not None:
        tensor_resampling.LOG_FLOOR = floor
    try:
        yield
    finally:
        gradients.SH_MIN_DIRECTIONS, tensor_resampling.LOG_FLOOR = saved


def few_directions_compare(p, reference, model: str, path=None, floor=None) -> dict:
    """RecDiscNet's (or the VAE's) map of phantom patient ``p`` against ``reference`` (the same patient's 64-direction
    run: its result): r in the brain, tumour AUC and Dice inside GM+WM, as in run_variant."""
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.metrics import dice, roc_auc

    params = DMRIParameters(model=model, device="cpu", min_directions=6)
    with resampling_forced(path, floor):
        result = run_dmri(p.dwi, params)
        used = result.report["input"]["resampling"]
    out = {}
    for label, res in (("run", result), ("ref", reference)):
        region = p.masks["gm_wm"] & res.brain_mask
        truth = p.masks["tumor"]
        anomaly = res.maps["anomaly"].data
        out[label] = {"auc": roc_auc(truth[region], anomaly[region]),
                      "dice": dice(res.maps["anomaly_mask"].data[region] > 0, truth[region]),
                      "volume_ml": res.report["summary"]["anomaly_volume_ml"]}
    both = p.masks["brain"] & result.brain_mask & reference.brain_mask
    r = float(np.corrcoef(result.maps["anomaly"].data[both], reference.maps["anomaly"].data[both])[0, 1])
    return {"r": r, "auc": out["run"]["auc"], "dice": out["run"]["dice"], "volume_ml": out["run"]["volume_ml"],
            "d_auc": out["run"]["auc"] - out["ref"]["auc"], "d_dice": out["run"]["dice"] - out["ref"]["dice"],
            "resampling": used,
            "warned": any("diffusion tensor" in w for w in result.report["warnings"])}


FEW_SCHEMES = ("jones6", "siemens6", "electrostatic12", "electrostatic13", "electrostatic14")
SH_RANGE = ("electrostatic15", "electrostatic20", "electrostatic27", "electrostatic30")


def few_directions(which: str, out: Path) -> None:
    """``dev``: patients 1000-1001, SNR 20/30/40, the log floor 0.001/0.01/0.03; ``held``: patients 3100-3105 (never
    looked at before the rule in /work/notes/s20/dmri_few_directions.md), SNR 20/30/40, both models; ``sh``: the
    tensor path against spherical harmonics at 15-30 directions (patients 3100-3105, SNR 30)."""
    import torch

    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri

    seeds = {"dev": (1000, 1001), "held": tuple(range(3100, 3106)), "sh": tuple(range(3100, 3106))}[which]
    snrs = (30.0,) if which == "sh" else (20.0, 30.0, 40.0)
    models = ("recdisc", "vae") if which == "held" else ("recdisc",)
    torch.set_num_threads(1)
    rows = []
    for seed in seeds:
        for snr in snrs:
            p64 = patient(seed, snr=snr)
            # the 64 runs' own spread: the same noise draws, another 64-direction table
            cases = [("64 again", patient(seed, scheme_table("electrostatic64"), snr=snr), None, None)]
            if which == "sh":
                for name in SH_RANGE + ("electrostatic64",):
                    p = patient(seed, scheme_table(name), snr=snr)
                    cases += [(name + " sh", p, "sh", None), (name + " tensor", p, "tensor", None)]
            else:
                for name in FEW_SCHEMES:
                    p = patient(seed, scheme_table(name), snr=snr)
                    for floor in ((0.001, 0.01, 0.03) if which == "dev" else (None,)):
                        cases.append((name + ("" if floor is None else f" floor {floor:g}"), p, None, floor))
            for model in models:
                reference = run_dmri(p64.dwi, DMRIParameters(model=model, device="cpu"))
                for label, p, path, floor in cases:
                    row = {"seed": seed, "snr": snr, "model": model, "case": label,
                           **few_directions_compare(p, reference, model, path, floor)}
                    rows.append(row)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"few_directions_{which}.json").write_text(json.dumps(rows, indent=1, default=float))


def few_directions_crop(out: Path) -> None:
    """dipy's real 10³ crop (1 b0 + 64 directions at b ≈ 1000): the canonical S/S0 from subsets (the acquired
    direction nearest each direction of a scheme) against the one from all 64 (order-6 SH)."""
    import dataclasses

    from BBBAnomalyLib.dmri import read_dwi
    from BBBAnomalyLib.dmri.preprocessing import ModelInput, prepare

    crop = read_dwi(REPO / "Testing" / "Data" / "dmri" / "small_64D.nii.gz")
    acq = crop.acquisition
    weighted = np.flatnonzero(acq.bvals > 150)
    spec = ModelInput.default()
    full = prepare(crop, spec, keep_signal=True, min_directions=6).signal
    rows = []
    for name in FEW_SCHEMES + SH_RANGE + ("electrostatic32", "electrostatic64"):
        g = scheme(name)
        cos = np.abs(g @ (acq.bvecs[weighted] / np.linalg.norm(acq.bvecs[weighted], axis=1, keepdims=True)).T)
        picked = []
        for row in cos:  # nearest acquired direction not taken yet
            order = [i for i in np.argsort(-row) if i not in picked]
            picked.append(order[0])
        keep = np.r_[np.flatnonzero(acq.bvals <= 150), weighted[picked]]
        sub = Volume(crop.data[..., keep], crop.affine, None,
                     dataclasses.replace(acq, bvals=acq.bvals[keep], bvecs=acq.bvecs[keep]))
        for path in (("sh", "tensor") if len(g) >= 15 else (None,)):
            with resampling_forced(path):
                prepared = prepare(sub, spec, keep_signal=True, min_directions=6)
                used = prepared.shell.resampling
            diff = prepared.signal - full
            row = {"scheme": name, "resampling": used, "n": len(g),
                   "worst_angle_deg": float(np.degrees(np.arccos(np.clip(cos[np.arange(len(g)), picked], 0, 1))).max()),
                   "rms": float(np.sqrt((diff ** 2).mean())), "median_abs": float(np.median(np.abs(diff))),
                   "mean_bias": float(diff.mean()), "p95_abs": float(np.quantile(np.abs(diff), 0.95))}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "few_directions_crop.json").write_text(json.dumps(rows, indent=1, default=float))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--groups", nargs="*", choices=["storage", "gradients", "acquisition", "intensity",
                                                          "resolution"])
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS))
    parser.add_argument("--again", action="store_true", help="rerun variants already in runs.json")
    parser.add_argument("--table", action="store_true", help="print the table of the stored runs")
    parser.add_argument("--orientation-check", choices=["dev", "held"])
    parser.add_argument("--few-directions", choices=["dev", "held", "sh", "crop"],
                        help="6-14 directions through a tensor against the 64-direction run (session 20)")
    args = parser.parse_args(argv)
    if args.few_directions:
        (few_directions_crop(Path(args.out)) if args.few_directions == "crop"
         else few_directions(args.few_directions, Path(args.out)))
        return 0
    if args.orientation_check:
        orientation_calibration(args.orientation_check, Path(args.out))
        return 0
    if args.table:
        write_table(Path(args.out), json.loads((Path(args.out) / "runs.json").read_text()))
        return 0
    audit(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
