"""The shipped phantom anatomy: MNI152 (FSL) 2 mm tissue partial-volume fractions and brain mask.

The files in ``phantoms/data/`` are derived by ``scripts/make_phantom_anatomy.py`` (see NOTICE.txt
there): CSF/GM/WM fractions quantised to 0..250 and cropped to the brain bounding box, with the MNI
affine (RAS mm) kept. Loaded once per process and cached read-only, because every phantom build and
test uses it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
PVE_FILE = "mni152_2mm_pve.nii.gz"
MASK_FILE = "mni152_2mm_brain_mask.nii.gz"
PVE_SCALE = 250.0  # stored uint8 value for a fraction of 1
TISSUE_ORDER = ("csf", "gm", "wm")


@dataclass(frozen=True)
class Anatomy:
    """fractions: (x, y, z, 3) float32 CSF/GM/WM, summing to 1 in the brain and 0 outside;
    brain: (x, y, z) bool; affine: 4x4 voxel -> RAS mm. Arrays are read-only (shared cache)."""

    fractions: np.ndarray
    brain: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.brain.shape)

    def fraction(self, tissue: str) -> np.ndarray:
        return self.fractions[..., TISSUE_ORDER.index(tissue)]


@functools.lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """The whole cropped 2 mm MNI brain (74 x 92 x 78 voxels, 262 245 in the brain mask)."""
    pve_img = nib.load(DATA_DIR / PVE_FILE)
    mask_img = nib.load(DATA_DIR / MASK_FILE)
    if not np.allclose(pve_img.affine, mask_img.affine):
        raise RuntimeError("phantom anatomy files disagree on geometry; rerun scripts/make_phantom_anatomy.py")
    pve = np.asarray(pve_img.dataobj, dtype=np.float32) / np.float32(PVE_SCALE)
    brain = np.asarray(mask_img.dataobj) > 0
    total = pve.sum(axis=-1, keepdims=True)
    # undo the quantisation drift of the sum (at most 0.006) so fractions sum exactly to 1 in the brain
    pve = np.where(brain[..., None], pve / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    affine = np.asarray(pve_img.affine, dtype=np.float64)
    for a in (pve, brain, affine):
        a.setflags(write=False)
    return Anatomy(pve, brain, affine)
