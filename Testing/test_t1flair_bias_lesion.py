"""N4 fitted with the lesion left out (`--bias-correct n4-lesion-out`, structural/bias_field.py).

Session 20 found N4's field following the tumour and its edema on the real cases (its log field 0.24-0.37 higher
there on the FLAIR than in the rest of the brain), dividing out a fifth to a third of the lesion's hyperintensity.
Here, on a small phantom brain (the shipped MNI anatomy at 4 mm, a FLAIR-like and a T1-like contrast) with a
bright FLAIR lesion (dark on the T1) and a known smooth field: plain N4 takes most of the lesion's contrast with
the field, the lesion-out fit keeps it and still removes the field; the report says what was left out; the
default stays "none".
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.structural import T1FlairParameters
from BBBAnomalyLib.structural import bias_field

VOXEL = (4.0, 4.0, 4.0)
FIT_MM = 8.0  # N4 fitted on a 2x shrunk copy: a few seconds per fit


@pytest.fixture(scope="module")
def phantom():
    """(t1, flair, brain, field, lesion core, normal ring, clean t1, clean flair): a lesion of 16 mm radius at
    1.9x (FLAIR) / 0.7x (T1) with a 10 mm rim falling to normal, 2 % noise, and one smooth field (a ±15 % ramp
    across and a quadratic 10 % bowl front to back, in the log) on both images."""
    from BBBAnomalyLib.phantoms.anatomy import load_anatomy

    anatomy = load_anatomy()  # 2 mm MNI: every other voxel makes a 4 mm brain of ~33 000 voxels
    fractions, brain = anatomy.fractions[::2, ::2, ::2], anatomy.brain[::2, ::2, ::2]
    centre = np.argwhere(brain).mean(axis=0) + np.array([4.0, 0.0, 0.0])
    grid = np.indices(brain.shape)
    radius_mm = np.sqrt(sum(((grid[i] - centre[i]) * VOXEL[i]) ** 2 for i in range(3)))
    profile = np.clip((26.0 - radius_mm) / 10.0, 0.0, 1.0)  # 1 inside 16 mm, 0 beyond 26 mm
    rng = np.random.default_rng(0)

    def image(weights, lesion_gain):
        clean = (fractions @ np.asarray(weights, np.float32)) * (1.0 + lesion_gain * profile)
        return np.where(brain, clean + rng.normal(0.0, 0.02, brain.shape), 0.0).astype(np.float32)

    flair, t1 = image((0.2, 0.75, 0.6), 0.9), image((0.3, 0.62, 1.0), -0.3)
    x = np.linspace(-1.0, 1.0, brain.shape[2])[None, None, :]
    y = np.linspace(-1.0, 1.0, brain.shape[1])[None, :, None]
    field = np.broadcast_to(np.exp(0.15 * x + 0.1 * y ** 2), brain.shape).astype(np.float32)
    core, ring = brain & (radius_mm < 12.0), brain & (radius_mm > 40.0) & (radius_mm < 60.0)
    return t1 * field, flair * field, brain, field, core, ring, t1, flair


@pytest.fixture(scope="module")
def corrected(phantom):
    t1, flair, brain = phantom[:3]
    out = {}
    for method in ("n4", "n4-lesion-out"):
        warnings = []
        out[method] = bias_field.correct_pair(t1, flair, brain, VOXEL, method, warnings, threads=1,
                                                fit_spacing_mm=FIT_MM) + (warnings,)
    return out


def _contrast(image, core, ring):
    """The lesion's log contrast: mean in its core over the mean in a ring of normal brain around it."""
    return float(np.log(image[core].mean() / image[ring].mean()))


def test_the_lesion_out_fit_keeps_the_lesion_contrast_where_plain_n4_removes_it(phantom, corrected):
    """The field's own effect on the core-vs-ring contrast is ~0.02 (the biased image's contrast is within that of
    the clean one); a fit that leaves the lesion alone must land within 0.1 log units of the clean contrast
    (FLAIR 0.67, T1 -0.24). Plain N4 took 0.55 of the FLAIR's 0.67 on this phantom (the bright lesion is a separate
    histogram mode that a 4-level B-spline can follow): it must lose more than 0.2 of the FLAIR's."""
    t1, flair, brain, field, core, ring, clean_t1, clean_flair = phantom
    for index, clean in ((0, clean_t1), (1, clean_flair)):
        truth = _contrast(clean, core, ring)
        plain = _contrast(corrected["n4"][index], core, ring)
        kept = _contrast(corrected["n4-lesion-out"][index], core, ring)
        assert abs(truth) > 0.2  # the phantom's lesion is there
        print(f"image {index}: contrast clean {truth:.3f}, plain N4 {plain:.3f}, lesion left out {kept:.3f}")
        assert abs(kept - truth) < 0.1, (index, kept, truth)
        if index == 1:  # the T1's dark lesion sits within the GM-WM range: plain N4 leaves it (0.245 of 0.238)
            assert abs(plain) < abs(truth) - 0.2, (index, plain, truth)


def test_the_lesion_out_fit_still_removes_the_field(phantom, corrected):
    """Outside the lesion the divided-out field is the applied one up to a constant: rms error under half the
    field's own rms (0.065 log units; measured ~0.02 on the FLAIR: the B-spline bridges the left-out ball from the
    brain around it). Plain N4's field error on this phantom is about the field's size (it fits the lesion too)."""
    t1, flair, brain, field, core, ring, clean_t1, clean_flair = phantom
    for index, biased in ((0, t1), (1, flair)):
        out = corrected["n4-lesion-out"][index]
        inside = brain & (biased > 0) & (out > 0)
        removed = np.log(biased[inside] / out[inside])
        true = np.log(field[inside])
        error = np.sqrt(np.mean(((removed - removed.mean()) - (true - true.mean())) ** 2))
        assert error < 0.5 * true.std(), (index, error, true.std())


def test_the_report_says_what_was_left_out(phantom, corrected):
    t1, flair, brain, field, core, ring = phantom[:6]
    _, _, report, warnings = corrected["n4-lesion-out"]
    assert report["method"] == "n4-lesion-out" and not warnings
    left_out = report["lesion_excluded"]
    # the lesion (16 mm core + 10 mm rim: ~74 ml) grown by 8 mm: more than the core, well under the brain (~2100 ml)
    assert 20.0 < left_out["excluded_ml"] < 0.4 * brain.sum() * np.prod(VOXEL) / 1000.0
    assert left_out["core_ml"] < left_out["excluded_ml"]
    assert left_out["k"] == bias_field.LESION_K and left_out["dilation_mm"] == bias_field.LESION_DILATION_MM
    for name in ("t1", "flair"):
        assert report[name]["method"] == "n4-lesion-out"
        # the fit used fewer voxels than the brain's: the lesion's were left out
        assert report[name]["fit_voxels"] < corrected["n4"][2][name]["fit_voxels"]
    assert "lesion_excluded" not in corrected["n4"][2]
    # and what was left out covers the lesion's core
    mask, info = bias_field.lesion_estimate(flair, brain, VOXEL, threads=1, fit_spacing_mm=FIT_MM)
    assert mask[core].all() and not mask[ring].all()
    assert info["excluded_ml"] == left_out["excluded_ml"]


def test_a_mostly_hyperintense_brain_falls_back_to_the_whole_brain_fit_with_a_warning(phantom, monkeypatch):
    """If the estimate would leave out more than MAX_EXCLUDED_FRACTION of the brain, the fit keeps the whole brain
    and says so: a field extrapolated over most of the brain would be worse than one that follows a lesion. (The
    N4 fits themselves are replaced by a recorder of what they were asked to leave out: the previous tests ran them.)"""
    t1, flair, brain = phantom[:3]
    monkeypatch.setattr(bias_field, "MAX_EXCLUDED_FRACTION", 0.001)
    asked = []

    def recorder(data, brain, voxel_mm, name, warnings, *args, exclude=None, **kwargs):
        asked.append(exclude)
        return data, {"method": "n4"}

    monkeypatch.setattr(bias_field, "correct", recorder)
    warnings = []
    _, _, report = bias_field.correct_pair(t1, flair, brain, VOXEL, "n4-lesion-out", warnings, threads=1,
                                           fit_spacing_mm=FIT_MM)
    assert report["lesion_excluded"]["ignored"] is True and report["lesion_excluded"]["excluded_ml"] > 0
    assert len(warnings) == 1 and "FLAIR-hyperintense" in warnings[0]
    assert asked == [None, None]
    monkeypatch.setattr(bias_field, "MAX_EXCLUDED_FRACTION", 0.4)
    bias_field.correct_pair(t1, flair, brain, VOXEL, "n4-lesion-out", [], threads=1, fit_spacing_mm=FIT_MM)
    assert all(mask is not None and mask.any() for mask in asked[2:]) and len(asked) == 4


def test_the_default_is_unchanged_and_the_option_is_accepted():
    assert T1FlairParameters().bias_correct == "none"
    assert T1FlairParameters(bias_correct="n4-lesion-out").bias_correct == "n4-lesion-out"
    with pytest.raises(InputError, match="bias_correct"):
        T1FlairParameters(bias_correct="n4-lesion")


# the CLI option reaching the run: test_t1flair_bias_correction.py::test_the_cli_option_reaches_the_run
