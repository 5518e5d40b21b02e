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
