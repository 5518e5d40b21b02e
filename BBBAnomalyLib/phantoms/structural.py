"""Structural glioma phantoms on real anatomy: T1, T2-FLAIR, T1Gd and a BraTS-label segmentation.

The brain is the shipped MNI152 2 mm tissue map (CSF/GM/WM fractions, :mod:`.anatomy`). A tumor
is a smooth, irregular blob (a distance field bent by low-frequency noise) placed in white matter:

* ``enhancing=True`` (disrupted BBB): necrotic core (label 1; dark on T1 and T1Gd) inside an
  enhancing rim (label 4; bright on T1Gd only, patchy), in FLAIR-bright edema (label 2). A third
  of these are solid (no necrosis), which makes them harder to tell from non-enhancing ones.
* ``enhancing=False`` (intact BBB): a non-enhancing infiltrative lesion (label 1; T1-hypo,
  FLAIR-hyper, no T1Gd change) with less edema.
* ``tumor=False``: normal anatomy (to train the autoencoder on).

The T1 and FLAIR cues overlap between the two kinds on purpose (lesion intensities drawn from
overlapping ranges): only the shape and texture of the lesion tell them apart, as in patients.
Per case: a random intensity scale, a smooth bias field, a left-right flip and Gaussian noise.
Intensities are arbitrary units; nothing here is a calibrated MR signal model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.volume import Volume
from .anatomy import load_anatomy

#: Tissue intensities (arbitrary units) per contrast: CSF, GM, WM.
TISSUE = {"t1": (0.30, 0.62, 1.00), "flair": (0.08, 0.80, 0.60), "t1gd": (0.32, 0.66, 1.00)}
#: BraTS labels used here (the 2017-2021 convention; 2023 uses 3 for enhancing).
NECROSIS, EDEMA, ENHANCING = 1, 2, 4


@dataclass
class StructuralPhantom:
    t1: Volume
    flair: Volume
    t1gd: Volume
    seg: Volume  # uint8 BraTS labels: 1 necrotic / non-enhancing core, 2 edema, 4 enhancing
    brain: np.ndarray
    enhancing: bool | None  # the ET label (None without a tumor)

    @property
    def whole_tumor(self) -> np.ndarray:
        return self.seg.data > 0

    def write(self, folder: str | Path, case: str = "case") -> Path:
        """BraTS 2023 layout: <case>-t1n, -t2f, -t1c, -seg .nii.gz (+ <case>-brain mask)."""
        from ..io import write_volume

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, vol in (("t1n", self.t1), ("t2f", self.flair), ("t1c", self.t1gd), ("seg", self.seg)):
            write_volume(vol, folder / f"{case}-{suffix}.nii.gz")
        write_volume(Volume(self.brain.astype(np.uint8), self.t1.affine), folder / f"{case}-brain.nii.gz")
        return folder


def _smooth_noise(rng, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (np.abs(field).max() + 1e-9)


def _tumor_field(rng, anatomy, radius_vox: float) -> np.ndarray:
    """Normalised distance (1 = the tumor's edge) of an irregular ellipsoid centred in white matter."""
    wm = anatomy.fraction("wm") > 0.7
    inner = ndimage.binary_erosion(anatomy.brain, iterations=int(radius_vox) + 2) & wm
    candidates = np.argwhere(inner if inner.any() else wm)
    centre = candidates[rng.integers(len(candidates))]
    axes = radius_vox * rng.uniform(0.75, 1.25, 3)
    grid = np.indices(anatomy.shape, dtype=np.float32)
    d = np.sqrt(sum(((grid[i] - centre[i]) / axes[i]) ** 2 for i in range(3)))
    return d * (1.0 + 0.25 * _smooth_noise(rng, anatomy.shape, 3.0))


def make_structural_phantom(seed: int = 0, enhancing: bool | None = None, tumor: bool = True,
                            noise: float = 0.02, anatomy=None) -> StructuralPhantom:
    """One case. ``enhancing=None`` draws the ET label at random (60 % enhancing, as in gliomas).
    ``anatomy``: another :class:`.anatomy.Anatomy` (CSF/GM/WM fractions, e.g. from another template,
    see scripts/normal_templates.py); default the shipped MNI152 2 mm one."""
    rng = np.random.default_rng(seed)
    anatomy = anatomy if anatomy is not None else load_anatomy()
    frac = anatomy.fractions
    images = {k: frac @ np.asarray(v, np.float32) for k, v in TISSUE.items()}
    seg = np.zeros(anatomy.shape, np.uint8)
    if tumor:
        if enhancing is None:
            enhancing = bool(rng.random() < 0.6)
        d = _tumor_field(rng, anatomy, rng.uniform(5.0, 10.0))
        brain = anatomy.brain
        edema_edge = rng.uniform(1.5, 2.1) if enhancing else rng.uniform(1.15, 1.6)
        edema = (d < edema_edge) & brain
        core = (d < 1.0) & brain
        texture = 0.5 + 0.5 * _smooth_noise(rng, anatomy.shape, 1.5)  # patchy enhancement and texture
        images["t1"][edema] *= rng.uniform(0.78, 0.9)
        images["t1gd"][edema] *= rng.uniform(0.78, 0.9)
        images["flair"][edema] = rng.uniform(1.0, 1.2) + 0.05 * texture[edema]
        seg[edema] = EDEMA
        lesion_t1 = rng.uniform(0.5, 0.72)
        lesion_flair = rng.uniform(0.95, 1.3)
        if enhancing:
            necrotic_edge = rng.uniform(0.35, 0.65) if rng.random() < 2 / 3 else 0.0
            necrosis = (d < necrotic_edge) & brain
            rim = core & ~necrosis
            images["t1"][rim] = lesion_t1
            images["flair"][rim] = lesion_flair
            images["t1gd"][rim] = lesion_t1 + rng.uniform(0.5, 0.9) * (0.5 + texture[rim])
            images["t1"][necrosis] = images["t1gd"][necrosis] = rng.uniform(0.25, 0.4)
            images["flair"][necrosis] = rng.uniform(0.6, 0.9)
            seg[rim] = ENHANCING
            seg[necrosis] = NECROSIS
        else:
            t1_lesion = lesion_t1 + 0.06 * (texture[core] - 0.5)
            images["t1"][core] = t1_lesion
            images["t1gd"][core] = t1_lesion + 0.02
            images["flair"][core] = lesion_flair + 0.06 * (texture[core] - 0.5)
            seg[core] = NECROSIS
    else:
        enhancing = None
    bias = np.exp(0.08 * _smooth_noise(rng, anatomy.shape, 12.0))
    scale = rng.uniform(300.0, 3000.0)
    flip = rng.random() < 0.5
    out = {}
    for name, img in images.items():
        img = img * bias * scale
        img = img + rng.normal(0.0, noise * scale, img.shape) * anatomy.brain  # skull-stripped: 0 outside
        img = np.where(anatomy.brain, np.maximum(img, 0.0), 0.0).astype(np.float32)
        out[name] = img[::-1].copy() if flip else img
    brain = anatomy.brain[::-1].copy() if flip else anatomy.brain.copy()
    seg = seg[::-1].copy() if flip else seg
    affine = anatomy.affine.copy()
    vols = {k: Volume(v, affine) for k, v in out.items()}
    return StructuralPhantom(vols["t1"], vols["flair"], vols["t1gd"], Volume(seg, affine), brain, enhancing)


def write_cases(folder: str | Path, seeds, tumor: bool = True) -> list[Path]:
    """Write one BraTS-layout case folder per seed (``case-<seed>/``); returns the folders."""
    folder = Path(folder)
    out = []
    for seed in seeds:
        phantom = make_structural_phantom(int(seed), tumor=tumor)
        out.append(phantom.write(folder / f"case-{int(seed):04d}", f"case-{int(seed):04d}"))
    return out
