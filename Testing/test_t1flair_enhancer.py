"""The learned enhancement predictor (structural/enhancer.py): features, shrinkage, training, bundled weights."""

import json

import numpy as np
import pytest
import torch

from BBBAnomalyLib.metrics import roc_auc
from BBBAnomalyLib.structural import enhancer
from BBBAnomalyLib.structural.enhancer import (FEATURE_NAMES, N_FEATURES, fit_ensemble, member_groups, predict_maps,
                                               shrunk_change, voxel_features)


def _brain(shape=(40, 40, 30)):
    z, y, x = np.indices(shape)
    c = (np.array(shape) - 1) / 2
    return ((z - c[0]) / 17) ** 2 + ((y - c[1]) / 17) ** 2 + ((x - c[2]) / 13) ** 2 <= 1


def test_features_read_local_contrast_and_depth_in_millimetres():
    brain = _brain()
    t1 = np.full(brain.shape, 99.0, np.float32)
    flair = np.full(brain.shape, 75.0, np.float32)
    flair[20, 20, 10:20] = 20.0  # a FLAIR-dark "vessel" running through the middle
    f = voxel_features(t1, flair, brain, (1.0, 1.0, 1.0))
    assert f.shape == (int(brain.sum()), N_FEATURES) and np.isfinite(f).all()
    col = {n: f[:, i] for i, n in enumerate(FEATURE_NAMES)}
    idx = np.flatnonzero(brain.ravel())
    vessel = np.isin(idx, np.ravel_multi_index((np.full(10, 20), np.full(10, 20), np.arange(10, 20)), brain.shape))
    # darker than its 2.5 mm neighbourhood; elsewhere a uniform brain has no local contrast, even at its edge
    assert col["flair_dev_2.5mm"][vessel].max() < -20
    zz, yy, _ = np.unravel_index(idx, brain.shape)
    away = (np.hypot(zz - 20, yy - 20) > 4) & (col["depth_mm"] > 4)  # beyond the 1 mm kernel's 3 sd reach
    # float32 normalised convolution of values near 100: rounding well under 1e-4 relative
    assert np.abs(col["t1_dev_6mm"]).max() < 1e-2 and np.abs(col["flair_dev_1mm"][away]).max() < 1e-2
    # depth: 0-1 mm at the surface, the largest at the centre; in millimetres, so doubling the voxel doubles it
    assert col["depth_mm"].min() <= 1.0 and col["depth_mm"].max() == pytest.approx(13.0, abs=1.01)
    f2 = voxel_features(t1, flair, brain, (2.0, 2.0, 2.0))
    assert np.allclose(f2[:, FEATURE_NAMES.index("depth_mm")], 2 * col["depth_mm"])


def test_shrinkage_never_enlarges_and_drops_what_is_not_above_its_spread():
    e = np.array([50.0, 50.0, 50.0, -40.0, 5.0, 20.0], np.float32)
    v = np.array([0.0, 625.0, 2500.0, 0.0, 0.0, 399.0], np.float32)
    out = shrunk_change(e, v, shrinkage=1.0, floor=6.0)
    np.testing.assert_allclose(out, [50.0, 37.5, 0.0, -40.0, 0.0, 20.0 * (1 - 399 / 400)], rtol=1e-5)
    assert np.all(np.abs(out) <= np.abs(e)) and np.all(np.sign(out) * np.sign(e) >= 0)
    assert np.all(shrunk_change(e, v, shrinkage=4.0) <= np.abs(out) + 1e-6)  # a larger k shrinks more


def test_member_groups_leave_each_case_out_then_train_on_all():
    assert member_groups(3, 2) == [[1, 2], [0, 2], [0, 1], [0, 1, 2], [0, 1, 2]]
    assert member_groups(2, 1) == [[1], [0], [0, 1]]
    assert member_groups(1, 2) == [[0], [0]]


def test_training_learns_the_enhancing_voxels_and_the_members_disagree_where_the_cases_do():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=(2 * n, N_FEATURES)).astype(np.float32)
    groups = np.repeat([0, 1], n)
    # both cases: voxels with a low feature 0 brighten by 60; feature 1 changes sign between the cases
    y = 60.0 * (x[:, 0] < -1.0) + np.where(groups == 0, 30.0, -30.0) * x[:, 1] + rng.normal(0, 3, 2 * n)
    model = fit_ensemble(x, y.astype(np.float32), groups, width=16, epochs=10, batch=128, seed=0,
                         full_members=1)
    assert model.config["members"] == 3 and model.full_members == 1
    test = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    test[:, 1] = 0.0
    pred = model.predict(test)
    assert roc_auc(test[:, 0] < -1.0, pred["score"]) > 0.95
    assert roc_auc(test[:, 0] < -1.0, pred["expected"]) > 0.95
    agree = pred["epistemic"].mean()
    test[:, 1] = 2.0  # where the two cases say +60 and -60: the members disagree and the change is shrunk away
    pred2 = model.predict(test)
    assert pred2["epistemic"].mean() > 10 * agree
    kept = np.abs(shrunk_change(pred2["expected"], pred2["epistemic"])) / np.maximum(np.abs(pred2["expected"]), 1e-6)
    assert np.median(kept) < 0.5


def test_bundled_weights_have_an_honest_card_and_only_add_to_the_t1():
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    from BBBAnomalyLib.structural.models import load
    from BBBAnomalyLib.structural.normalisation import normalise_0_255
    from BBBAnomalyLib.structural.parameters import DEFAULT_ENHANCER
    from BBBAnomalyLib.weights import WEIGHTS_DIR, sha256

    model, card = load(DEFAULT_ENHANCER, "enhancer", torch.device("cpu"))
    on_disk = json.loads((WEIGHTS_DIR / f"{DEFAULT_ENHANCER}.json").read_text())
    assert on_disk["sha256"] == sha256(WEIGHTS_DIR / on_disk["file"])
    assert set(card["in_sample_cases"]) == {"BraTS-GLI-00001-000", "TCGA-DU-7294", "TCGA-FG-6692"}
    assert "command" in card and card["features"] == list(FEATURE_NAMES)
    ph = make_structural_phantom(3)
    t1 = normalise_0_255(ph.t1.data, ph.brain, "t1")
    maps = predict_maps(model, t1, normalise_0_255(ph.flair.data, ph.brain, "flair"), ph.brain, ph.t1.voxel_sizes)
    for name, m in maps.items():
        assert m.shape == ph.brain.shape and np.isfinite(m).all() and np.all(m[~ph.brain] == 0), name
    assert np.all(maps["added"] >= 0) and np.all(maps["added"] <= np.maximum(maps["predicted_change"], 0) + 1e-4)
    np.testing.assert_allclose(maps["added"], np.maximum(shrunk_change(maps["predicted_change"], maps["epistemic_sd"] ** 2), 0)
                               * maps["enhancing_score"], rtol=1e-3, atol=1e-3)
    assert np.all((maps["enhancing_score"] >= 0) & (maps["enhancing_score"] <= 1))
    assert np.all(maps["uncertainty"] >= maps["epistemic_sd"] - 1e-4)


def test_wrong_kind_of_weights_is_one_clear_error():
    from BBBAnomalyLib import InputError
    from BBBAnomalyLib.structural.models import load

    with pytest.raises(InputError, match="not a enhancer model|not an? enhancer"):
        load("t1flair-cae-population", "enhancer", torch.device("cpu"))
    assert enhancer.MIN_CHANGE > 0


def test_features_do_not_depend_on_the_field_of_view_around_the_brain():
    rng = np.random.default_rng(1)
    brain = _brain()  # inside the array: a brain cut by the field of view has another depth and edge
    t1 = np.where(brain, 99 + 20 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    flair = np.where(brain, 75 + 20 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    pad = ((7, 3), (2, 9), (5, 5))
    big = voxel_features(np.pad(t1, pad), np.pad(flair, pad), np.pad(brain, pad), (1.0, 1.2, 2.0))
    np.testing.assert_allclose(big, voxel_features(t1, flair, brain, (1.0, 1.2, 2.0)), rtol=1e-5, atol=1e-3)
