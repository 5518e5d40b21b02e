"""The anatomy shipped inside the package for the phantoms (derived from FSL's MNI152 2 mm template)."""

from pathlib import Path

import numpy as np

from BBBAnomalyLib.phantoms.anatomy import DATA_DIR, load_anatomy

# FSL MNI152 2 mm sform and the crop origin used by scripts/make_phantom_anatomy.py
MNI_2MM = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
CROP_LO = np.array([8, 9, 0])


def test_files_are_small_and_carry_the_notice():
    files = {p.name: p.stat().st_size for p in Path(DATA_DIR).iterdir() if p.is_file()}
    assert {"mni152_2mm_pve.nii.gz", "mni152_2mm_brain_mask.nii.gz", "NOTICE.txt"} <= set(files)
    assert sum(v for k, v in files.items() if k.endswith(".nii.gz")) < 400_000
    notice = (Path(DATA_DIR) / "NOTICE.txt").read_text(encoding="utf-8")
    assert "Copyright (C) 1993–2004 Louis Collins, McConnell Brain Imaging Centre" in notice
    assert "provided that the above copyright notice appear in all copies" in notice
    assert "pve_0/1/2" in notice and "cropped" in notice


def test_geometry_is_mni_and_world_coordinates_are_kept():
    anat = load_anatomy()
    assert anat.shape == (74, 92, 78)
    np.testing.assert_array_equal(anat.affine[:3, :3], MNI_2MM[:3, :3])
    # voxel (0,0,0) of the crop is voxel CROP_LO of the MNI grid: same RAS point
    np.testing.assert_allclose(anat.affine[:3, 3], (MNI_2MM @ np.r_[CROP_LO, 1])[:3])
    # MNI origin (anterior commissure) falls on voxel (45, 63, 36) - CROP_LO
    np.testing.assert_allclose(np.linalg.inv(anat.affine) @ [0, 0, 0, 1], np.r_[np.array([45, 63, 36]) - CROP_LO, 1])


def test_fractions_partition_the_brain():
    anat = load_anatomy()
    assert anat.brain.sum() == 262245  # the whole 2 mm brain mask
    total = anat.fractions.sum(-1)
    np.testing.assert_allclose(total[anat.brain], 1.0, atol=1e-5)
    assert np.all(total[~anat.brain] == 0)
    vol_ml = {t: float(anat.fraction(t).sum()) * 8e-3 for t in ("csf", "gm", "wm")}
    # MNI152 is an enlarged average brain (~2.1 l mask): GM ~840 ml, WM ~820 ml
    assert 700 < vol_ml["gm"] < 950 and 700 < vol_ml["wm"] < 950 and 100 < vol_ml["csf"] < vol_ml["gm"]
    assert not anat.fractions.flags.writeable  # cached and shared: must not be modified in place
