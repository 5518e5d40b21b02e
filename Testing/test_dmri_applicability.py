"""Diffusion anomaly applicability: coarse or partial DWI and the VAE are flagged, a whole 2.5 mm brain is not."""

import numpy as np

from BBBAnomalyLib.dmri.applicability import check_dwi_input


def _brain(shape, voxel_mm):
    grid = np.indices(shape).astype(float)
    centre = (np.asarray(shape) - 1) / 2
    radius = np.array([70.0, 85.0, 60.0]) / np.asarray(voxel_mm)  # an adult brain's half-axes in mm
    return (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(0) <= 1


def test_a_7_mm_18_slice_dwi_is_flagged_and_a_whole_2p5_mm_brain_is_not():
    thick = np.diag([1.8, 1.8, 7.0, 1.0])
    brain = _brain((80, 96, 18), (1.8, 1.8, 7.0))
    brain[:, :, :] &= True
    result = check_dwi_input(thick, brain[:, :, :18], "recdisc", "fixed")
    status = {c.name: c.status for c in result.checks}
    assert status["slice_thickness"] == "warning" and status["model"] == "ok"
    assert any("7.0 mm" in w for w in result.warnings) and result.maps()["anomaly"].startswith("outside")
    fine = check_dwi_input(np.diag([2.5, 2.5, 2.5, 1.0]), _brain((64, 76, 60), (2.5, 2.5, 2.5)), "recdisc", "fixed")
    assert fine.warnings == [] and all(v == "within the trained range" for v in fine.maps().values())
    slab = _brain((64, 76, 60), (2.5, 2.5, 2.5))
    slab[:, :, :22] = slab[:, :, 30:] = False  # 8 slices, 20 mm
    assert {c.name: c.status for c in check_dwi_input(np.diag([2.5, 2.5, 2.5, 1.0]), slab, "recdisc", "otsu").checks}[
        "coverage"] == "warning"


def test_the_vae_is_reported_as_having_no_usable_operating_point():
    result = check_dwi_input(np.diag([2.5, 2.5, 2.5, 1.0]), _brain((64, 76, 60), (2.5, 2.5, 2.5)), "vae", "fixed")
    assert [c.name for c in result.checks if c.status == "warning"] == ["model"]
    assert "RecDiscNet" in result.warnings[0] and "no label-free threshold finds the tumor core" in result.warnings[0]
