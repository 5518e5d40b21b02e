"""Two-compartment exchange (2CXM) and uptake (2CUM) models: the closed-form impulse response
against the ODEs, the linear forms, noise-free and noisy reference objects with an arterial delay,
the OSIPI DCE-model reference objects (with OSIPI's tolerances), and the pipeline and CLI wiring."""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from BBBAnomalyLib.dce.exchange import ExchangeModel, exchange_curves
from BBBAnomalyLib.perfusion.population_aif import parker_aif

DATA = Path(__file__).parent / "Data" / "osipi"
csv.field_size_limit(1 << 28)


def _ode_curve(fp, ps, ve, vp, t_min, ca, uptake=False):
    """Ct from the compartment ODEs integrated numerically (the definition, independent of the
    closed form): vp cp' = Fp (ca - cp) - PS (cp - ce), ve ce' = PS (cp - ce) [ce' = PS cp/ve... for 2CUM
    the interstitium never returns: ve ce' = PS cp]."""
    def rhs(t, state):
        cp, n_e = state  # n_e = ve·ce, the interstitial amount
        a = np.interp(t, t_min, ca)
        back = 0.0 if uptake else ps * n_e / ve
        return [(fp * (a - cp) - ps * cp + back) / vp, ps * cp - back]
    sol = solve_ivp(rhs, (t_min[0], t_min[-1]), [0.0, 0.0], t_eval=t_min, rtol=1e-10, atol=1e-13, max_step=0.002)
    return vp * sol.y[0] + sol.y[1]


@pytest.mark.parametrize("uptake", [False, True])
def test_closed_form_matches_the_odes(uptake):
    t = np.arange(0, 300.5, 0.5) / 60.0
    ca = parker_aif(t, delay=10 / 60) / 0.58
    fp, ps, ve, vp = 0.6, 0.08, 0.2, 0.05
    ours = exchange_curves(ca, t, fp, ps, ve, vp, uptake=uptake)[0]
    ode = _ode_curve(fp, ps, ve, vp, t, ca, uptake)
    np.testing.assert_allclose(ours, ode, atol=2e-5 * ode.max())


def _reference_object(uptake, n=400, dt=2.0, delay=4.0, noise=0.0, seed=0):
    """Random tissue on a clinical grid: Parker AIF, frames every dt s, the tissue curves delayed."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, 300.0 + dt / 2, dt)
    aif = parker_aif(t / 60, delay=30 / 60) / 0.58
    truth = {"fp": rng.uniform(0.1, 1.0, n), "ps": rng.uniform(0.02, 0.2, n), "ve": rng.uniform(0.1, 0.5, n),
             "vp": rng.uniform(0.02, 0.1, n)}
    late = np.interp(t - delay, t, aif, left=0.0)
    clean = exchange_curves(late, t / 60, truth["fp"], truth["ps"], truth["ve"], truth["vp"], uptake=uptake)
    return t, aif, truth, clean + noise * rng.standard_normal(clean.shape)


@pytest.mark.parametrize("uptake", [False, True])
def test_noise_free_reference_object_with_delay(uptake):
    """Noise-free curves of the exact forward model with a 4 s delay (on the 1 s grid): Fp, PS, ve, vp
    recovered to 1e-3 relative (the fit's own convergence, not discretisation: same forward model)."""
    t, aif, truth, curves = _reference_object(uptake)
    fit = ExchangeModel(aif, t, uptake=uptake, max_delay=8.0, delay_step=1.0).fit(curves)
    np.testing.assert_array_equal(fit.delay, 4.0)
    np.testing.assert_allclose(fit.fp, 100 * truth["fp"], rtol=1e-3)
    np.testing.assert_allclose(fit.ps, truth["ps"], rtol=1e-3)
    np.testing.assert_allclose(fit.vp, truth["vp"], rtol=1e-3)
    if not uptake:
        np.testing.assert_allclose(fit.ve, truth["ve"], rtol=1e-3)
        np.testing.assert_allclose(fit.te, 60 * truth["ve"] / truth["ps"], rtol=3e-3)
    e = truth["ps"] / (truth["fp"] + truth["ps"])
    np.testing.assert_allclose(fit.e, e, rtol=2e-3)
    np.testing.assert_allclose(fit.ktrans, e * truth["fp"], rtol=2e-3)
    np.testing.assert_allclose(fit.tc, 60 * truth["vp"] / truth["fp"], rtol=2e-3)
    assert fit.r2.min() > 1 - 1e-6


def test_linear_initialisation_alone_is_close_on_fine_sampling():
    """The linear forms are exact in continuous time: with 0.5 s frames and no noise, the linear
    solution alone (no Levenberg-Marquardt) is within the trapezoid integration error."""
    t, aif, truth, curves = _reference_object(False, n=100, dt=0.5, delay=0.0)
    fit = ExchangeModel(aif, t, iterations=0).fit(curves)
    np.testing.assert_allclose(fit.fp, 100 * truth["fp"], rtol=0.03)
    np.testing.assert_allclose(fit.vp, truth["vp"], rtol=0.03)
    np.testing.assert_allclose(fit.ps, truth["ps"], rtol=0.05)
    np.testing.assert_allclose(fit.ve, truth["ve"], rtol=0.05)


@pytest.mark.parametrize("uptake", [False, True])
def test_noisy_reference_object(uptake):
    """SD 0.01 mM noise (peak tissue ~0.3-1 mM), 2 s frames, 4 s delay: median absolute relative
    errors are a few percent for Fp and vp, larger for PS (and ve), and the delay is found."""
    t, aif, truth, curves = _reference_object(uptake, n=300, noise=0.01, seed=1)
    fit = ExchangeModel(aif, t, uptake=uptake, max_delay=8.0).fit(curves)
    rel = lambda est, true: np.median(np.abs(est / true - 1))  # noqa: E731
    assert rel(fit.fp / 100, truth["fp"]) < 0.08
    assert rel(fit.vp, truth["vp"]) < 0.08
    assert rel(fit.ps, truth["ps"]) < 0.15
    if not uptake:
        assert rel(fit.ve, truth["ve"]) < 0.15
    assert np.median(np.abs(fit.delay - 4.0)) <= 1.0


def _osipi(name):
    with gzip.open(DATA / f"{name}.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    series = lambda r, k: np.array(r[k].split(), float)  # noqa: E731
    t, cp = series(rows[0], "t"), series(rows[0], "cp_aif")
    assert all(np.array_equal(series(r, "cp_aif"), cp) and np.array_equal(series(r, "t"), t) for r in rows)
    return rows, t, cp, np.stack([series(r, "C_t") for r in rows])


@pytest.mark.parametrize("name,uptake,delayed", [
    ("2cxm_sd_0.001_delay_0", False, False), ("2cxm_sd_0.001_delay_5", False, True),
    ("2cum_sd_0.0025_delay_0", True, False), ("2cum_sd_0.0025_delay_5", True, True)])
def test_osipi_reference_objects(name, uptake, delayed):
    """Every OSIPI case within OSIPI's tolerances (vp, ve 0.025/0.05 absolute; Fp 5 ml/100 ml/min +
    10 %; PS 0.005 /min + 10 %; delay 1 s) — osipy 0.1.4 passes 23/24, 22/24 (delay), 27/27, 27/27."""
    rows, t, cp, curves = _osipi(name)
    fit = ExchangeModel(cp, t, uptake=uptake, max_delay=8.0 if delayed else 0.0, delay_step=0.5).fit(curves)
    ref = {k: np.array([float(r[k]) for r in rows]) for k in ("vp", "fp", "ps", "arterial_delay")}
    np.testing.assert_allclose(fit.vp, ref["vp"], rtol=0, atol=0.025)
    np.testing.assert_allclose(fit.fp, ref["fp"], rtol=0.1, atol=5)
    np.testing.assert_allclose(fit.ps, ref["ps"], rtol=0.1, atol=0.005)
    if not uptake:
        np.testing.assert_allclose(fit.ve, [float(r["ve"]) for r in rows], rtol=0, atol=0.05)
    np.testing.assert_allclose(fit.delay, ref["arterial_delay"], atol=1.0)


def test_pipeline_and_cli_offer_the_exchange_models(tmp_path):
    """`bbbanomaly dce --model 2cxm` on a small concentration series: the maps of the model exist,
    carry the units of the report and recover a uniform tissue."""
    import nibabel as nib

    from BBBAnomalyLib.cli import main
    from BBBAnomalyLib.app.pipelines import PIPELINES

    t, aif, _, _ = _reference_object(False, n=1)
    shape = (6, 6, 2)
    tissue = exchange_curves(np.interp(t - 2.0, t, aif, left=0.0), t / 60, 0.5, 0.1, 0.3, 0.05)[0]
    data = np.broadcast_to(tissue, shape + (t.size,)).copy()
    data[0, 0, :] = aif * 0.58  # an artery (whole blood)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), tmp_path / "conc.nii.gz")
    aif_mask = np.zeros(shape, np.uint8)
    aif_mask[0, 0, :] = 1
    nib.save(nib.Nifti1Image(aif_mask, np.eye(4)), tmp_path / "aif.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)), tmp_path / "brain.nii.gz")
    out = tmp_path / "out"
    rc = main(["dce", str(tmp_path / "conc.nii.gz"), "--input-kind", "concentration", "--frame-interval", "2",
               "--aif-mask", str(tmp_path / "aif.nii.gz"), "--mask", str(tmp_path / "brain.nii.gz"),
               "--hematocrit", "0.42", "--model", "2cxm", "--rls", "none", "--out", str(out), "--quiet"])
    assert rc == 0
    tissue_voxels = aif_mask == 0
    for name, value in (("fp", 50.0), ("ps", 0.1), ("ve", 0.3), ("vp", 0.05), ("delay", 2.0)):
        np.testing.assert_allclose(nib.load(out / f"{name}.nii.gz").get_fdata()[tissue_voxels], value, rtol=1e-3)
    for name in ("ktrans", "e", "tc", "te"):
        assert (out / f"{name}.nii.gz").exists(), name
    assert "2cxm" in [v for v, _ in next(p for p in PIPELINES["dce"].parameters if p.name == "model").choices]


def test_recursive_rate_derivative_matches_finite_differences():
    """The Jacobian's building block: d/dK of the exact convolution, from the same recursion, equals a
    central difference of the convolution itself (to the difference's own truncation error)."""
    from BBBAnomalyLib.dce.exchange import exp_convolution_rows

    t = np.concatenate([np.arange(0, 60, 2.0), np.arange(60, 300, 5.0)]) / 60  # non-uniform frames
    cp = np.broadcast_to(parker_aif(t, delay=0.3), (4, t.size))
    k = np.array([0.0, 0.05, 1.0, 12.0])
    _, d = exp_convolution_rows(cp, t, k, derivative=True)
    h = 1e-5 * np.maximum(k, 1.0)
    numeric = (exp_convolution_rows(cp, t, k + h) - exp_convolution_rows(cp, t, np.maximum(k - h, 0.0))) / (
        (k + h) - np.maximum(k - h, 0.0))[:, None]
    # at K = 0 both differences are one-sided: truncation error ~h·(d²E/dK²)/(dE/dK) ~ 1e-5 · t
    np.testing.assert_allclose(d, numeric, rtol=1e-4, atol=1e-9 * np.abs(numeric).max())
    np.testing.assert_allclose(d[1:], numeric[1:], rtol=1e-6, atol=1e-9 * np.abs(numeric).max())
