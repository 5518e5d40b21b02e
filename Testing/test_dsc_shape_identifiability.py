"""Issue 14, round 15: the Cramér-Rao bound on log CBF with the capillary transit shape known or free
(scripts/dsc_shape_identifiability.py), the numbers docs/validation.md quotes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import dsc_shape_identifiability as ident  # noqa: E402

TIMES = np.arange(120) * 1.0


def test_with_only_cbf_unknown_the_bound_is_the_noise_over_the_curves_norm():
    """C is linear in CBF, so d C / d log CBF = C and the one-parameter bound is sigma / ||C|| exactly."""
    jac = ident.jacobian(TIMES, 60.0, 4.0, 3.0)
    curve = ident.tissue_curve(TIMES, 60.0, 4.0, 0.0, 3.0)
    np.testing.assert_allclose(jac[:, 0], curve, rtol=0, atol=0)
    sigma = 0.01
    assert ident.crlb_log_cbf(jac, sigma, (0,)) == pytest.approx(sigma / np.linalg.norm(curve), rel=1e-12)


def test_the_derivatives_agree_with_a_ten_times_larger_step():
    jac = ident.jacobian(TIMES, 40.0, 6.0, 1.5, delay_s=1.0)
    h = 1e-3
    d_mtt = (ident.tissue_curve(TIMES, 40.0, 6.0 * np.exp(h), 1.0, 1.5)
             - ident.tissue_curve(TIMES, 40.0, 6.0 * np.exp(-h), 1.0, 1.5)) / (2 * h)
    d_k = (ident.tissue_curve(TIMES, 40.0, 6.0, 1.0, 1.5 * np.exp(h))
           - ident.tissue_curve(TIMES, 40.0, 6.0, 1.0, 1.5 * np.exp(-h))) / (2 * h)
    # central differences: the error is O(h^2) of the curve's scale, far below its size
    scale = np.abs(jac[:, 0]).max()
    np.testing.assert_allclose(jac[:, 1], d_mtt, atol=1e-5 * scale)
    np.testing.assert_allclose(jac[:, 3], d_k, atol=1e-5 * scale)


def test_more_unknowns_never_lower_the_bound_and_the_shape_costs_most_at_low_snr():
    for cbf, mtt, k in ((20.0, 6.0, 1.0), (60.0, 4.0, 3.0), (120.0, 3.0, 8.0)):
        jac = ident.jacobian(TIMES, cbf, mtt, k)
        b = [ident.crlb_log_cbf(jac, 0.01, free) for free in ((0,), (0, 1), (0, 1, 2), (0, 1, 2, 3))]
        assert all(x <= y * (1 + 1e-9) for x, y in zip(b, b[1:]))
        assert b[3] > 1.5 * b[2]  # not knowing the shape is the largest single cost
    rows = ident.object_bounds(snrs=(20, 200), shapes=(3.0,), timings=((1.0, 120),))
    low, high = (np.median(r["free_pct"]) for r in rows)
    assert low == pytest.approx(10 * high, rel=1e-6)  # the bound scales as 1/SNR


def test_the_kept_bounds_are_what_the_script_computes():
    kept = json.loads((ROOT / "docs" / "figures" / "phae_round15_shape_crlb.json").read_text(encoding="utf-8"))
    now = ident.object_bounds(snrs=(20,), shapes=(1.0, 3.0), timings=((2.0, 60),))
    for r in now:
        then = next(x for x in kept if (x["dt"], x["snr"], x["k"]) == (r["dt"], r["snr"], r["k"]))
        np.testing.assert_allclose(r["free_pct"], then["free_pct"], rtol=1e-6)
        np.testing.assert_allclose(r["known_pct"], then["known_pct"], rtol=1e-6)


@pytest.mark.parametrize("args", [["--shapes", "0.5"], ["--snrs", "0"]])
def test_bad_options_get_one_line(args, capsys):
    assert ident.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


# --- --roi: can 100 voxels tell their shape? --------------------------------------------------------------------
def test_the_grid_fit_returns_a_template_curves_flow_and_grid_point_exactly():
    times = np.arange(60) * 2.0
    aif = ident._aif(times)
    unit, grid = ident.templates(times, aif, "gamma")
    k = 20 * len(ident.DELAY_GRID) + 9  # an on-grid MTT and delay
    curves = np.stack([0.45 * unit[:, k], 0.0 * unit[:, k]])
    rss, cbf, best = ident.grid_fit(curves, unit)
    assert best[0] == k and cbf[0] == pytest.approx(0.45, rel=1e-12)
    # the residual is ||y||^2 - 2 c <y, u> + c^2 ||u||^2: zero up to the rounding of ||y||^2's size
    assert abs(rss[0]) <= 1e-12 * float(curves[0] @ curves[0])
    assert cbf[1] == 0.0  # a flat curve has no flow, not a negative one
    assert tuple(grid[k]) == (ident.MTT_GRID[20], ident.DELAY_GRID[9])


def test_an_roi_tells_plug_flow_from_exponential_transit_and_reads_its_flow():
    rows = ident.roi_selection(snrs=(None,), truths=("exponential", "box"), timings=((1.5, 80),), voxels=3)
    by = {r["truth"]: r for r in rows}
    for truth in ("exponential", "box"):
        assert by[truth]["chosen"].count(truth) >= 12  # of the 14 tissues
        assert abs(np.median(by[truth]["cbf_error_chosen_pct"])) < 5
    # assuming the exponential reads plug flow far too high: what the shape choice corrects
    assert np.median(by["box"]["cbf_error_exponential_pct"]) > 100


def test_the_kept_roi_selection_is_what_the_script_computes():
    kept = json.loads((ROOT / "docs" / "figures" / "phae_round15_roi_shape.json").read_text(encoding="utf-8"))
    now = ident.roi_selection(snrs=(20,), truths=("exponential",), dispersions=(2.0,), timings=((1.0, 120),))
    then = next(r for r in kept if (r["dt"], r["snr"], r["truth"], r["dispersion_s"]) == (1.0, 20, "exponential", 2.0))
    assert now[0]["chosen"] == then["chosen"]
    np.testing.assert_allclose(now[0]["cbf_error_chosen_pct"], then["cbf_error_chosen_pct"], rtol=1e-9, atol=1e-9)


# --- --roi --signal-noise (issue 14, round 16): the noise a DSC pipeline measures ----------------------------------
def test_signal_noise_is_the_log_of_a_noisy_signal_and_vanishes_without_noise():
    r2s = np.linspace(0.0, 60.0, 7)
    rng = np.random.default_rng(0)
    huge = ident._signal_noise(r2s, 1e12, rng)  # σ = 1e-12 S0: the back-conversion alone
    np.testing.assert_allclose(huge, r2s, rtol=0, atol=1e-6)
    noisy = ident._signal_noise(np.zeros((20000, 1)), 20.0, np.random.default_rng(1))
    # at baseline ΔR2* = -ln(1 + n)/TE with n ~ N(0, 1/20): SD ≈ (1/20)/TE
    assert np.std(noisy) == pytest.approx(1.0 / 20.0 / ident.ECHO_TIME_S, rel=0.05)


def test_without_noise_the_signal_model_tells_every_shape_like_the_concentration_model():
    rows = ident.roi_selection(snrs=(None,), truths=("exponential", "box"), timings=((1.5, 80),), voxels=3,
                               noise="signal")
    for r in rows:
        assert r["noise"] == "signal"
        assert r["chosen"].count(r["truth"]) >= 12
        assert abs(np.median(r["cbf_error_chosen_pct"])) < 5  # the common ΔR2* scale cancels in CBF


def test_the_kept_signal_noise_selection_is_what_the_script_computes():
    """The round-16 finding: at S0/σ = 20 every ROI of exponential tissue chooses plug flow."""
    kept = json.loads((ROOT / "docs" / "figures" / "phae_round16_roi_shape_signal_noise.json").read_text(encoding="utf-8"))
    now = ident.roi_selection(snrs=(20,), truths=("exponential",), timings=((2.0, 60),), noise="signal")
    then = next(r for r in kept if (r["dt"], r["snr"], r["truth"], r["dispersion_s"]) == (2.0, 20, "exponential", 0.0))
    assert now[0]["chosen"] == then["chosen"]
    assert now[0]["chosen"].count("box") == 14
    np.testing.assert_allclose(now[0]["cbf_error_chosen_pct"], then["cbf_error_chosen_pct"], rtol=1e-6, atol=1e-6)


def test_signal_noise_needs_roi(capsys):
    assert ident.main(["--signal-noise"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --signal-noise goes with --roi"]


def test_case_evidence_names_every_shape_without_noise_and_plug_flow_at_signal_snr_20():
    """--case-evidence (round 16): the whole object's least-squares evidence is right without noise, and at S0/σ = 20
    on the signal it chooses plug flow for exponential tissue: the finding docs/validation.md reports."""
    rows = ident.case_evidence_rows(snrs_concentration=(None,), snrs_signal=(20,), own_phantom=False)
    clean = [r for r in rows if r["noise"] == "concentration"]
    for r in clean:
        expected = "exponential" if r["truth"] == "lorentzian" else r["truth"]
        assert r["sum"]["chosen"] == expected and r["log"]["chosen"] == expected
    noisy = next(r for r in rows if r["noise"] == "signal" and r["truth"] == "exponential")
    assert noisy["sum"]["chosen"] == "box" and noisy["log"]["chosen"] == "box"
    kept = json.loads((ROOT / "docs" / "figures" / "phae_round16_case_evidence.json").read_text(encoding="utf-8"))
    then = next(r for r in kept if r["set"] == "object" and r["truth"] == "exponential" and r["noise"] == "signal"
                and r["snr"] == 20)
    np.testing.assert_allclose(noisy["sum"]["evidence"], then["sum"]["evidence"], atol=2e-6)
