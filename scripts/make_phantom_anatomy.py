"""Derive the small tissue map shipped with the DSC phantom from FSL's MNI152 2 mm template.

Why: the built-in demo, the tests and the validation sweeps need a realistic brain (GM/WM/CSF
partial volumes, a brain outline) without anything outside the package at run time. This script
is run once by a developer; its outputs live in ``BBBAnomalyLib/phantoms/data/`` with a NOTICE.

What it writes (all on the MNI152 2 mm grid cropped to the brain bounding box; the affine is the
MNI affine with its origin moved to the crop, so RAS millimetres are unchanged):

* ``mni152_2mm_pve.nii.gz``  uint8 (x, y, z, 3): FSL FAST partial-volume fractions CSF, GM, WM
  (pve_0/1/2), renormalised to sum to 1 inside the brain and quantised to 0..250
  (fraction = value / 250, a 0.004 step).
* ``mni152_2mm_brain_mask.nii.gz`` uint8 (x, y, z): the 2 mm brain mask (0/1).
* ``NOTICE.txt``: the MNI/McGill copyright notice, verbatim, and what was derived and how.

Usage: python scripts/make_phantom_anatomy.py [--template-dir DIR] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = REPO.parent / "shared" / "data" / "templates" / "mni152_fsl"
DEFAULT_OUT = REPO / "BBBAnomalyLib" / "phantoms" / "data"
PVE_SCALE = 250  # quantisation: fraction 1.0 <-> 250 (leaves headroom in uint8, a 0.004 step)


def derive(template_dir: Path, out_dir: Path) -> dict:
    mask_img = nib.load(template_dir / "MNI152_T1_2mm_Brain_Mask.nii.gz")
    mask = np.asarray(mask_img.dataobj) > 0
    pve = np.stack(
        [np.asarray(nib.load(template_dir / f"MNI152_T1_2mm_Brain_FAST_pve_{i}.nii.gz").dataobj, dtype=np.float64)
         for i in range(3)],
        axis=-1,
    )
    pve = np.clip(pve, 0.0, 1.0)
    total = pve.sum(axis=-1)
    # Renormalise inside the brain so that the three fractions sum to one (FAST's sums are 1 +- 3e-8);
    # a brain voxel without any tissue (none in this template) would become CSF.
    pve[mask & (total <= 0), 0] = 1.0
    total = pve.sum(axis=-1)
    pve = np.where(mask[..., None], pve / np.maximum(total, 1e-12)[..., None], 0.0)

    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine = mask_img.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]  # same RAS mm for every voxel

    q = np.rint(pve[crop] * PVE_SCALE).astype(np.uint8)
    m = mask[crop].astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    nib.openers.Opener.default_compresslevel = 9  # nibabel writes level 1 by default: ~1.7x larger files
    for data, name in ((q, "mni152_2mm_pve.nii.gz"), (m, "mni152_2mm_brain_mask.nii.gz")):
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_sform(affine, code=4)  # 4 = MNI152
        img.set_qform(affine, code=4)
        nib.save(img, out_dir / name)

    notice = (template_dir / "COPYRIGHTS").read_text(encoding="utf-8").strip()
    (out_dir / "NOTICE.txt").write_text(
        "Files mni152_2mm_pve.nii.gz and mni152_2mm_brain_mask.nii.gz in this folder are derived from the\n"
        "MNI152 standard-space template as distributed with FSL (MNI152_T1_2mm_Brain_Mask and the FSL FAST\n"
        "partial-volume maps MNI152_T1_2mm_Brain_FAST_pve_0/1/2 = CSF/GM/WM at 2 mm).\n\n"
        "How they were derived (scripts/make_phantom_anatomy.py): the three partial-volume maps were clipped\n"
        "to [0, 1], renormalised to sum to 1 inside the brain mask, set to 0 outside it, stacked as a 4D\n"
        f"volume (x, y, z, [CSF, GM, WM]) and quantised to uint8 (fraction = value / {PVE_SCALE}); the brain\n"
        "mask was stored as uint8 0/1. Both were cropped to the bounding box of the brain mask; the affine is\n"
        f"the MNI affine with its origin moved to voxel {tuple(int(v) for v in lo)} of the original 91x109x91\n"
        "grid, so world (RAS, mm) coordinates are unchanged.\n\n"
        "Original copyright notice (verbatim):\n\n" + notice + "\n",
        encoding="utf-8")
    return {"crop_lo": lo.tolist(), "shape": list(q.shape[:3]), "brain_voxels": int(m.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template-dir", type=Path, default=DEFAULT_TEMPLATE)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    info = derive(args.template_dir, args.out_dir)
    sizes = {p.name: p.stat().st_size for p in sorted(args.out_dir.iterdir()) if p.is_file()}
    print(info, sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
