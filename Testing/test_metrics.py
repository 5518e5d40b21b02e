"""BBBAnomalyLib.metrics against values worked by hand and known identities."""

import doctest

import numpy as np
import pytest

from BBBAnomalyLib import metrics
from BBBAnomalyLib.metrics import (
    bootstrap_ci, dice, lin_ccc, pearson_r, psnr, ratio_of_means, relative_bias, roc_auc, ssim, youden_cutoff
)


def test_docstring_examples():
    assert doctest.testmod(metrics).failed == 0


# --- accuracy -----------------------------------------------------------------------------------
def test_relative_bias_by_hand():
    # (+20 %) and (-10 %) -> mean +5 %; the voxel with truth 0 is ignored, not a division by zero
    assert relative_bias([1.2, 1.8, 7.0], [1.0, 2.0, 0.0]) == pytest.approx(5.0)
    assert relative_bias([2.0, 2.0], [2.0, 2.0]) == 0.0
    assert np.isnan(relative_bias([1.0], [0.0]))


def test_relative_bias_respects_mask():
    e = np.array([[1.5, 0.5], [3.0, 4.0]])
    t = np.array([[1.0, 1.0], [3.0, 4.0]])
    assert relative_bias(e, t, mask=np.array([[True, False], [False, False]])) == pytest.approx(50.0)
    assert relative_bias(e, t, mask=np.array([[False, False], [True, True]])) == 0.0


def test_ratio_of_means_differs_from_mean_relative_error():
    # ROI average: (1.2 + 1.8)/(1 + 2) = 1 exactly, while the voxelwise mean error is +5 %
    assert ratio_of_means([1.2, 1.8], [1.0, 2.0]) == pytest.approx(1.0)
    assert ratio_of_means([2.0, 4.0], [1.0, 2.0]) == pytest.approx(2.0)
    assert np.isnan(ratio_of_means([1.0], [0.0]))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        relative_bias([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        lin_ccc([1, 2], [1, 2], mask=[True])


# --- agreement ----------------------------------------------------------------------------------
def test_ccc_of_identical_is_one():
    x = np.random.default_rng(0).normal(size=200)
    assert lin_ccc(x, x) == pytest.approx(1.0)


def test_ccc_by_hand():
    # x = 1, 2, 3; y = x + 1: s_x² = s_y² = s_xy = 2/3 (1/n moments), mean difference 1
    # ρc = 2·(2/3) / (2/3 + 2/3 + 1²) = 4/7
    assert lin_ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    # y = 2x: s_x² = 2/3, s_y² = 8/3, s_xy = 4/3, means 2 and 4 -> 2·(4/3) / (2/3 + 8/3 + 4) = 4/11
    assert lin_ccc([1, 2, 3], [2, 4, 6]) == pytest.approx(4 / 11)


def test_ccc_penalises_offset_and_slope_but_pearson_does_not():
    x = np.random.default_rng(1).normal(10.0, 2.0, size=500)
    for y in (x + 3.0, 1.5 * x, 0.8 * x + 1.0):
        assert pearson_r(x, y) == pytest.approx(1.0)
        assert lin_ccc(x, y) < 0.95
    # the offset penalty follows the closed form 2 s² / (2 s² + d²)
    s2 = x.var()
    assert lin_ccc(x, x + 3.0) == pytest.approx(2 * s2 / (2 * s2 + 9.0))


def test_ccc_is_pearson_times_bias_correction():
    rng = np.random.default_rng(2)
    x = rng.normal(size=300)
    y = 0.7 * x + rng.normal(scale=0.5, size=300) + 0.3
    sx, sy = x.std(), y.std()
    v, u = sx / sy, (x.mean() - y.mean()) / np.sqrt(sx * sy)
    cb = 2.0 / (v + 1.0 / v + u * u)
    assert lin_ccc(x, y) == pytest.approx(pearson_r(x, y) * cb)


def test_pearson_matches_numpy_and_handles_constant():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 100))
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson_r(x, -x) == pytest.approx(-1.0)
    assert np.isnan(pearson_r(np.ones(5), np.arange(5)))


# --- classification -----------------------------------------------------------------------------
def test_auc_perfect_inverted_and_by_hand():
    labels = [0, 0, 0, 1, 1, 1]
    assert roc_auc(labels, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]) == 1.0
    assert roc_auc(labels, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]) == 0.0
    # pairs (pos, neg) ordered correctly: scores neg {1, 3}, pos {2, 4}: (2>1) (2<3) (4>1) (4>3) -> 3/4
    assert roc_auc([0, 1, 0, 1], [1, 2, 3, 4]) == pytest.approx(0.75)


def test_youden_on_a_known_split():
    # negatives 1, 2, 3, 4, 6; positives 5, 7, 8, 9.
    # cut >= 5: TPR 4/4, FPR 1/5 (the 6) -> J 0.80; cut >= 7: TPR 3/4, FPR 0 -> J 0.75; others lower
    labels = [0] * 5 + [1] * 4
    cut = youden_cutoff(labels, [1, 2, 3, 4, 6, 5, 7, 8, 9])
    assert cut.threshold == 5
    assert cut.sensitivity == pytest.approx(1.0)
    assert cut.specificity == pytest.approx(0.8)
    assert cut.j == pytest.approx(0.8)


def test_youden_ties_go_to_the_more_specific_cut():
    # negatives 1..5, positives 4.5, 5.5, 6, 7, 8: >= 4.5 (TPR 1, FPR 0.2) and >= 5.5 (TPR 0.8, FPR 0)
    # both give J 0.8; the higher threshold wins
    cut = youden_cutoff([0] * 5 + [1] * 5, [1, 2, 3, 4, 5, 4.5, 5.5, 6, 7, 8])
    assert cut.threshold == 5.5
    assert (cut.sensitivity, cut.specificity) == pytest.approx((0.8, 1.0))


def test_youden_perfect_separation():
    cut = youden_cutoff([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (cut.threshold, cut.sensitivity, cut.specificity, cut.j) == (0.8, 1.0, 1.0, 1.0)


# --- bootstrap ----------------------------------------------------------------------------------
def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(4)
    small = rng.normal(5.0, 1.0, size=30)
    large = rng.normal(5.0, 1.0, size=3000)
    ci_small = bootstrap_ci(np.mean, small, n=1000, seed=0)
    ci_large = bootstrap_ci(np.mean, large, n=1000, seed=0)
    for ci, x in ((ci_small, small), (ci_large, large)):
        assert ci.estimate == pytest.approx(x.mean())
        assert ci.low < ci.estimate < ci.high
    # width ~ 2·1.96·σ/√n: 10x the samples -> ~√100 = 10x narrower
    w_small, w_large = ci_small.high - ci_small.low, ci_large.high - ci_large.low
    assert w_large < w_small / 5
    assert w_small == pytest.approx(2 * 1.96 * small.std() / np.sqrt(small.size), rel=0.25)


def test_bootstrap_ci_is_paired_and_reproducible():
    rng = np.random.default_rng(5)
    x = rng.normal(size=200)
    y = x + rng.normal(scale=0.1, size=200)
    a = bootstrap_ci(pearson_r, x, y, n=500, seed=7)
    b = bootstrap_ci(pearson_r, x, y, n=500, seed=7)
    assert a == b
    # paired resampling keeps the strong correlation in every resample (unpaired would give ~0)
    assert a.low > 0.97
    c = bootstrap_ci(np.mean, x, n=500, alpha=0.5, seed=7)
    d = bootstrap_ci(np.mean, x, n=500, alpha=0.05, seed=7)
    assert (c.high - c.low) < (d.high - d.low)
    with pytest.raises(ValueError):
        bootstrap_ci(pearson_r, x, y[:10])


# --- image similarity ---------------------------------------------------------------------------
def _image(seed=6, shape=(48, 48)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 100 + 50 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    img[10:30, 15:35] += 40.0
    return img + np.random.default_rng(seed).normal(scale=1.0, size=shape)


def test_psnr_identical_is_inf_and_by_hand():
    ref = _image()
    assert psnr(ref, ref) == np.inf
    # constant error 1 -> MSE 1 -> PSNR = 20·log10(L)
    assert psnr(ref, ref + 1.0, data_range=100.0) == pytest.approx(40.0)
    L = ref.max() - ref.min()
    assert psnr(ref, ref - 2.0) == pytest.approx(10 * np.log10(L * L / 4.0))
    mask = np.zeros(ref.shape, bool)
    mask[5:20, 5:20] = True
    est = ref.copy()
    est[~mask] += 50.0  # errors outside the mask do not count
    assert psnr(ref, est, mask=mask) == np.inf


def test_ssim_identical_is_one_and_decreases_with_noise():
    ref = _image()
    rng = np.random.default_rng(8)
    assert ssim(ref, ref) == 1.0
    values = [ssim(ref, ref + rng.normal(scale=s, size=ref.shape)) for s in (1.0, 5.0, 20.0)]
    assert 1.0 > values[0] > values[1] > values[2]
    mask = np.zeros(ref.shape, bool)
    mask[8:40, 8:40] = True
    assert ssim(ref, ref, mask=mask) == 1.0
    noisy = ref + rng.normal(scale=5.0, size=ref.shape)
    assert ssim(ref, noisy, mask=mask) < 1.0


def test_ssim_by_hand_on_constant_images():
    # constant x = a, y = b: σ terms vanish, SSIM = (2ab + C1)/(a² + b² + C1)
    a, b, L = 10.0, 12.0, 20.0
    c1 = (0.01 * L) ** 2
    got = ssim(np.full((16, 16), a), np.full((16, 16), b), data_range=L)
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_ssim_mask_ignores_outside_structure():
    ref = _image()
    mask = np.zeros(ref.shape, bool)
    mask[12:36, 12:36] = True
    est = ref.copy()
    est[~mask] = 0.0  # destroy everything outside: windows at the border must not see it
    assert ssim(ref, est, mask=mask, data_range=100.0) == pytest.approx(1.0)
    assert ssim(ref, est, data_range=100.0) < 0.9


def test_ssim_works_in_3d():
    vol = np.stack([_image(seed=s) for s in range(6)], axis=-1)
    assert ssim(vol, vol, sigma=(1.5, 1.5, 0)) == 1.0
    assert ssim(vol, vol + 10.0 * np.random.default_rng(9).normal(size=vol.shape), sigma=(1.5, 1.5, 0)) < 0.9


def test_dice():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 voxels
    b[1:3, :2] = True  # 4 voxels, 2 shared -> 2·2 / 8
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros(5), np.zeros(5)) == 1.0


# --- ratio_bias and log_interval_coverage (issue 14, round 11: the numbers a reader of rCBF and of the
# uncertainty map relies on) ------------------------------------------------------------------------------
def test_ratio_bias_cancels_a_common_factor_and_keeps_a_tissue_one():
    rng = np.random.default_rng(0)
    truth = np.r_[np.full(50, 60.0), np.full(50, 22.0)]
    roi, ref = np.r_[np.ones(50, bool), np.zeros(50, bool)], np.r_[np.zeros(50, bool), np.ones(50, bool)]
    noise = 1.0 + 0.01 * rng.standard_normal(100)
    common = 1.4 * truth * noise  # an AIF-scale error: absolute bias +40 %, the ratio unbiased
    assert abs(metrics.ratio_of_means(common, truth, roi) - 1.4) < 0.01
    assert abs(metrics.ratio_bias(common, truth, roi, ref)) < 1.0
    shrunk = np.where(ref, 1.3, 1.0) * truth  # the reference tissue over-read by 30 %: the ratio 1/1.3 of truth
    assert metrics.ratio_bias(shrunk, truth, roi, ref) == pytest.approx(100 * (1 / 1.3 - 1), rel=1e-12)
    assert np.isnan(metrics.ratio_bias(truth, truth, roi, np.zeros(100, bool)))


def test_log_interval_coverage_reads_an_honest_and_an_overconfident_sd():
    rng = np.random.default_rng(1)
    n = 20_000
    truth = rng.uniform(10, 100, n)
    sd = rng.uniform(0.1, 0.6, n)
    estimate = truth * np.exp(sd * rng.standard_normal(n))
    honest = metrics.log_interval_coverage(estimate, truth, sd)
    # binomial SD of a 95 % share over 20 000 voxels is 0.0015: 0.01 is > 6 of them
    assert honest["coverage"] == pytest.approx(0.95, abs=0.01)
    assert honest["informative"] == 1.0 and honest["nonpositive"] == 0.0 and np.isnan(honest["nonpositive_flagged"])
    over = metrics.log_interval_coverage(estimate, truth, sd / 2)  # half the true spread: ±0.98 SD holds 67 %
    assert over["coverage"] == pytest.approx(0.673, abs=0.015)
    one_sd = metrics.log_interval_coverage(estimate, truth, sd, z=1.0)
    assert one_sd["coverage"] == pytest.approx(0.683, abs=0.015)


def test_log_interval_coverage_counts_nonpositive_estimates_as_misses_and_reports_their_flags():
    truth = np.full(4, 50.0)
    estimate = np.array([50.0, 0.0, -5.0, 49.0])
    sd = np.array([0.2, 2.0, 0.5, 1.5])  # the zero flagged (sd >= 1), the negative one not
    r = metrics.log_interval_coverage(estimate, truth, sd)
    assert r["informative"] == 0.5 and r["coverage"] == 0.5  # informative: 50 (inside) and -5 (a miss)
    assert r["coverage_all"] == 0.5  # 50 and 49 inside
    assert r["nonpositive"] == 0.5 and r["nonpositive_flagged"] == 0.5
    with pytest.raises(ValueError, match="positive truth"):
        metrics.log_interval_coverage(estimate, np.zeros(4), sd)
