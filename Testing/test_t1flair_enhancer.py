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


def test_bundled_weights_have_an_honest_card_and_apply_the_rule_their_nested_cv_chose():
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
    # the rule in the config is the one the card's nested cross-validation chose, and the model carries it
    rule = card["config"]["rule"]
    assert rule == card["rule_choice"]["rule"] == model.rule == enhancer.normalise_rule(rule)
    assert set(card["rule_choice"]["inner_validation"]) == set(card["in_sample_cases"])
    ph = make_structural_phantom(3)
    t1 = normalise_0_255(ph.t1.data, ph.brain, "t1")
    flair = normalise_0_255(ph.flair.data, ph.brain, "flair")
    maps = predict_maps(model, t1, flair, ph.brain, ph.t1.voxel_sizes)
    for name, m in maps.items():
        assert m.shape == ph.brain.shape and np.isfinite(m).all() and np.all(m[~ph.brain] == 0), name
    assert np.all(maps["added"] >= 0) and np.all(maps["added"] <= np.maximum(maps["predicted_change"], 0) + 1e-4)
    depth = voxel_features(t1, flair, ph.brain, ph.t1.voxel_sizes)[:, FEATURE_NAMES.index("depth_mm")]
    expected = enhancer.added_enhancement(maps["predicted_change"][ph.brain], maps["epistemic_sd"][ph.brain] ** 2,
                                          maps["enhancing_score"][ph.brain], rule=rule, depth_mm=depth)
    np.testing.assert_allclose(maps["added"][ph.brain], expected, rtol=1e-3, atol=1e-3)
    assert np.all((maps["enhancing_score"] >= 0) & (maps["enhancing_score"] <= 1))
    assert np.all(maps["uncertainty"] >= maps["epistemic_sd"] - 1e-4)


def test_the_rule_scales_weights_and_holds_back_the_surface():
    e = np.array([50.0, 50.0, 50.0, 50.0, -40.0, 3.0], np.float32)
    v = np.array([0.0, 625.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    score = np.array([1.0, 1.0, 0.5, 0.5, 1.0, 1.0], np.float32)
    depth = np.array([10.0, 10.0, 10.0, 2.0, 10.0, 10.0], np.float32)
    default = enhancer.added_enhancement(e, v, score)  # the second pass: max(JS, 0) x score
    np.testing.assert_allclose(default, [50.0, 37.5, 25.0, 25.0, 0.0, 0.0], rtol=1e-6)
    ruled = enhancer.added_enhancement(e, v, score, rule={"alpha": 0.5, "score_power": 2.0, "surface_margin_mm": 3.0},
                                       depth_mm=depth)
    np.testing.assert_allclose(ruled, [25.0, 18.75, 6.25, 0.0, 0.0, 0.0], rtol=1e-6)
    assert not enhancer.added_enhancement(e, v, score, rule={"alpha": 0.0}).any()
    with pytest.raises(ValueError, match="depth"):
        enhancer.added_enhancement(e, v, score, rule={"surface_margin_mm": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        enhancer.normalise_rule({"gain": 2.0})
    with pytest.raises(ValueError, match="range"):
        enhancer.normalise_rule({"alpha": 1.5})
    # a model's card rule is what predict_maps applies; weights without one keep the second pass's rule
    torch.manual_seed(0)
    model = enhancer.EnhancerEnsemble(width=8, members=1, rule={"alpha": 0.0})  # one member: no spread to shrink by
    assert model.config["rule"]["alpha"] == 0.0
    assert enhancer.EnhancerEnsemble(width=8, members=2).rule == enhancer.DEFAULT_RULE
    brain = _brain((16, 16, 12))
    rng = np.random.default_rng(0)
    t1 = np.where(brain, 99 + 30 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    with torch.no_grad():  # every voxel: change 2 x 30 = 60 units, p(> 30) = p(> 60) = sigmoid(3)
        last = model.members[0].net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([2.0, 0.0, 3.0, 3.0]))
    maps = predict_maps(model, t1, t1[::-1].copy() * brain, brain, (1.0, 1.0, 1.0))
    assert np.allclose(maps["predicted_change"][brain], 60.0) and not maps["added"].any()
    full = predict_maps(model, t1, t1[::-1].copy() * brain, brain, (1.0, 1.0, 1.0), rule={"alpha": 1.0})["added"]
    np.testing.assert_allclose(full[brain], 60.0 / (1.0 + np.exp(-3.0)), rtol=1e-5)


def test_choose_rule_maximises_the_worst_case_and_must_beat_adding_nothing():
    rules = enhancer.candidate_rules(alphas=(0.5, 1.0), score_powers=(1.0,), margins_mm=(0.0,))
    assert rules[0]["alpha"] == 0.0 and len(rules) == 3
    # (SSIM gain, PSNR gain dB) on two validation cases; PSNR weighs 0.01 SSIM per dB
    nothing = [(0.0, 0.0), (0.0, 0.0)]
    half = [(0.001, 0.2), (0.0005, 0.1)]  # worst min(0.0005, 0.001) = 0.0005
    full = [(0.004, 0.5), (-0.0001, 0.3)]  # better on average, loses SSIM on the second case
    best, worst = enhancer.choose_rule(rules, [nothing, half, full])
    assert best == 1 and worst == pytest.approx([0.0, 0.0005, -0.0001])
    best, _ = enhancer.choose_rule(rules, [nothing, [(0.002, -0.01), (0.001, 0.3)], full])
    assert best == 0  # a PSNR loss anywhere: nothing beats adding nothing
    assert enhancer.rule_objective(0.003, 0.2) == pytest.approx(0.002)


def _synthetic_case(seed: int, enhancing: bool, shape=(14, 30, 30)):
    """A brain with FLAIR-dark "vessels" that brighten by 90 on the T1Gd when ``enhancing``."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "train_t1flair_enhancer", Path(__file__).resolve().parents[1] / "scripts" / "train_t1flair_enhancer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(seed)
    brain = _brain(shape)
    t1 = 400 + 40 * rng.standard_normal(shape)
    flair = 300 + 30 * rng.standard_normal(shape)
    vessel = brain & (rng.random(shape) < 0.06)
    flair[vessel] = 120
    t1gd = t1 + (200 * vessel if enhancing else 0)
    mask = lambda a: np.where(brain, a, 0).astype(np.float32)  # noqa: E731
    return script, script.prepare_case(mask(t1), mask(flair), mask(t1gd), brain, (1.0, 1.0, 1.0), 0)


def test_nested_choice_keeps_what_transfers_and_adds_nothing_when_a_training_case_disagrees():
    torch.set_num_threads(1)
    script, a = _synthetic_case(0, True)
    _, b = _synthetic_case(1, True)
    _, c = _synthetic_case(2, False)  # no enhancement: adding anything makes its synthetic T1Gd worse
    rules = enhancer.candidate_rules(alphas=(0.5, 1.0), score_powers=(1.0,), margins_mm=(0.0,))
    recipe = script.Recipe({"A": a, "B": b, "C": c}, voxels=5000, seed=0, epochs=6, rules=rules)
    agree = recipe.nested_rule(["A", "B"])
    assert agree["rule"]["alpha"] > 0 and agree["worst_objective"] > 0 and not agree["no_rule_beats_adding_nothing"]
    assert all(v["d_ssim"] > 0 and v["d_psnr_db"] > 0 for v in agree["inner_validation"].values())
    # inner models: one case each, scored on the other; never on a case they trained on
    assert agree["inner_validation"]["A"]["trained_on"] == ["B"]
    with pytest.raises(ValueError):
        recipe.gains(["A"], "A")
    disagree = recipe.nested_rule(["A", "C"])
    assert disagree["no_rule_beats_adding_nothing"] and disagree["rule"]["alpha"] == 0.0
    held = recipe.held_out(["A", "C"], "B", disagree["rule"])  # the chosen rule is what the held-out case gets
    assert held["d_psnr_db"] == 0.0 and held["d_ssim"] == 0.0
    assert recipe.held_out(["A", "B"], "C", agree["rule"])["d_psnr_db"] < 0  # the same rule would have hurt C


def test_scorer_is_the_validation_scripts_masked_ssim_and_psnr():
    from BBBAnomalyLib.metrics import psnr, ssim

    rng = np.random.default_rng(3)
    brain = np.pad(_brain((12, 20, 18)), ((4, 6), (9, 3), (2, 8)))
    t1 = np.where(brain, 99 + 25 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    ref = np.where(brain, t1 + 20 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    scorer = enhancer.SynthesisScorer(t1, ref, brain, slice_axis=2)
    added = np.abs(15 * rng.standard_normal(int(brain.sum()))).astype(np.float32)
    est = np.zeros_like(t1)
    est[brain] = np.clip(t1[brain] + added, 0, 255)
    got = scorer.gains(added)
    # the same float64 arithmetic on a crop that holds every window: equal to rounding
    assert got["ssim"] == pytest.approx(ssim(ref, est, brain, data_range=255.0, sigma=[1.5, 1.5, 0.0]), abs=1e-12)
    assert got["psnr_db"] == pytest.approx(psnr(ref, est, brain, data_range=255.0), abs=1e-9)
    assert scorer.baseline["ssim"] == pytest.approx(ssim(ref, t1, brain, data_range=255.0, sigma=[1.5, 1.5, 0.0]),
                                                    abs=1e-12)
    assert got["d_ssim"] == pytest.approx(got["ssim"] - scorer.baseline["ssim"])


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
