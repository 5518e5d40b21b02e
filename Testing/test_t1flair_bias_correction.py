"""N4 bias-field correction in the T1/FLAIR pipeline (`--bias-correct`, structural/bias_field.py).

Session 19's audit found a smooth ±15 % multiplicative field dropping the anomaly map's tumour AUC on TCGA-FG-6692
from 0.86 to 0.68 (±30 %: 0.37) with no word; the pipeline now corrects the T1 and the FLAIR inside the brain
(scripts/t1flair_bias_field.py measures it on the real cases). Here, on small images: N4 removes a known field,
the inputs are never changed, the report says what was done, `none` leaves the networks' inputs exactly as
before, and the CLI option parses and refuses bad values.
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair
from BBBAnomalyLib.structural import bias_field
from BBBAnomalyLib.structural.normalisation import normalise


def _anatomy_image():
    """A bias-free T1-like image on the shipped MNI 2 mm anatomy: CSF/GM/WM fractions x (0.3, 0.62, 1), 2 % noise."""
    from BBBAnomalyLib.phantoms.anatomy import load_anatomy

    anatomy = load_anatomy()
    image = anatomy.fractions @ np.array([0.30, 0.62, 1.00], np.float32)
    noise = np.random.default_rng(0).normal(0.0, 0.02, image.shape)
    return np.where(anatomy.brain, image + noise, 0.0).astype(np.float32), anatomy.brain


def _ramp(brain, axis, amplitude):
    """1 - amplitude .. 1 + amplitude linearly along ``axis`` across the brain's extent."""
    idx = np.argwhere(brain)[:, axis]
    lo, hi = idx.min(), idx.max()
    c = (np.arange(brain.shape[axis]) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))
    shape = [1, 1, 1]
    shape[axis] = -1
    return np.broadcast_to(1.0 + amplitude * c.reshape(shape), brain.shape).astype(np.float32)


def test_n4_removes_a_known_smooth_field():
    """A ±20 % ramp on a bias-free image: the corrected biased image must be the corrected clean image.

    N4 invents a small field of its own on any image (partial volume, noise): on this one about 1 % rms with the
    test's coarse 8 mm fit grid. The field it removes from the biased image, beyond what it removes from the clean
    one, must be the applied ramp: its cubic B-spline holds a linear ramp exactly, so what is left is the fit's
    own error, which must stay under a tenth of the ramp's rms (9 %; measured 0.3-0.7 % on this image and on
    TCGA-FG-6692). Without the correction the error is the ramp itself (1.0 x its rms)."""
    clean, brain = _anatomy_image()
    field = _ramp(brain, 2, 0.20)
    biased = clean * field
    warnings = []
    out_biased, info = bias_field.correct(biased, brain, (2.0, 2.0, 2.0), "T1", warnings, fit_spacing_mm=8.0)
    out_clean, _ = bias_field.correct(clean, brain, (2.0, 2.0, 2.0), "T1", warnings, fit_spacing_mm=8.0)
    inside = brain & (clean > 0)
    true = np.log(field[inside])
    true -= true.mean()
    removed = np.log(biased[inside] / out_biased[inside]) - np.log(clean[inside] / out_clean[inside])
    removed -= removed.mean()
    error = np.sqrt(np.mean((removed - true) ** 2))
    assert error < 0.1 * true.std(), (error, true.std())
    # the report's range: the ramp's ±20 % (0.8-1.2) times the small field N4 finds on the clean image itself
    # (0.91-1.09 at this fit grid), i.e. within about 0.73-1.31 (since session 22 the field is evaluated over the fit
    # grid's own span: the earlier evaluation stretched it by 3-4 % and kept it under 1.25 here)
    assert info["method"] == "n4" and not warnings
    assert 0.7 < info["field_min"] < 0.9 and 1.1 < info["field_max"] < 1.32
    assert info["shrink"] == [4, 4, 4]


def test_the_input_array_is_not_modified_and_outside_the_brain_is_kept():
    """A float32 array is what np.asarray hands back unchanged: correcting in place would change the caller's."""
    clean, brain = _anatomy_image()
    biased = clean * _ramp(brain, 0, 0.3)
    biased[~brain] = 7.0  # a background that must come back as it was
    before = biased.copy()
    out, _ = bias_field.correct(biased, brain, (2.0, 2.0, 2.0), "T1", [], fit_spacing_mm=8.0)
    np.testing.assert_array_equal(biased, before)
    assert out is not biased and not np.shares_memory(out, biased)
    np.testing.assert_array_equal(out[~brain], before[~brain])
    assert not np.array_equal(out[brain], before[brain])


def test_a_zero_centred_image_is_left_as_it_is_with_a_warning():
    clean, brain = _anatomy_image()
    z = np.where(brain, (clean - clean[brain].mean()) / clean[brain].std(), 0.0).astype(np.float32)
    warnings = []
    out, info = bias_field.correct(z, brain, (2.0, 2.0, 2.0), "FLAIR", warnings)
    np.testing.assert_array_equal(out, z)
    assert info["method"] == "none" and info["reason"] == "zero-centred image"
    assert len(warnings) == 1 and "FLAIR" in warnings[0] and "z-scored" in warnings[0]


# --- the pipeline -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slab():
    """Ten axial slices of a tumour phantom with a ±25 % ramp on the T1 and the opposite one on the FLAIR."""
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    ph = make_structural_phantom(5001, enhancing=True)
    k = int(np.argmax((ph.seg.data > 0).sum(axis=(0, 1))))
    cut = lambda a: np.ascontiguousarray(a[:, :, k - 5:k + 5])
    shift = np.eye(4)
    shift[2, 3] = k - 5
    affine = ph.t1.affine @ shift
    brain = cut(ph.brain)
    ramp = _ramp(brain, 0, 0.25)
    return (Volume(cut(ph.t1.data) * ramp, affine), Volume(cut(ph.flair.data) / ramp, affine), brain)


FAST = dict(steps=1, samples=1, device="cpu", anomaly_map=False, enhancer_weights=None, threads=1)


@pytest.fixture(scope="module")
def runs(slab):
    t1, flair, brain = slab
    before = (t1.data.copy(), flair.data.copy())
    out = {setting: run_t1flair(t1, flair, T1FlairParameters(bias_correct=setting, **FAST), brain_mask=brain)
           for setting in ("n4", "none")}
    return out, before


def test_the_pipeline_never_changes_the_input_volumes(slab, runs):
    t1, flair, _ = slab
    _, (t1_before, flair_before) = runs
    np.testing.assert_array_equal(t1.data, t1_before)
    np.testing.assert_array_equal(flair.data, flair_before)


def test_the_report_says_what_was_done(runs):
    (results, _) = runs
    report = results["n4"].report
    assert report["parameters"]["bias_correct"] == "n4"
    block = report["bias_field"]
    assert block["method"] == "n4"
    for name in ("t1", "flair"):
        info = block[name]
        assert info["method"] == "n4"
        assert set(info) >= {"field_min", "field_max", "field_p1", "field_p99", "shrink", "iterations", "seconds"}
        assert info["field_min"] <= info["field_p1"] <= 1.0 <= info["field_p99"] <= info["field_max"]
    # the ramp's ±25 % was found in both images (a geometric mean of 1: the T1's low end below 0.85)
    assert block["t1"]["field_p1"] < 0.9 and block["flair"]["field_p1"] < 0.9
    assert "bias_field" in report["timings_s"]
    assert results["none"].report["bias_field"] == {"method": "none"}


def test_none_gives_the_networks_the_images_as_given_and_n4_does_not(slab, runs):
    """`none`: the networks' inputs are the normalised input images exactly (the result before this option);
    `n4`: they are not, and the synthetic T1Gd differs."""
    t1, flair, brain = slab
    results, _ = runs
    plain, corrected = results["none"], results["n4"]
    grid = plain.extras["grid"]
    np.testing.assert_array_equal(plain.extras["network_t1"], grid.to_network(normalise(t1.data, brain, "t1"), -1.0))
    np.testing.assert_array_equal(plain.extras["network_flair"],
                                  grid.to_network(normalise(flair.data, brain, "flair"), -1.0))
    assert not np.array_equal(corrected.extras["network_t1"], plain.extras["network_t1"])
    assert not np.array_equal(corrected.maps["synthetic_t1gd"].data, plain.maps["synthetic_t1gd"].data)


def test_the_parameters_refuse_an_unknown_method():
    with pytest.raises(InputError, match="bias_correct"):
        T1FlairParameters(bias_correct="n3")
    assert T1FlairParameters(bias_correct="none").to_json()["bias_correct"] == "none"


# --- the CLI ------------------------------------------------------------------------------------------------------
def test_the_cli_option_reaches_the_run(tmp_path, monkeypatch):
    from bad_input_helpers import write_structural_case

    from BBBAnomalyLib.structural import pipeline

    case = write_structural_case(tmp_path / "in")
    seen = []

    def fake_run(t1, flair, params, **kwargs):
        seen.append(params.bias_correct)
        raise InputError("stopped after the parameters")

    monkeypatch.setattr(pipeline, "run_t1flair", fake_run)
    for extra, expected in (([], T1FlairParameters().bias_correct), (["--bias-correct", "none"], "none"),
                            (["--bias-correct", "n4"], "n4"), (["--bias-correct", "n4-lesion-out"], "n4-lesion-out")):
        code = main(["t1flair", "--t1", str(case["t1"]), "--flair", str(case["flair"]), "--out",
                     str(tmp_path / f"out{len(seen)}"), *extra])
        assert code == 2 and seen[-1] == expected


def test_the_cli_refuses_a_bad_value_with_exit_2(tmp_path, capsys):
    """argparse's own refusal: exit 2 and one line naming the option and its choices, nothing written."""
    from bad_input_helpers import error_lines, tree_hashes, write_structural_case

    case = write_structural_case(tmp_path / "in")
    before = tree_hashes(case["t1"].parent)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["t1flair", "--t1", str(case["t1"]), "--flair", str(case["flair"]), "--bias-correct", "n3",
              "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--bias-correct" in lines[0] and "'n4', 'none'" in lines[0], lines
    assert not (tmp_path / "out").exists() and tree_hashes(case["t1"].parent) == before


# --- one real case ------------------------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_n4_removes_a_ramp_from_a_real_t1(shared_data):
    """TCGA-FG-6692's T1 with a ±15 % ramp along the head's long axis, at the pipeline's own fit settings: the
    field removed beyond what N4 removes from the scan as given is the ramp, within a tenth of its rms (measured
    0.003 of 0.055 rms for session 19's field)."""
    import nibabel as nib

    path = shared_data / "brats" / "TCGA-FG-6692" / "TCGA-FG-6692_t1_bet.nii.gz"
    t1 = np.asarray(nib.load(str(path)).dataobj, np.float32)
    brain = t1 != 0
    field = _ramp(brain, 1, 0.15)
    biased = t1 * field
    out_biased, _ = bias_field.correct(biased, brain, (1.0, 1.0, 1.0), "T1", [])
    out_plain, _ = bias_field.correct(t1, brain, (1.0, 1.0, 1.0), "T1", [])
    inside = brain & (t1 > 0)
    true = np.log(field[inside])
    true -= true.mean()
    removed = np.log(biased[inside] / out_biased[inside]) - np.log(t1[inside] / out_plain[inside])
    removed -= removed.mean()
    assert np.sqrt(np.mean((removed - true) ** 2)) < 0.1 * true.std()
