"""Post-operative anatomy on the T1/FLAIR pipeline (session 23): intrinsic T1 hyperintensity and a resection cavity.

A methaemoglobin rim is bright on the non-contrast T1, so the synthetic T1Gd (the T1 plus the predicted enhancement)
shows it as bright as enhancement; a cavity is fluid lined by FLAIR-abnormal tissue. Both are inserted into a
structural phantom (MNI 2 mm) with the phantom's own tissue levels, as scripts/t1flair_postop.py does on the real cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.structural.postop import (MIN_BRIGHT_ML, PostOperativeFindings, find_post_operative,
                                             post_operative_report, tissue_classes)


@pytest.fixture(scope="module")
def phantom():
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    return make_structural_phantom(4, tumor=True)


def _levels(t1, flair, brain):
    _, labels = tissue_classes(t1[brain])
    return {"csf_t1": float(np.median(t1[brain][labels == 0])), "csf_flair": float(np.median(flair[brain][labels == 0])),
            "blood_t1": float(np.percentile(t1[brain][labels == 2], 99)),
            "blood_flair": float(np.percentile(flair[brain], 99))}


def _insert(phantom, cavity_mm=8.0, rim_mm=4.0, cavity_flair=None, at=None):
    """The phantom with a ball of fluid (CSF's T1 and FLAIR, or ``cavity_flair``) in a shell of blood (the white
    matter's 99th T1 percentile, the brain's 99th FLAIR percentile) at the tumour's centre: (t1, flair, cavity, rim)."""
    t1, flair, brain = (np.array(phantom.t1.data, np.float32), np.array(phantom.flair.data, np.float32),
                        np.asarray(phantom.brain, bool))
    levels = _levels(t1, flair, brain)
    centre = at if at is not None else np.round(ndimage.center_of_mass(np.asarray(phantom.seg.data) > 0)).astype(int)
    voxel = np.asarray(phantom.t1.voxel_sizes[:3])
    dist = np.sqrt(sum(((g - c) * v) ** 2 for g, c, v in zip(np.indices(brain.shape), centre, voxel)))
    rim = (dist <= cavity_mm + rim_mm) & (dist > cavity_mm) & brain
    cavity = (dist <= cavity_mm) & brain
    t1[rim], flair[rim] = levels["blood_t1"], levels["blood_flair"]
    t1[cavity] = levels["csf_t1"]
    flair[cavity] = levels["csf_flair"] if cavity_flair is None else cavity_flair
    return t1, flair, cavity, rim


def _find(phantom, t1, flair):
    return find_post_operative(t1, flair, np.asarray(phantom.brain, bool), phantom.t1.voxel_sizes[:3])


def test_nothing_is_found_on_unmodified_phantoms(phantom):
    """The false-alarm side: the tumour phantom (its necrosis and oedema) and a normal one give no finding."""
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    for ph in (phantom, make_structural_phantom(5002), make_structural_phantom(7001, tumor=False)):
        found = _find(ph, np.asarray(ph.t1.data), np.asarray(ph.flair.data))
        assert found.t1_bright_index.size == 0 and found.cavity_index.size == 0
        assert all(not c["cavity"] for c in found.cavities)


def test_a_blood_rim_and_a_cavity_are_found_where_they_were_put(phantom):
    t1, flair, cavity, rim = _insert(phantom)
    found = _find(phantom, t1, flair)
    bright = np.zeros(cavity.shape, bool).ravel()
    bright[found.t1_bright_index] = True
    bright = bright.reshape(cavity.shape)
    # the rim's deep part is found (a few of its voxels sit at the tumour's bright edge or near the surface)
    assert (bright & rim).sum() >= 0.8 * rim.sum()
    assert (bright & ~ndimage.binary_dilation(rim)).sum() == 0
    hole = np.zeros(cavity.size, bool)
    hole[found.cavity_index] = True
    assert (hole.reshape(cavity.shape) & cavity).sum() >= 0.9 * cavity.sum()
    assert found.cavities[0]["cavity"] and found.cavities[0]["shell_flair_abnormal_fraction"] >= 0.5


def test_necrosis_is_not_a_cavity(phantom):
    """A core as dark on the T1 but near the brain's FLAIR level (below its median, not fluid-suppressed: necrosis, as
    the phantoms draw it) lined by the same FLAIR-bright rim is not taken as a cavity (it was with the first rule,
    FLAIR below the brain's median, which also fired on held-apart phantom 5002's necrotic core)."""
    flair_median = float(np.median(np.asarray(phantom.flair.data)[phantom.brain]))
    t1, flair, _, _ = _insert(phantom, cavity_flair=0.85 * flair_median)
    assert _find(phantom, t1, flair).cavity_index.size == 0


def test_skull_strip_leftovers_at_the_brain_surface_are_not_counted(phantom):
    """Dura or marrow left by the skull-strip is bright on both images, but within 3 mm of the brain's surface."""
    t1, flair, brain = (np.array(phantom.t1.data, np.float32), np.array(phantom.flair.data, np.float32),
                        np.asarray(phantom.brain, bool))
    levels = _levels(t1, flair, brain)
    edge = brain & ~ndimage.binary_erosion(brain)  # the outermost voxel layer (2 mm)
    edge &= np.indices(brain.shape)[2] > np.flatnonzero(brain.any(axis=(0, 1))).mean()  # the upper half
    t1[edge], flair[edge] = levels["blood_t1"] * 1.2, levels["blood_flair"] * 1.2
    assert edge.sum() * 0.008 > 10 * MIN_BRIGHT_ML
    assert _find(phantom, t1, flair).t1_bright_index.size == 0


def test_the_report_counts_the_enhancement_on_the_bright_voxels_and_the_roi():
    """post_operative_report's arithmetic on a tiny grid: which bright voxels the enhancement fires on (>= 6 units),
    the ROI overlap, the checks and the BBB reasons."""
    brain = np.zeros((4, 4, 4), bool)
    brain[1:3, 1:4, 1:4] = True  # 18 voxels
    bright = np.ravel_multi_index(np.nonzero(brain & (np.indices(brain.shape)[2] == 3)), brain.shape)  # 6 voxels
    found = PostOperativeFindings(bright, np.zeros(0, np.int64), voxel_ml=0.05)
    enhancement = np.zeros(brain.shape, np.float32)
    enhancement[1, 1:4, 3] = [10.0, 6.0, 5.9]  # two bright voxels fire, one is below the floor
    enhancement[2, 1, 1] = 30.0  # fires, not bright
    roi = np.zeros(brain.shape, bool)
    roi[2, :, 3] = True  # three bright voxels in the ROI
    block, checks, reasons = post_operative_report(found, brain, enhancement[brain], roi)
    assert block["t1_hyperintense_ml"] == pytest.approx(0.30)
    assert block["enhancement_on_t1_hyperintense_ml"] == pytest.approx(0.10)
    assert block["enhancement_ml"] == pytest.approx(0.15)
    assert block["t1_hyperintense_in_tumor_roi_ml"] == pytest.approx(0.15)
    by_name = {c.name: c for c in checks}
    assert by_name["intrinsic_t1_hyperintensity"].status == "warning"
    assert "0.10 ml of them (67 % of its 0.15 ml)" in by_name["intrinsic_t1_hyperintensity"].message
    assert by_name["post_operative_cavity"].status == "ok" and not by_name["post_operative_cavity"].message
    assert len(reasons) == 1 and "tumour ROI (0.15 ml" in reasons[0]
    quiet, quiet_checks, quiet_reasons = post_operative_report(
        PostOperativeFindings(np.zeros(0, np.int64), np.zeros(0, np.int64), voxel_ml=0.05), brain, enhancement[brain], roi)
    assert not quiet["warned"] and not quiet_reasons and all(c.status == "ok" for c in quiet_checks)


def test_the_pipeline_warns_records_and_changes_no_map(phantom, one_torch_thread):
    """End to end: the post-operative phantom gets both warnings, the applicability checks, the report block and a
    BBB reason (the rim is in the given tumour ROI); the unmodified phantom gets none of them. The maps do not depend
    on the checks: the post-operative run's maps are those of the same images with the checks' findings emptied."""
    from unittest import mock

    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair, postop

    params = T1FlairParameters(steps=1, samples=1, device="cpu", enhancer_weights=None, anomaly_map=False)
    tumour = np.asarray(phantom.seg.data) > 0
    plain = run_t1flair(phantom.t1, phantom.flair, params, brain_mask=phantom.brain, tumor_mask=tumour)
    assert not plain.report["post_operative"]["warned"]
    assert not [w for w in plain.report["warnings"] if "T1 hyperintensity" in w or "post-operative" in w]
    checks = {c["name"]: c for c in plain.report["applicability"]["checks"]}
    assert checks["intrinsic_t1_hyperintensity"]["status"] == checks["post_operative_cavity"]["status"] == "ok"

    t1, flair, cavity, rim = _insert(phantom)
    images = Volume(t1, phantom.t1.affine), Volume(flair, phantom.flair.affine)
    post = run_t1flair(*images, params, brain_mask=phantom.brain, tumor_mask=tumour | rim)
    report = post.report
    assert report["post_operative"]["warned"] and report["post_operative"]["cavity_ml"] > 1.0
    assert any(w.startswith("intrinsic T1 hyperintensity") for w in report["warnings"])
    assert any(w.startswith("the scan looks post-operative") for w in report["warnings"])
    checks = {c["name"]: c for c in report["applicability"]["checks"]}
    assert checks["intrinsic_t1_hyperintensity"]["status"] == checks["post_operative_cavity"]["status"] == "warning"
    assert "intrinsic_t1_hyperintensity" in report["applicability"]["maps"]["synthetic_t1gd"]
    assert any("intrinsic T1 hyperintensity inside the tumour ROI" in r for r in report["bbb_status"]["reasons"])

    nothing = PostOperativeFindings(np.zeros(0, np.int64), np.zeros(0, np.int64))
    with mock.patch.object(postop, "find_post_operative", return_value=nothing):
        silent = run_t1flair(*images, params, brain_mask=phantom.brain, tumor_mask=tumour | rim)
    assert not silent.report["post_operative"]["warned"]
    for name in post.maps:
        np.testing.assert_array_equal(post.maps[name].data, silent.maps[name].data, err_msg=name)
    assert silent.report["bbb_status"]["probability"] == report["bbb_status"]["probability"]
