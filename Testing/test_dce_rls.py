"""RLS on an independent phantom (other AIF, timing, tumor site, flip angle and T10s than any RLS training),
the automatic choice between per-case and bundled weights, and the per-voxel uncertainty map."""

import numpy as np
import pytest

pytest.importorskip("torch")

from BBBAnomalyLib.dce import DCEParameters, run_dce  # noqa: E402
from BBBAnomalyLib.dce.parameters import RLSSource  # noqa: E402
from BBBAnomalyLib.dce.rls import SER_SCALE, residual_maps  # noqa: E402
from BBBAnomalyLib.dce.rls_inference import PER_CASE_MIN_VOXELS, choose_source  # noqa: E402
from BBBAnomalyLib.metrics import roc_auc  # noqa: E402


@pytest.fixture(scope="module")
def independent():
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    # the settings of scripts/validate_rls.py (Georgiou AIF, 3.5 s frames, FA 25°, tumor in the left
    # hemisphere), a 4-slice slab through its tumor
    return make_dce_phantom(snr=30.0, aif="georgiou", frame_interval=3.5, duration=245.0, bolus_arrival=42.0,
                            flip_angle=25.0, tr=0.004, tumor_center_mm=(-30.0, -18.0, 22.0),
                            tumor_radii_mm=(12.0, 14.0, 11.0), slices=4, seed=511,
                            tissues={"gm": {"t10": 1.4}, "wm": {"t10": 0.9}, "rim": {"t10": 1.3, "ve": 0.25, "vp": 0.04}})


@pytest.fixture(scope="module")
def auto_result(independent):
    m = independent.masks
    return run_dce(independent.signal, DCEParameters(), aif_mask=m["aif"], brain_mask=m["brain"],
                   t10_map=independent.truth["t10"])


def test_auto_uses_the_bundled_weights_without_a_tumor_mask_and_says_why(auto_result):
    rls = auto_result.report["rls"]
    assert rls["source"] == "bundled" and "no tumor mask" in rls["choice"]["reason"]
    assert any("RLS: bundled weights" in w for w in auto_result.report["warnings"])


def test_bundled_rls_finds_the_leak_on_the_independent_phantom(independent, auto_result):
    m = independent.masks
    rls = auto_result.maps["rls"].data
    assert np.median(rls[m["enhancing"]]) > 5.0 * max(np.median(rls[m["nawm"]]), 0.1)
    tissue = m["brain"] & ~m["vessels"]
    assert roc_auc(m["leaky"][tissue], rls[tissue]) > 0.9
    unc = auto_result.maps["rls_uncertainty"].data
    # in the leaky rim RLS is far above its own noise level
    assert np.median(rls[m["enhancing"]] / np.maximum(unc[m["enhancing"]], 1e-6)) > 3.0
    assert "rls_vascular" not in auto_result.maps


def test_choose_source_rules():
    assert choose_source(300.0, 20000, False)[0] is RLSSource.BUNDLED
    assert choose_source(600.0, 20000, True)[0] is RLSSource.BUNDLED
    assert choose_source(180.0, 20000, True)[0] is RLSSource.BUNDLED
    assert choose_source(300.0, PER_CASE_MIN_VOXELS - 1, True)[0] is RLSSource.BUNDLED
    source, reason = choose_source(300.0, 20000, True)
    assert source is RLSSource.CASE and "trained on this case" in reason


def test_rls_uncertainty_grows_with_the_noise_of_the_curve():
    rng = np.random.default_rng(0)
    n = 60
    post = np.arange(n) >= 10
    clean = np.where(post, 0.02 * np.exp(-np.arange(n) / 40.0), 0.0)
    x = np.tile(np.r_[clean, np.ones(4)], (2, 1)).astype(np.float32)
    x[0, :n] += 0.001 * rng.standard_normal(n)
    x[1, :n] += 0.01 * rng.standard_normal(n)
    maps = residual_maps(x, x.copy(), post)
    assert maps["rls_uncertainty"][1] > 5 * maps["rls_uncertainty"][0]
    # σ/√n of the post-contrast entries, in % SER
    assert maps["rls_uncertainty"][1] == pytest.approx(0.01 / np.sqrt(post.sum()) * SER_SCALE * 100, rel=0.35)


def test_bundled_weights_warn_outside_their_training_domain_only(independent):
    from BBBAnomalyLib.core.volume import Volume

    m = independent.masks
    common = dict(aif_mask=m["aif"], brain_mask=m["brain"], t10_map=independent.truth["t10"])
    inside = run_dce(independent.signal, DCEParameters(rls="bundled"), **common)
    assert not any("outside the range" in w for w in inside.report["warnings"])  # 245 s at 3.5 s: trained on
    sig = independent.signal
    keep = np.arange(0, sig.n_frames, 4)  # 14 s frames: the weights saw 1-10 s
    coarse = Volume(sig.data[..., keep], sig.affine, sig.times[keep], sig.acquisition)
    res = run_dce(coarse, DCEParameters(rls="bundled"), **common)
    assert any("frame interval 14 s is outside the range" in w for w in res.report["warnings"])
