"""T1/FLAIR outputs a reader can rely on: the three-outcome BBB call, the plausibility of the tumor ROI,
the enhancement shrinkage (never worse than the T1 where the model is unsure) and the applicability
checks (a 7 mm, 18-slice input is flagged)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from BBBAnomalyLib import InputError
from BBBAnomalyLib.structural import identification
from BBBAnomalyLib.structural.applicability import check_structural_input
from BBBAnomalyLib.structural.enhancement import MIN_ENHANCEMENT, estimate_enhancement
from BBBAnomalyLib.structural.normalisation import to_unit
from BBBAnomalyLib.structural.tumor_roi import choose_roi


@settings(max_examples=200, deadline=None)
@given(plus=st.lists(st.floats(0, 1), min_size=1, max_size=12), data=st.data(),
       a=st.floats(0, 20), b=st.floats(-5, 5), low=st.floats(0.05, 0.49), high=st.floats(0.51, 0.95))
def test_the_call_never_contradicts_its_probability(plus, data, a, b, low, high):
    minus = data.draw(st.lists(st.floats(0, 1), min_size=len(plus), max_size=len(plus)))
    status = identification.contrastive_maximum(plus, minus, 0.5, (a, b), (low, high))
    p = status.probability
    if status.call == "disrupted":
        assert p >= high > 0.5
    elif status.call == "intact":
        assert p <= low < 0.5
    else:
        assert status.call == "indeterminate" and status.reasons
    if status.s_enhancing == status.s_non_enhancing:  # an exact tie is never a call
        assert status.call == "indeterminate"


@pytest.mark.parametrize("scores", [1.0, 0.0])
def test_exact_ties_of_the_per_label_scores_are_indeterminate(scores):
    status = identification.contrastive_maximum([scores] * 5, [scores] * 5, 0.5, (8.0, 3.0))
    assert status.s_enhancing == status.s_non_enhancing == scores
    assert status.call == "indeterminate" and "tie" in status.reasons[0]
    assert status.to_json()["call"] == "indeterminate" and status.to_json()["indeterminate_band"] == [0.35, 0.65]


def test_probability_inside_the_band_is_indeterminate_and_the_edges_call():
    assert identification.call_from_probability(0.5) == "indeterminate"
    assert identification.call_from_probability(0.65) == "disrupted"
    assert identification.call_from_probability(0.35) == "intact"
    assert identification.call_from_probability(0.64, (0.4, 0.6)) == "disrupted"
    with pytest.raises(ValueError):
        identification.call_from_probability(0.5, (0.6, 0.7))


def _brain_with_lesion(lesion_radius=8):
    shape = (60, 60, 40)
    grid = np.indices(shape)
    brain = ((grid[0] - 30) ** 2 + (grid[1] - 30) ** 2 + ((grid[2] - 20) * 1.3) ** 2) < 26 ** 2
    lesion = ((grid[0] - 22) ** 2 + (grid[1] - 30) ** 2 + (grid[2] - 20) ** 2) < lesion_radius ** 2
    rng = np.random.default_rng(0)
    flair = np.where(brain, 100 + 5 * rng.standard_normal(shape), 0.0)
    flair[lesion] += 60
    return brain, lesion, flair


def test_a_plausible_segmentation_carries_the_call_and_implausible_ones_say_why():
    brain, lesion, flair = _brain_with_lesion()
    ml = 0.008  # 2 mm voxels
    good = choose_roi(None, lesion * 0.95, flair, brain, ml)
    assert good.implausible == "" and good.source == "segmentation head"
    assert 0.5 < good.flair_abnormal_ml / good.volume_ml < 2
    tiny = np.zeros_like(lesion)
    tiny[22, 30, 19:21] = True
    assert "tiny" in choose_roi(None, tiny * 0.95, flair, brain, ml).implausible
    huge = brain & (np.indices(brain.shape)[0] > 25)  # half the brain for a 17 ml FLAIR abnormality
    assert "far from the FLAIR abnormality" in choose_roi(None, huge * 0.95, flair, brain, ml).implausible
    assert "uncertain" in choose_roi(None, lesion * 0.6, flair, brain, ml, threshold=0.5).implausible
    assert "found no tumor" in choose_roi(None, lesion * 0.2, flair, brain, ml).implausible
    user = choose_roi(tiny, lesion * 0.0, flair, brain, ml)
    assert user.source == "user" and user.implausible == ""  # a drawn ROI is the reader's decision


def _samples(t1_unit, changes):
    """(K, 2, n, H, W) syntheses on [-1, 1] from per-sample, per-label changes on the 0-255 scale."""
    return np.stack([[to_unit((t1_unit + 1) * 127.5 + c) for c in pair] for pair in changes])


def test_enhancement_is_added_only_where_the_model_is_sure():
    t1 = np.full((2, 8, 8), to_unit(np.float32(99.0)), np.float32)
    zero, forty = np.zeros_like(t1), np.full_like(t1, 40.0)
    # both labels and both noises agree on +40: added in full
    sure = estimate_enhancement(_samples(t1, [(forty, forty), (forty, forty)]), t1, 0.5)
    np.testing.assert_allclose(sure.added, 40.0, atol=0.05)
    # only the ET+ synthesis predicts it: nothing added unless p reaches the band's upper edge (k = 0.65 / 0.35)
    k = 0.65 / 0.35
    for p in (0.2, 0.5, 0.64):
        assert estimate_enhancement(_samples(t1, [(zero, forty)] * 2), t1, p, k).added.max() == 0
    confident = estimate_enhancement(_samples(t1, [(zero, forty)] * 2), t1, 0.95, k)
    assert 20 < confident.added.min() <= 40 * 0.95
    # the noises scatter as much as the effect: shrunk to 0
    scattered = estimate_enhancement(_samples(t1, [(forty, forty), (-forty, -forty)]), t1, 0.5)
    assert scattered.added.max() == 0 and scattered.spread.min() > 30
    # darkening is not enhancement, and small changes are noise
    assert estimate_enhancement(_samples(t1, [(-forty, -forty)] * 2), t1, 0.9).added.max() == 0
    small = np.full_like(t1, MIN_ENHANCEMENT - 1)
    assert estimate_enhancement(_samples(t1, [(small, small)] * 2), t1, 0.9).added.max() == 0


def _phantom_at(thickness_mm: float, n_slices: int, tumor: bool = False, seed: int = 3):
    """The 2 mm structural phantom resliced to ``thickness_mm`` axial slices, the middle ``n_slices`` kept."""
    from scipy import ndimage

    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    ph = make_structural_phantom(seed, tumor=tumor)
    factor = 2.0 / thickness_mm
    zoom = lambda a, order: ndimage.zoom(np.asarray(a, np.float32), (1, 1, factor), order=order)
    t1, flair, brain = zoom(ph.t1.data, 1), zoom(ph.flair.data, 1), zoom(ph.brain, 0) > 0.5
    mid = t1.shape[2] // 2
    cut = slice(max(mid - n_slices // 2, 0), max(mid - n_slices // 2, 0) + n_slices)
    affine = ph.t1.affine.copy()
    affine[:3, 2] *= thickness_mm / 2.0
    return t1[..., cut], flair[..., cut], brain[..., cut], affine


def test_a_7_mm_18_slice_input_is_flagged_and_a_2_mm_whole_brain_is_not():
    t1, flair, brain, affine = _phantom_at(7.0, 18)
    assert t1.shape[2] == 18
    result = check_structural_input(t1, flair, affine, brain, 2, mask_given=True)
    status = {c.name: c.status for c in result.checks}
    assert status["slice_thickness"] == "warning" and status["coverage_slices"] == "warning"
    assert any("7.0 mm" in w and "1-2 mm" in w for w in result.warnings)
    maps = result.maps()
    assert maps["anomaly"].startswith("outside") and "slice_thickness" in maps["synthetic_t1gd"]
    t1, flair, brain, affine = _phantom_at(2.0, 200)
    fine = check_structural_input(t1, flair, affine, brain, 2, mask_given=True)
    assert fine.warnings == [] and all(v == "within the trained range" for v in fine.maps().values())


def test_contrast_registration_and_skull_checks_catch_wrong_inputs():
    t1, flair, brain, affine = _phantom_at(2.0, 200)
    csf = (t1 > 0) & (t1 < np.percentile(t1[brain], 10))
    t2_like = np.where(brain, np.where(csf, 3 * t1.max(), t1), 0)  # CSF brightest: not a T1
    bad = {c.name: c.status for c in check_structural_input(t2_like, flair, affine, brain, 2, True).checks}
    assert bad["t1_contrast"] == "warning"
    shifted = np.roll(flair, 12, axis=1)
    moved = {c.name: c.status for c in check_structural_input(t1, shifted, affine, brain, 2, True).checks}
    assert moved["registration_overlap"] == "warning"
    head = np.where(t1 > 0, t1, 50.0)  # no zeros around the brain: not skull-stripped
    unstripped = {c.name: c.status for c in check_structural_input(head, flair, affine, brain, 2, False).checks}
    assert unstripped["skull_stripped"] == "warning"
    with pytest.raises(InputError, match="whole-brain"):
        check_structural_input(t1[..., 40:42], flair[..., 40:42], affine, brain[..., 40:42], 2, True)


def test_the_pipeline_reports_the_applicability_of_a_7_mm_input():
    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair
    from BBBAnomalyLib.core.volume import Volume

    t1, flair, brain, affine = _phantom_at(7.0, 18)
    res = run_t1flair(Volume(t1, affine), Volume(flair, affine),
                      T1FlairParameters(steps=1, samples=1, device="cpu", anomaly_map=False), brain_mask=brain)
    block = res.report["applicability"]
    assert {c["name"]: c["status"] for c in block["checks"]}["slice_thickness"] == "warning"
    assert any("slice thickness 7.0 mm" in w for w in res.report["warnings"])
    assert res.report["bbb_status"]["call"] == "indeterminate"  # no tumor: the segmentation cannot carry a call


@pytest.mark.parametrize("thickness, n_slices", [(2.0, 200), (7.0, 18)])
def test_a_swapped_t1_and_flair_are_flagged_by_their_grey_white_order(thickness, n_slices):
    from BBBAnomalyLib.structural.applicability import tissue_order

    t1, flair, brain, affine = _phantom_at(thickness, n_slices)
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    right = tissue_order(t1, flair, brain, vox)
    assert right["t1_wm_minus_gm"] > 0.2 and right["flair_gm_minus_wm"] > 0.2  # WM bright on T1, dark on FLAIR
    assert right["near_csf_fraction_gm"] > right["near_csf_fraction_wm"]  # the cortex lines the CSF
    checks = {c.name: c for c in check_structural_input(t1, flair, affine, brain, 2, True).checks}
    assert checks["t1_flair_order"].status == "ok"
    swapped = {c.name: c for c in check_structural_input(flair, t1, affine, brain, 2, True).checks}
    assert swapped["t1_flair_order"].status == "warning"
    assert "swapped" in swapped["t1_flair_order"].message and "--t1" in swapped["t1_flair_order"].message
    wrong = tissue_order(flair, t1, brain, vox)
    assert wrong["t1_wm_minus_gm"] == pytest.approx(-right["flair_gm_minus_wm"], abs=0.05)


@pytest.mark.shared_data
def test_a_swapped_real_t1_and_flair_are_flagged(shared_data):
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.cases import find_case_files

    files = find_case_files(shared_data / "brats" / "TCGA-FG-6692")
    t1, flair = read_volume(files["t1"]), read_volume(files["flair"]).data
    brain = (t1.data > 0) & (flair > 0)
    status = lambda a, b: {c.name: c.status for c in check_structural_input(a, b, t1.affine, brain, 2, True).checks}
    assert status(t1.data, flair)["t1_flair_order"] == "ok"
    assert status(flair, t1.data)["t1_flair_order"] == "warning"


@pytest.mark.parametrize("thickness, n_slices", [(2.0, 200), (7.0, 200)])
def test_a_swapped_pair_is_flagged_by_the_flair_bright_tail_of_a_lesion(thickness, n_slices):
    from BBBAnomalyLib.structural.applicability import MIN_T1_TAIL, bright_tail_fraction

    t1, flair, brain, affine = _phantom_at(thickness, n_slices, tumor=True, seed=4)
    # the FLAIR-bright lesion is a tail above the FLAIR's upper fence; a non-contrast T1 has none
    assert bright_tail_fraction(flair[brain]) > 2 * MIN_T1_TAIL > bright_tail_fraction(t1[brain])
    checks = lambda a, b: {c.name: c for c in check_structural_input(a, b, affine, brain, 2, True).checks}  # noqa: E731
    assert checks(t1, flair)["t1_flair_bright_tail"].status == "ok"
    swapped = checks(flair, t1)["t1_flair_bright_tail"]
    assert swapped.status == "warning" and "swapped" in swapped.message and "--t1" in swapped.message
    # no lesion, no tail: the cue abstains either way (the grey/white order still flags that swap)
    t1, flair, brain, affine = _phantom_at(thickness, n_slices)
    assert checks(t1, flair)["t1_flair_bright_tail"].status == checks(flair, t1)["t1_flair_bright_tail"].status == "ok"
    assert checks(flair, t1)["t1_flair_order"].status == "warning"


@pytest.mark.shared_data
def test_a_swapped_real_pair_whose_flair_has_bright_white_matter_is_flagged_by_the_tail(shared_data):
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.structural.cases import find_case_files

    files = find_case_files(shared_data / "brats" / "TCGA-DU-7294")
    t1, flair = read_volume(files["t1"]), read_volume(files["flair"]).data
    brain = (t1.data > 0) & (flair > 0)
    status = lambda a, b: {c.name: c.status for c in check_structural_input(a, b, t1.affine, brain, 2, True).checks}  # noqa: E731
    right, swapped = status(t1.data, flair), status(flair, t1.data)
    assert right["t1_flair_order"] == right["t1_flair_bright_tail"] == "ok"
    assert swapped["t1_flair_order"] == "ok"  # its FLAIR has white matter brighter than grey: the order cannot tell
    assert swapped["t1_flair_bright_tail"] == "warning"


def test_the_segmentation_weight_shrinks_p_and_the_call_follows_it():
    from BBBAnomalyLib.structural.tumor_roi import TumorROI

    roi = lambda conf, ml, flair_ml, why="": TumorROI(np.ones(3, bool), "segmentation head", ml, conf, flair_ml, why)
    assert roi(0.95, 30.0, 30.0).weight == 1.0  # confident, volume agrees with the FLAIR abnormality
    assert roi(0.95, 30.0, 15.0).weight == 1.0  # within 1/2-2x
    assert 0 < roi(0.95, 30.0, 12.0).weight < 1  # 2.5x: on the way to the implausible 3x
    assert roi(0.95, 30.0, 10.0).weight == pytest.approx(0.0, abs=1e-9)
    assert roi(0.775, 30.0, 30.0).weight == pytest.approx(0.5)  # halfway between 0.7 and 0.85
    assert roi(0.95, 30.0, 30.0, "tiny").weight == 0.0
    assert TumorROI(np.ones(3, bool), "user", 1.0, None, None).weight == 1.0
    status = identification.contrastive_maximum([0.9] * 8, [0.1] * 8, calibration=(3.0, 0.0))
    assert status.call == "disrupted" and status.probability > 0.9
    raw = status.probability
    status.temper(0.2, "weak segmentation")
    assert status.probability == pytest.approx(0.5 + 0.2 * (raw - 0.5))
    assert status.call == identification.call_from_probability(status.probability) == "indeterminate"
    assert status.to_json()["identifier_probability"] == raw and "weak segmentation" in status.reasons[0]
    strong = identification.contrastive_maximum([0.9] * 8, [0.1] * 8, calibration=(3.0, 0.0))
    strong.temper(0.9, "good segmentation")
    assert strong.call == "disrupted" and strong.probability < raw


def test_the_record_on_real_scans_weighs_p_by_its_auc_and_size():
    from BBBAnomalyLib.structural.real_evidence import MIN_RUNS_PER_CLASS, RealEvidence

    record = lambda labels, ps: RealEvidence.from_card({"real_evidence": {"runs": [
        {"label": y, "p": p} for y, p in zip(labels, ps)], "source": "test"}})
    none = RealEvidence.from_card({})
    assert none.weight == 0.0 and none.auc is None and "no record" in none.describe()
    k = MIN_RUNS_PER_CLASS
    perfect = record([1] * k + [0] * k, [0.9] * k + [0.1] * k)
    assert perfect.auc == 1.0 and perfect.weight == 1.0
    small = record([1] * (k - 1) + [0] * k, [0.9] * (k - 1) + [0.1] * k)
    assert small.auc == 1.0 and small.weight == 0.0 and "too small" in small.describe()
    inverted = record([1] * k + [0] * k, [0.1] * k + [0.9] * k)
    assert inverted.auc == 0.0 and inverted.weight == 0.0
    labels = [1] * 10 + [0] * 10
    same = list(np.linspace(0.3, 0.7, 10)) * 2  # the same p for both classes: chance
    assert record(labels, same).auc == pytest.approx(0.5) and record(labels, same).weight == 0.0
    from BBBAnomalyLib.metrics import roc_auc

    rng = np.random.default_rng(0)
    scores = rng.random(20)
    auc = roc_auc(labels, scores)
    assert record(labels, scores).weight == pytest.approx(np.clip((auc - 0.5) / 0.3, 0, 1))
    with pytest.raises(ValueError, match="labels"):
        record([2, 0], [0.5, 0.5])


def test_bundled_identifiers_are_at_chance_on_real_scans_so_their_weight_is_zero():
    from BBBAnomalyLib.structural.real_evidence import RealEvidence
    from BBBAnomalyLib.weights import read_card

    for name in ("t1flair-identifier-demo", "t1flair-identifier-phantom"):
        card, _ = read_card(name)
        evidence = RealEvidence.from_card(card)
        assert evidence.n_disrupted >= 2 and evidence.n_intact >= 2 and evidence.auc <= 0.5
        assert evidence.weight == 0.0


def test_a_zero_weight_gives_p_one_half_and_keeps_the_identifiers_own_p():
    status = identification.contrastive_maximum([0.9] * 8, [0.1] * 8, calibration=(3.0, 0.0))
    raw = status.probability
    status.temper(0.8, "segmentation weight 0.80")
    assert status.call == "disrupted"  # still decided: nothing noted
    assert not status.reasons
    status.temper(0.0, "no real record", always_note=True)
    assert status.probability == 0.5 and status.call == "indeterminate"
    assert status.identifier_probability == raw  # the first p, not the one after the ROI weight
    assert status.reasons == [f"no real record: p(disrupted) {0.5 + 0.8 * (raw - 0.5):.2f} shrunk to 0.50, "
                              "inside the band 0.35-0.65"]
    kept = identification.contrastive_maximum([0.9] * 8, [0.1] * 8, calibration=(3.0, 0.0))
    kept.temper(1.0, "full weight", always_note=True)
    assert kept.probability == raw and kept.identifier_probability is None and not kept.reasons
