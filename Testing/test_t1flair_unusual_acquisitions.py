"""The T1/FLAIR pipeline on legitimate but unusual acquisitions (scripts/t1flair_unusual_acquisitions.py audits the
real cases; these are the defects it found, on small phantoms):

* the same voxels stored sagittally or coronally reached the networks transposed or upside down (the identifier's p
  on TCGA-FG-6692 went from 0.72 to 0.31, the anomaly map's correlation with the axial run fell to 0.85), no word;
* a z-scored (zero-centred) skull-stripped pair got an automatic brain mask of its positive voxels only (580 of
  1587 ml on TCGA-FG-6692; every map wrong);
* a brain cut by the field of view (its top 20 % missing: 104 mm, within the coverage check) gave an anomaly map
  with correlation 0.5 to the whole brain's and a patient z of 4.7 instead of 0.8, no word;
* a 5 mm FLAIR resampled onto a 1 mm T1 was reported "within the trained range" (only the T1's grid was checked).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair
from BBBAnomalyLib.structural.applicability import check_structural_input
from BBBAnomalyLib.structural.preprocessing import SliceGrid, automatic_brain_mask, slice_axis


def _stored(data, affine, order, flip=()):
    """The same voxels stored with the array axes in ``order`` and the new axes ``flip`` reversed: (array, affine)."""
    out = np.transpose(np.asarray(data), order)
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for new, old in enumerate(order):
        m[old, new] = 1.0
    for axis in flip:
        out = np.flip(out, axis)
        f = np.eye(4)
        f[axis, axis], f[axis, 3] = -1.0, out.shape[axis] - 1
        m = m @ f
    return np.ascontiguousarray(out), affine @ m


def _back(data, order, flip=()):
    """Inverse of :func:`_stored` for an array."""
    for axis in flip:
        data = np.flip(data, axis)
    return np.transpose(data, np.argsort(order))


SAGITTAL = ((1, 2, 0), (1,))  # (A-P, S-I top to bottom, L-R): slices are sagittal
CORONAL = ((0, 2, 1), (1,))  # (L-R, S-I top to bottom, A-P): slices are coronal


@pytest.fixture(scope="module")
def phantom():
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    return make_structural_phantom(4, tumor=True)  # 2 mm MNI grid, stored L-R, A-P, S-I like every training case


def test_sagittal_storage_gives_the_networks_the_same_axial_slices(phantom):
    t1, brain, affine = phantom.t1.data, phantom.brain, phantom.t1.affine
    grid = SliceGrid.around(brain, affine, 48)
    order, _ = SAGITTAL
    t1_s, affine_s = _stored(t1, affine, order)
    brain_s, _ = _stored(brain, affine, order)
    grid_s = SliceGrid.around(brain_s, affine_s, 48)
    assert slice_axis(affine_s) == 1
    # the same slices, rows left-right and columns anterior-posterior as in training (were transposed)
    np.testing.assert_array_equal(grid_s.to_network(t1_s), grid.to_network(t1))
    net = grid.to_network(t1)
    np.testing.assert_array_equal(_back(grid_s.to_native(net), order), grid.to_native(net))


def test_the_pipeline_gives_the_same_maps_and_call_for_the_same_voxels_stored_sagittally(phantom, one_torch_thread):
    """The whole run (segmentation head ROI, phantom calibration so that p means something): the same maps, voxel
    for voxel, and the same p(disrupted). Before, the slices reached the networks transposed and the autoencoder's
    box was squeezed along the wrong axes."""
    params = T1FlairParameters(steps=1, samples=1, device="cpu", enhancer_weights=None, status_evidence="phantom")
    axial = run_t1flair(phantom.t1, phantom.flair, params, brain_mask=phantom.brain)
    order = (1, 2, 0)  # slices sagittal (L-R is the third axis), the same slice order along S-I
    stored = {k: _stored(v.data, phantom.t1.affine, order) for k, v in (("t1", phantom.t1), ("flair", phantom.flair))}
    sagittal = run_t1flair(Volume(*stored["t1"]), Volume(*stored["flair"]), params,
                           brain_mask=_stored(phantom.brain, phantom.t1.affine, order)[0])
    for name in ("tumor_probability", "synthetic_t1gd_enhancing", "anomaly"):
        np.testing.assert_allclose(_back(sagittal.maps[name].data, order), axial.maps[name].data, atol=1e-4,
                                   err_msg=name)
    assert sagittal.report["bbb_status"]["probability"] == pytest.approx(axial.report["bbb_status"]["probability"])


@pytest.mark.parametrize("storage", [SAGITTAL, CORONAL], ids=["sagittal", "coronal"])
def test_the_anomaly_map_does_not_depend_on_the_storage_order(phantom, storage, one_torch_thread):
    from BBBAnomalyLib.structural import cae as cae_mod
    from BBBAnomalyLib.structural.models import load
    from BBBAnomalyLib.structural.normalisation import normalise

    model, card = load("t1flair-cae-population", "cae", torch.device("cpu"))
    brain, affine = phantom.brain, phantom.t1.affine
    channels = [normalise(phantom.t1.data, brain, "t1"), normalise(phantom.flair.data, brain, "flair")]
    reference, score, z = cae_mod.anomaly(model, channels, brain, card["reshape"])
    same, *_ = cae_mod.anomaly(model, channels, brain, card["reshape"], affine=affine)
    np.testing.assert_array_equal(same, reference)  # the trained storage order: used as it is
    order, flip = storage
    stored = [_stored(c, affine, order, flip)[0] for c in channels]
    brain_s, affine_s = _stored(brain, affine, order, flip)
    amap, score_s, z_s = cae_mod.anomaly(model, stored, brain_s, card["reshape"], affine=affine_s)
    assert amap.shape == brain_s.shape
    np.testing.assert_allclose(_back(amap, order, flip), reference, atol=1e-5)
    assert score_s == pytest.approx(score, abs=1e-6) and z_s == pytest.approx(z, abs=1e-4)


def _zscored(image):
    out = np.zeros_like(image)
    nonzero = image != 0
    out[nonzero] = (image[nonzero] - image[nonzero].mean()) / image[nonzero].std()
    return out


def test_a_zscored_skull_stripped_pair_keeps_its_whole_brain_mask(phantom):
    t1, flair = phantom.t1.data, phantom.flair.data
    plain = automatic_brain_mask(t1, flair, [])
    warnings = []
    mask = automatic_brain_mask(_zscored(t1), _zscored(flair), warnings)
    assert mask.sum() == pytest.approx(plain.sum(), rel=0.01), (mask.sum(), plain.sum())  # was ~half of it
    assert "zero-centred" in warnings[0]
    plain_warnings = []
    automatic_brain_mask(t1, flair, plain_warnings)  # a magnitude image: the mask and its note as before
    assert "zero-centred" not in plain_warnings[0]


def _checks(t1, flair, brain, affine, **kwargs):
    result = check_structural_input(t1, flair, affine, brain, slice_axis(affine), mask_given=False, **kwargs)
    return {c.name: c for c in result.checks}


def test_a_brain_cut_by_the_field_of_view_is_flagged_for_the_anomaly_map(phantom):
    t1, flair, brain, affine = phantom.t1.data, phantom.flair.data, phantom.brain, phantom.t1.affine
    whole = _checks(t1, flair, brain, affine)
    assert whole["field_of_view"].status == "ok" and whole["field_of_view"].value < 0.1
    padded = _checks(*(np.pad(a, 10) for a in (t1, flair, brain)), affine)
    assert padded["field_of_view"].status == "ok"
    z = np.flatnonzero(brain.any(axis=(0, 1)))
    top = int(z.max() - 0.2 * (z.max() - z.min() + 1))  # the top 20 % of the brain outside the field of view
    cut = _checks(t1[..., :top + 1], flair[..., :top + 1], brain[..., :top + 1], affine)
    check = cut["field_of_view"]
    assert check.status == "warning" and check.affects == ("anomaly",) and "superior" in check.message
    assert cut["coverage_extent"].status == "ok"  # what let it pass before: 100 mm or more of brain


def test_a_thick_flair_on_another_grid_is_checked_at_its_own_resolution(phantom, one_torch_thread):
    # a 12-slice slab of the 2 mm phantom around its tumour as the T1; the FLAIR on a 6 mm grid (thick 2D FLAIR)
    k0 = int(np.argmax((phantom.seg.data > 0).sum(axis=(0, 1)))) - 6
    cut = lambda a: np.ascontiguousarray(a[:, :, k0:k0 + 12])
    t1, flair, brain, tumour = cut(phantom.t1.data), cut(phantom.flair.data), cut(phantom.brain), cut(phantom.seg.data) > 0
    shift = np.eye(4)
    shift[2, 3] = k0
    affine = phantom.t1.affine @ shift
    thick = flair.reshape(flair.shape[0], flair.shape[1], 4, 3).mean(axis=3)
    to_thick = np.eye(4)
    to_thick[2, 2], to_thick[2, 3] = 3.0, 1.0  # slab k holds slices 3k..3k+2, its centre at 3k + 1
    res = run_t1flair(Volume(t1, affine), Volume(thick, affine @ to_thick),
                      T1FlairParameters(steps=1, samples=1, device="cpu", enhancer_weights=None, anomaly_map=False),
                      brain_mask=brain, tumor_mask=tumour)
    check = {c["name"]: c for c in res.report["applicability"]["checks"]}["slice_thickness"]
    assert check["status"] == "warning" and check["value"] == pytest.approx(6.0), check
    assert "FLAIR" in check["message"]
    assert res.report["applicability"]["maps"]["synthetic_t1gd"].startswith("outside")
