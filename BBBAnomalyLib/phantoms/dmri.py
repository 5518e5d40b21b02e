"""Diffusion-MRI phantoms on real anatomy: healthy subjects and glioma patients with ground truth.

Anatomy: the shipped MNI152 2 mm CSF/GM/WM fractions, moved by a random similarity transform per
subject (rotation ±8°, scaling ±6 % per axis, shift ±4 mm) and sampled on a LAS grid of
``voxel_mm``. Tissue (:mod:`.dmri_physics`): WM tensors along a smooth orientation field with a
per-subject perturbation, isotropic GM and CSF, subject-to-subject diffusivity (±4 %) and
WM radial diffusivity (±8 %) variation, a smooth receive-bias field, Rician noise at a b0 SNR.

Patients add a tumor unlike the training anomalies (which are ellipsoids of random S/S0 values):
an irregular ellipsoidal lesion with a core (necrotic centre with a cellular rim, or solid
cellular tissue; it replaces the tissue), vasogenic edema (WM radial diffusivity ×2.2–3, GM MD
×1.5, T2 rise) and an infiltration band whose diffusivity and anisotropy change fades linearly to
nothing (WM λ⊥ up to ×1.8, λ∥ down to ×0.9). Labels: 1 core, 2 edema, 3 infiltration (where
the change is at least a quarter of its maximum). No mass effect, no haemorrhage, one lesion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.volume import Acquisition, Volume
from . import dmri_physics as phys
from .anatomy import load_anatomy


@dataclass
class DMRIPhantomParameters:
    voxel_mm: float = 2.5
    n_directions: int = 64
    n_b0: int = 1
    b_value: float = 1000.0
    snr: float = 30.0  # b0 white-matter signal / noise sigma
    max_rotation_deg: float = 8.0
    max_scale: float = 0.06
    max_shift_mm: float = 4.0
    diffusivity_sd: float = 0.04
    tumor: bool = False


@dataclass
class DMRIPhantom:
    dwi: Volume  # (x, y, z, n) magnitude signal; acquisition.bvals and .bvecs (RAS)
    masks: dict[str, np.ndarray]  # brain, gm_wm, wm, nawm [, tumor, core, edema, infiltration]
    truth: dict[str, Volume]  # md, fa (signal-fraction weighted), labels (0 healthy, 1 core, 2 edema, 3 infiltration)
    info: dict = field(default_factory=dict)

    def write(self, folder: str | Path) -> Path:
        """dwi.nii.gz + dwi.bval + dwi.bvec (FSL convention), mask_<name>.nii.gz, truth_<name>.nii.gz.
        This is the case layout `bbbanomaly train dmri-*` reads."""
        import dataclasses

        from ..dmri.gradients import to_fsl
        from ..io import write_volume

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        acq = dataclasses.replace(self.dwi.acquisition, bvecs=to_fsl(self.dwi.acquisition.bvecs, self.dwi.affine))
        scaled = np.clip(np.round(self.dwi.data * 1000.0), 0, 32767).astype(np.int16)  # scanner-like integers
        write_volume(Volume(scaled, self.dwi.affine, None, acq), folder / "dwi.nii.gz")
        for name, mask in self.masks.items():
            write_volume(Volume(mask.astype(np.uint8), self.dwi.affine), folder / f"mask_{name}.nii.gz")
        for name, vol in self.truth.items():
            write_volume(vol, folder / f"truth_{name}.nii.gz")
        return folder


def make_dmri_phantom(seed: int = 0, params: DMRIPhantomParameters | None = None, anatomy=None,
                      **overrides) -> DMRIPhantom:
    """One healthy subject (or a patient with ``tumor=True``); everything random comes from ``seed``.
    ``anatomy``: another :class:`.anatomy.Anatomy` in MNI space (e.g. ICBM 2009a or Colin27 from
    scripts/normal_templates.py); default the shipped MNI152 one."""
    import dataclasses

    params = dataclasses.replace(params or DMRIPhantomParameters(), **overrides)
    rng = np.random.default_rng(seed)
    anatomy = anatomy if anatomy is not None else load_anatomy()
    v = params.voxel_mm
    extent = (np.array(anatomy.shape) - 1) * 2.0
    shape = tuple(int(n) for n in np.floor(extent / v).astype(int) + 1)
    affine = np.diag([-v, v, v, 1.0])
    affine[:3, 3] = anatomy.affine[:3, 3]
    # random similarity transform about the brain centre: world p = c + R S (q - c) + t
    centre = (anatomy.affine @ np.r_[np.argwhere(anatomy.brain).mean(axis=0), 1.0])[:3]
    rotation = phys.random_rotation(rng, params.max_rotation_deg)
    scale = 1 + rng.uniform(-params.max_scale, params.max_scale, 3)
    shift = rng.uniform(-params.max_shift_mm, params.max_shift_mm, 3)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = (affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    mni = centre + ((world - centre - shift) @ rotation) / scale  # inverse transform, row vectors
    anat_index = (np.linalg.inv(anatomy.affine) @ np.c_[mni, np.ones(len(mni))].T)[:3]
    fractions = np.stack([ndimage.map_coordinates(anatomy.fractions[..., c], anat_index, order=1, mode="constant")
                          for c in range(3)], -1).reshape(shape + (3,)).astype(np.float32)
    weight = fractions.sum(-1)
    brain = ndimage.binary_fill_holes(weight >= 0.5)
    fractions = np.where(brain[..., None], fractions / np.maximum(weight, 1e-6)[..., None], 0.0).astype(np.float32)
    voxels = np.argwhere(brain)
    flat = np.ravel_multi_index(voxels.T, shape)
    f_csf, f_gm, f_wm = (fractions[brain][:, c].astype(np.float64) for c in range(3))
    orientation = phys.orientation_field(mni[flat], rng, shape, voxels, v) @ rotation.T

    n = len(voxels)
    global_scale = 1 + params.diffusivity_sd * rng.standard_normal()
    wm_axial = np.full(n, phys.WM_AXIAL * global_scale)
    wm_radial = np.full(n, phys.WM_RADIAL * global_scale * (1 + 2 * params.diffusivity_sd * rng.standard_normal()))
    gm_md = np.full(n, phys.GM_MD * global_scale)
    s0_wm, s0_gm = np.full(n, phys.S0["wm"]), np.full(n, phys.S0["gm"])
    f_core, core_md, core_s0 = np.zeros(n), np.zeros(n), np.zeros(n)
    labels = np.zeros(n, np.uint8)
    info = {"seed": seed, "rotation_deg": float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))),
            "scale": scale.tolist(), "shift_mm": shift.tolist(), "diffusivity_scale": float(global_scale)}
    if params.tumor:
        lesion = _lesion(rng, brain, voxels, world[flat], f_wm, v)
        info["tumor"] = lesion.pop("info")
        core, edema, g = lesion["core"], lesion["edema"], lesion["infiltration"]
        f_core[core] = 1.0
        core_md[core], core_s0[core] = lesion["core_md"], lesion["core_s0"]
        wm_radial[edema] *= rng.uniform(2.2, 3.0)
        wm_axial[edema] *= 1.15
        gm_md[edema] *= 1.5
        s0_wm[edema] *= 1.35
        s0_gm[edema] *= 1.35
        wm_radial *= 1 + 0.8 * g
        wm_axial *= 1 - 0.1 * g
        gm_md *= 1 + 0.15 * g
        s0_wm *= 1 + 0.1 * g
        s0_gm *= 1 + 0.1 * g
        labels[g >= 0.25] = 3
        labels[edema] = 2
        labels[core] = 1

    bvals, bvecs = phys.gradient_table(params.n_directions, rng, params.b_value, params.n_b0)
    keep = 1 - f_core
    signal = ((keep * f_wm * s0_wm)[:, None] * phys.tensor_signal(bvals, bvecs, wm_axial, wm_radial, orientation)
              + (keep * f_gm * s0_gm)[:, None] * phys.tensor_signal(bvals, bvecs, gm_md, gm_md)
              + (keep * f_csf * phys.S0["csf"])[:, None] * phys.tensor_signal(bvals, bvecs, None, np.full(n, phys.CSF_MD))
              + (f_core * core_s0)[:, None] * phys.tensor_signal(bvals, bvecs, core_md, core_md))
    bias = _bias_field(rng, shape, v)[brain]
    sigma = phys.S0["wm"] / params.snr
    data = np.zeros(shape + (bvals.size,), np.float32)
    data[brain] = signal * bias[:, None]
    data = phys.rician(data, sigma, rng)  # background gets noise too, as in a magnitude image

    md = keep * (f_wm * (wm_axial + 2 * wm_radial) / 3 + f_gm * gm_md + f_csf * phys.CSF_MD) + f_core * core_md
    fa = keep * f_wm * phys.fractional_anisotropy(wm_axial, wm_radial)
    masks = {"brain": brain, "gm_wm": _scatter(brain, (f_gm + f_wm) >= 0.5), "wm": _scatter(brain, f_wm >= 0.5)}
    lesion_mask = _scatter(brain, labels > 0)
    far = ~ndimage.binary_dilation(lesion_mask, iterations=max(1, int(round(10 / v)))) if params.tumor else brain
    masks["nawm"] = _scatter(brain, f_wm >= 0.9) & far
    if params.tumor:
        masks.update(tumor=lesion_mask, core=_scatter(brain, labels == 1), edema=_scatter(brain, labels == 2),
                     infiltration=_scatter(brain, labels == 3))
    truth = {"md": Volume(_scatter(brain, md, np.float32), affine), "fa": Volume(_scatter(brain, fa, np.float32), affine),
             "labels": Volume(_scatter(brain, labels, np.uint8), affine)}
    acq = Acquisition(bvals=bvals, bvecs=bvecs, description="BBBAnomaly diffusion phantom (RAS gradients)")
    return DMRIPhantom(Volume(data, affine, None, acq), masks, truth, info)


def _lesion(rng, brain, voxels, points, f_wm, v) -> dict:
    """Core / edema / graded infiltration of one irregular ellipsoidal tumor, centred in white matter."""
    depth = ndimage.distance_transform_edt(brain) * v
    r_core = rng.uniform(5.0, 11.0)
    r_edema = r_core + rng.uniform(6.0, 14.0)
    r_infil = r_edema + rng.uniform(6.0, 12.0)
    candidates = np.flatnonzero((f_wm >= 0.6) & (depth[tuple(voxels.T)] >= 0.6 * r_infil))
    if candidates.size == 0:
        candidates = np.flatnonzero(f_wm >= 0.5)
    centre = points[rng.choice(candidates)]
    axes = phys.random_rotation(rng, 180.0) * rng.uniform(0.8, 1.25, 3)[None, :]
    rel = (points - centre) @ np.linalg.inv(axes).T
    bumps = ndimage.gaussian_filter(rng.standard_normal(brain.shape), 6.0 / v)
    bumps = (bumps / (bumps.std() + 1e-12))[tuple(voxels.T)]
    distance = np.linalg.norm(rel, axis=1) / (1 + 0.12 * np.clip(bumps, -2.5, 2.5))
    core = distance <= r_core
    edema = (distance > r_core) & (distance <= r_edema)
    infiltration = np.clip((r_infil - distance) / (r_infil - r_edema), 0, 1) * (distance > r_edema)
    necrotic = rng.random() < 0.5
    core_md = np.where(necrotic & (distance <= 0.6 * r_core), 2.4e-3, rng.uniform(0.6e-3, 0.9e-3))[core]
    core_s0 = np.where(necrotic & (distance <= 0.6 * r_core), 1.7, 1.25)[core]
    info = {"centre_mm": centre.round(1).tolist(), "core_radius_mm": round(r_core, 1),
            "edema_radius_mm": round(r_edema, 1), "infiltration_radius_mm": round(r_infil, 1),
            "core": "necrotic centre + cellular rim" if necrotic else "solid cellular"}
    return {"core": core, "edema": edema, "infiltration": infiltration, "core_md": core_md, "core_s0": core_s0,
            "info": info}


def _bias_field(rng, shape, v) -> np.ndarray:
    """A smooth multiplicative receive field, 1 ± ~10 %."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 40.0 / v)
    return (1 + 0.1 * field / (np.abs(field).max() + 1e-12)).astype(np.float32)


def _scatter(mask, values, dtype=None) -> np.ndarray:
    values = np.asarray(values)
    out = np.zeros(mask.shape, dtype or values.dtype)
    out[mask] = values
    return out
