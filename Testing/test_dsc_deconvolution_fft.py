"""The frequency-domain deconvolution equals the explicit circulant-matrix SVD it replaced.

`Reference` below is the matrix implementation the project used before (an SVD of the full
L x L block-circulant matrix, projections onto its singular vectors, the oSVD threshold scan and
the Tikhonov GCV grid), kept here verbatim in method as the oracle. The production code never
forms that matrix: it filters the spectrum of each curve (see BBBAnomalyLib/dsc/deconvolution.py).

Tolerances follow the arithmetic, not one machine: both sides work in float32, and the residue
b = A⁺c amplifies a relative rounding error of order eps32 · sqrt(L) in c (FFT or dot-product
accumulation over L terms) by at most 1/σmin of the kept components, so
|b_fft - b_ref| <= K · eps32 · sqrt(L) · ||c|| / σmin_kept with a small constant K. Discrete
choices (the oSVD threshold, the GCV λ) may differ only where the reference's criterion sits
within that rounding of its decision boundary, and the test checks exactly that.
"""

import numpy as np
import pytest

from BBBAnomalyLib.dsc import DSCParameters, DeconvolutionModel, run_dsc
from BBBAnomalyLib.dsc.deconvolution import (
    OSVD_THRESHOLDS, bin_multiplicity, circulant_matrix, circulant_spectrum, oscillation_index
)
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.phantoms.dsc_physics import gamma_variate_aif, tissue_concentration

EPS32 = float(np.finfo(np.float32).eps)
K = 16  # rounding constant: a few float32 operations per term, both implementations


class Reference:
    """The explicit-matrix deconvolution (SVD of the L x L circulant), float32 projections."""

    def __init__(self, aif, dt, method, csvd_threshold=0.1, oi_target=0.095, n_lambdas=40):
        self.n = len(aif)
        self.method, self.oi_target = method, oi_target
        u, s, vt = np.linalg.svd(circulant_matrix(aif, dt))
        self.u, self.s, self.vt_n = u[: self.n], s, vt[:, : self.n]
        self.csvd_threshold = csvd_threshold
        self.lambdas = s[0] * np.geomspace(1e-3, 1.0, n_lambdas)
        self._operators = {}

    def truncated(self, c, threshold):
        keep = self.s >= threshold * self.s[0]
        key = int(keep.sum())
        if key not in self._operators:  # one operator per distinct component count
            self._operators[key] = ((self.u[:, keep] / self.s[keep]) @ self.vt_n[keep]).astype(np.float32)
        return c.astype(np.float32) @ self._operators[key]

    def sigma_min_kept(self, threshold):
        return self.s[self.s >= threshold * self.s[0]].min()

    def osvd_scan(self, c):
        """OI of every voxel at every threshold of the grid (n_thr, n_vox) and the chosen index."""
        ois = np.array([oscillation_index(self.truncated(c, thr)) for thr in OSVD_THRESHOLDS])
        ok = ois <= self.oi_target
        # The lowest threshold meeting the target; among thresholds that keep the same components the
        # lowest one is reported. No threshold met: the largest.
        chosen = np.where(ok.any(axis=0), np.argmax(ok, axis=0), OSVD_THRESHOLDS.size - 1)
        return ois, chosen

    def tikhonov(self, c):
        coeff = c.astype(np.float32) @ self.u.astype(np.float32)
        f = self.s[None, :] ** 2 / (self.s[None, :] ** 2 + self.lambdas[:, None] ** 2)
        denom = (self.s.size - f.sum(axis=1)) ** 2
        gcv = (coeff.astype(np.float64) ** 2) @ ((1.0 - f) ** 2).T / denom  # (n, n_lambda)
        idx = np.argmin(gcv, axis=1)
        residue = np.stack([(coeff[v] * f[idx[v]] / self.s) @ self.vt_n for v in range(c.shape[0])])
        return residue, idx, gcv


def residue_tolerance(c, sigma_min, size):
    return K * EPS32 * np.sqrt(size) * np.linalg.norm(c, axis=1) / sigma_min


# --- curves: the forward model's reference curves and the DSC phantom's ------------------------------
def reference_curves(n_frames, dt, noise, seed=0, n=300):
    t = np.arange(n_frames) * dt
    aif_fn = lambda x: gamma_variate_aif(x, arrival=10.0, peak=50.0)  # noqa: E731
    rng = np.random.default_rng(seed)
    cbv = rng.uniform(0.01, 0.1, n)
    mtt = rng.uniform(2.0, 12.0, n)
    curves = np.vstack([
        tissue_concentration(t, aif_fn, cbv[:n // 2], mtt[:n // 2], residue="exponential"),
        tissue_concentration(t, aif_fn, cbv[n // 2:], mtt[n // 2:], delay=2.0, residue="gamma"),
    ])
    curves = curves + noise * rng.standard_normal(curves.shape)
    return aif_fn(t), curves.astype(np.float32)


@pytest.fixture(scope="module")
def phantom_curves():
    """ΔR2* of a 3-slice DSC phantom at SNR 50 (per-frame tissue CNR about 1-4), as the pipeline makes them."""
    phantom = make_dsc_phantom(snr=50, slices=3, seed=4)
    res = run_dsc(phantom.signal, DSCParameters(leakage_correction="none"), aif_mask=phantom.masks["aif"],
                  brain_mask=phantom.masks["brain"], keep_curves=True)
    curves = res.delta_r2s.data[res.brain_mask]
    return res.aif, float(res.times[1] - res.times[0]), curves[:: max(1, curves.shape[0] // 3000)]


CASES = [(60, 1.5, 0.0), (60, 1.5, 0.3), (90, 1.0, 0.1), (120, 1.0, 0.5)]


# --- the spectrum is the SVD ------------------------------------------------------------------------
def test_circulant_singular_values_are_the_spectrum_magnitudes():
    aif, _ = reference_curves(60, 1.5, 0.0, n=2)
    s = np.linalg.svd(circulant_matrix(aif, 1.5), compute_uv=False)
    spectrum = np.abs(circulant_spectrum(aif, 1.5))
    expanded = np.sort(np.repeat(spectrum, bin_multiplicity(120).astype(int)))[::-1]
    np.testing.assert_allclose(expanded, s, rtol=0, atol=64 * np.finfo(float).eps * s[0])


# --- cSVD --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_frames,dt,noise", CASES)
@pytest.mark.parametrize("threshold", [0.1, 0.02])
def test_csvd_equals_the_matrix_svd(n_frames, dt, noise, threshold):
    aif, c = reference_curves(n_frames, dt, noise)
    ref = Reference(aif, dt, "csvd")
    fit = DeconvolutionModel(aif, dt, "csvd", csvd_threshold=threshold).fit(c, keep_residue=True)
    expected = ref.truncated(c, threshold)
    tol = residue_tolerance(c, ref.sigma_min_kept(threshold), 2 * n_frames)
    assert np.all(np.abs(fit.residue - expected).max(axis=1) <= tol)
    assert np.all(fit.regularisation == np.float32(threshold))


# --- oSVD --------------------------------------------------------------------------------------------
def check_osvd(aif, dt, c, oi_target):
    ref = Reference(aif, dt, "osvd", oi_target=oi_target)
    fit = DeconvolutionModel(aif, dt, "osvd", oi_target=oi_target).fit(c, keep_residue=True)
    ois, chosen = ref.osvd_scan(c)
    size = 2 * c.shape[1]
    # The reported threshold is the lowest grid value keeping the same singular components.
    chosen_thr = OSVD_THRESHOLDS[chosen]
    same = np.isclose(fit.regularisation, chosen_thr, rtol=1e-6) | np.array([
        ref.sigma_min_kept(fit.regularisation[v]) == ref.sigma_min_kept(chosen_thr[v]) for v in range(c.shape[0])])
    unmet_ref = ~(ois <= oi_target).any(axis=0)
    np.testing.assert_array_equal(fit.unmet[same], unmet_ref[same])
    for v in np.flatnonzero(~same):  # only where the reference's OI is within rounding of the target
        residue = ref.truncated(c[v:v + 1], chosen_thr[v])[0]
        tol = residue_tolerance(c[v:v + 1], ref.sigma_min_kept(OSVD_THRESHOLDS[0]), size)[0]
        oi_tol = (4.0 + oi_target) * tol / max(residue.max(), 1e-30)
        near = np.abs(ois[:, v] - oi_target) <= oi_tol
        assert near.any(), (v, fit.regularisation[v], chosen_thr[v])
    for v in np.flatnonzero(same):
        expected = ref.truncated(c[v:v + 1], chosen_thr[v])[0]
        tol = residue_tolerance(c[v:v + 1], ref.sigma_min_kept(chosen_thr[v]), size)[0]
        assert np.abs(fit.residue[v] - expected).max() <= tol, v
    return same.mean(), chosen


@pytest.mark.parametrize("n_frames,dt,noise", CASES)
@pytest.mark.parametrize("oi_target", [0.035, 0.095])
def test_osvd_equals_the_matrix_threshold_scan(n_frames, dt, noise, oi_target):
    aif, c = reference_curves(n_frames, dt, noise, seed=int(100 * noise))
    agreement, chosen = check_osvd(aif, dt, c, oi_target)
    assert agreement >= 0.99
    if noise:
        assert np.unique(chosen).size > 3  # the voxels really choose different thresholds


def test_osvd_equals_the_matrix_threshold_scan_on_the_phantom(phantom_curves):
    aif, dt, c = phantom_curves
    agreement, chosen = check_osvd(aif, dt, c, 0.095)
    assert agreement >= 0.99 and np.unique(chosen).size > 3


# --- Tikhonov ----------------------------------------------------------------------------------------
def check_tikhonov(aif, dt, c):
    ref = Reference(aif, dt, "tikhonov")
    fit = DeconvolutionModel(aif, dt, "tikhonov").fit(c, keep_residue=True)
    expected, idx, gcv = ref.tikhonov(c)
    lam_fft = np.argmin(np.abs(ref.lambdas[None, :] / ref.s[0] - fit.regularisation[:, None]), axis=1)
    same = lam_fft == idx
    rows = np.arange(c.shape[0])
    # A different λ only where the two GCV values tie within float32 rounding of a sum over L terms.
    gcv_tol = K * EPS32 * np.sqrt(2 * c.shape[1]) * gcv[rows, idx]
    assert np.all(gcv[rows, lam_fft][~same] - gcv[rows, idx][~same] <= gcv_tol[~same])
    # The Tikhonov operator's gain is at most 1/(2λ) (σ/(σ²+λ²) peaks at σ = λ) and at most 1/σmin.
    gain = np.minimum(1.0 / (2.0 * ref.lambdas[idx]), 1.0 / ref.s.min())
    tol = K * EPS32 * np.sqrt(2 * c.shape[1]) * np.linalg.norm(c, axis=1) * gain
    err = np.abs(fit.residue - expected).max(axis=1)
    assert np.all(err[same] <= tol[same])
    return same.mean(), idx


@pytest.mark.parametrize("n_frames,dt,noise", CASES)
def test_tikhonov_equals_the_matrix_gcv(n_frames, dt, noise):
    aif, c = reference_curves(n_frames, dt, noise, seed=1 + int(100 * noise))
    agreement, idx = check_tikhonov(aif, dt, c)
    assert agreement >= 0.99
    if noise:
        assert np.unique(idx).size > 3


def test_tikhonov_equals_the_matrix_gcv_on_the_phantom(phantom_curves):
    aif, dt, c = phantom_curves
    agreement, idx = check_tikhonov(aif, dt, c)
    assert agreement >= 0.99 and np.unique(idx).size > 3


# --- chunking and dtype do not change the answer -----------------------------------------------------
@pytest.mark.parametrize("method", ["ssvd", "csvd", "osvd", "tikhonov"])
def test_chunks_and_input_dtype_do_not_change_the_result(method):
    aif, c = reference_curves(60, 1.5, 0.3, n=500)
    whole = DeconvolutionModel(aif, 1.5, method).fit(c, keep_residue=True)
    chunked = DeconvolutionModel(aif, 1.5, method, chunk_voxels=77).fit(c.astype(np.float64), keep_residue=True)
    # BLAS may block a 77-row product differently: a choice may flip only at a rounding-level tie.
    same = whole.regularisation == chunked.regularisation
    assert same.mean() >= 0.99
    np.testing.assert_allclose(chunked.residue[same], whole.residue[same], rtol=0,
                               atol=K * EPS32 * np.abs(whole.residue).max())


def test_the_panels_model_curves_come_from_the_run_itself(dsc_phantom):
    """keep_curves=True returns each voxel's AIF ⊗ residue from the one deconvolution pass (the panel
    once deconvolved a second time to plot them): equal to synthesising the kept residue."""
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc

    for method in ("osvd", "tikhonov", "csvd", "ssvd"):
        result = run_dsc(dsc_phantom.signal, DSCParameters(method=method), aif_mask=dsc_phantom.masks["aif"],
                         keep_curves=True)
        curves = result.curves()
        (label, fitted), = curves.fitted.items()
        assert method in label.lower()
        measured = result.delta_r2s.data[result.brain_mask]
        model = DeconvolutionModel(result.aif, float(result.times[1] - result.times[0]), method,
                                   chunk_voxels=result.report["parameters"]["chunk_voxels"])
        refit = model.fit(measured, keep_residue=True)
        expected = model.synthesize(refit.residue)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(fitted, expected, rtol=0, atol=1e-4 * scale)  # float32 product of N terms


@pytest.mark.parametrize("n_frames,dt,noise", CASES)
def test_osvd_analysis_product_is_the_filtered_spectrum(n_frames, dt, noise):
    """oSVD's weights come from one real (2K, N) product, not an rFFT: they are the rFFT of the
    zero-padded curve divided by the AIF's spectrum, bin by bin, to the float32 rounding of the
    matrix entries (each product term off by at most eps32 of itself)."""
    aif, c = reference_curves(n_frames, dt, noise, n=50)
    model = DeconvolutionModel(aif, dt, "osvd")
    order = model._osvd_order
    assert order.size == model._osvd_counts[-1] <= n_frames + 1  # only the bins some threshold keeps
    expected = np.fft.rfft(c.astype(np.float64), n=2 * n_frames, axis=1)[:, order] / circulant_spectrum(aif, dt)[order]
    analysis = model._osvd_analysis.astype(np.float64)
    weights = c.astype(np.float64) @ analysis.T
    bound = 2 * EPS32 * (np.abs(c.astype(np.float64)) @ np.abs(analysis).T) + 1e-12 * np.abs(weights)
    assert np.all(np.abs(weights[:, 0::2] - expected.real) <= bound[:, 0::2])
    assert np.all(np.abs(weights[:, 1::2] - expected.imag) <= bound[:, 1::2])


def test_osvd_scan_start_changes_no_choice():
    """The scan starts above the rarely chosen, most regularised thresholds (a step set from a
    sample of the curves); voxels that meet the target only below it are scanned again there. The
    choices, residues and unmet flags equal those of the full scan from the first step."""
    aif, clean = reference_curves(90, 1.0, 0.05, seed=5, n=2000)
    _, noisy = reference_curves(90, 1.0, 3.0, seed=6, n=40)  # these need the most regularisation
    c = np.vstack([clean, noisy])
    fit = DeconvolutionModel(aif, 1.0, "osvd").fit(c, keep_residue=True)
    model = DeconvolutionModel(aif, 1.0, "osvd")
    start = model._osvd_first_step(c, model._block_voxels())
    assert start > 0
    full = DeconvolutionModel(aif, 1.0, "osvd")
    full._osvd_first_step = lambda curves, block: 0
    expected = full.fit(c, keep_residue=True)
    chosen_steps = np.searchsorted(-model._osvd_thresholds, -fit.regularisation)
    assert (chosen_steps[~fit.unmet] < start).any()  # some voxels were decided below the start
    np.testing.assert_array_equal(fit.regularisation, expected.regularisation)
    np.testing.assert_array_equal(fit.unmet, expected.unmet)
    np.testing.assert_array_equal(fit.residue, expected.residue)
