"""Variable-flip-angle T1 fits for every voxel at once.

Spoiled gradient echo in steady state (Ernst; Fram et al., MRI 1987;5:201):

    S(α) = M0 sin α (1 - E) / (1 - cos α E),   E = exp(-TR·R1),  α = B1·α_nominal.

Linear (DESPOT1; Deoni et al., MRM 2003;49:515): S/sin α = E·S/tan α + M0 (1 - E), a straight
line per voxel in (S/tan α, S/sin α); its slope is E, so R1 = -ln(E)/TR and M0 = intercept/(1 - E).
Unweighted, as in the OSIPI reference implementations: the points at large angles, where the noise
of S/tan α is amplified, weigh as much as the others; the nonlinear fit does not have that bias.
Nonlinear: least squares on S itself over (M0, R1), a batched Levenberg-Marquardt with analytic
derivatives started from the linear solution (clipped into the physical range).

Arrays are (n_voxels, n_angles); flip angles in degrees, either (k,) shared or (n, k) per voxel
(a B1 map scales them per voxel); TR in seconds; R1 in 1/s.
"""

from __future__ import annotations

import numpy as np

#: R1 bounds [1/s]: T1 from 10 ms to 1000 s; outside, the voxel is not tissue (or has no signal).
R1_BOUNDS = (1e-3, 100.0)


def spgr_signal(m0, r1, flip_deg, tr: float) -> np.ndarray:
    """S (n, k) for per-voxel M0, R1 [1/s] (n,) and flip angles [deg] (k,) or (n, k)."""
    m0, r1 = np.atleast_1d(np.asarray(m0, np.float64)), np.atleast_1d(np.asarray(r1, np.float64))
    a = np.deg2rad(np.asarray(flip_deg, np.float64))
    a = np.broadcast_to(a, (m0.size, a.shape[-1]))
    e = np.exp(-tr * r1)[:, None]
    return m0[:, None] * np.sin(a) * (1 - e) / (1 - np.cos(a) * e)


def _angles(flip_deg, n: int, k: int) -> np.ndarray:
    a = np.deg2rad(np.asarray(flip_deg, np.float64))
    if a.shape[-1] != k:
        raise ValueError(f"{a.shape[-1]} flip angles for {k} signals per voxel")
    return np.broadcast_to(a, (n, k))


def fit_vfa_linear(signals: np.ndarray, flip_deg, tr: float) -> tuple[np.ndarray, np.ndarray]:
    """(M0, R1 [1/s]) per voxel by the DESPOT1 line; R1 is NaN where the slope is not in (0, 1)
    (no signal, or noise larger than the T1 weighting)."""
    s = np.asarray(signals, np.float64)
    a = _angles(flip_deg, *s.shape)
    x, y = s / np.tan(a), s / np.sin(a)
    xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = ((x - xm) * (y - ym)).sum(1) / sxx
        intercept = ym[:, 0] - slope * xm[:, 0]
        ok = (slope > 0) & (slope < 1) & np.isfinite(slope)
        r1 = np.where(ok, -np.log(np.where(ok, slope, 0.5)) / tr, np.nan)
        m0 = np.where(ok, intercept / (1 - np.where(ok, slope, 0.5)), np.nan)
    return m0, r1


def fit_vfa_nonlinear(signals: np.ndarray, flip_deg, tr: float, iterations: int = 50
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(M0, R1 [1/s]) per voxel by least squares on the signal: batched Levenberg-Marquardt on
    (M0, R1) from the linear solution (or, where that failed, R1 = 1/s and the matching M0)."""
    s = np.asarray(signals, np.float64)
    n, k = s.shape
    a = _angles(flip_deg, n, k)
    sin_a, cos_a = np.sin(a), np.cos(a)
    m0, r1 = fit_vfa_linear(s, flip_deg, tr)
    bad = ~np.isfinite(r1)
    r1 = np.clip(np.where(bad, 1.0, r1), *R1_BOUNDS)

    def model(m0_, r1_):
        e = np.exp(-tr * r1_)[:, None]
        shape = sin_a * (1 - e) / (1 - cos_a * e)
        return m0_[:, None] * shape, shape, e

    _, shape, _ = model(np.ones(n), r1)
    best_m0 = (shape * s).sum(1) / np.maximum((shape * shape).sum(1), 1e-300)  # M0 is linear given R1
    m0 = np.where(bad | ~np.isfinite(m0), best_m0, m0)
    lam = np.full(n, 1e-3)
    pred, shape, e = model(m0, r1)
    sse = ((s - pred) ** 2).sum(1)
    for _ in range(iterations):
        # dS/dE = M0 sin α (cos α - 1)/(1 - cos α E)², dE/dR1 = -TR·E
        d_r1 = m0[:, None] * sin_a * (cos_a - 1) / (1 - cos_a * e) ** 2 * (-tr * e)
        jac = np.stack([shape, d_r1], 2)
        jt = jac.transpose(0, 2, 1)
        jtj = jt @ jac
        g = (jt @ (s - pred)[..., None])[..., 0]
        damp = lam[:, None] * np.diagonal(jtj, axis1=1, axis2=2) + 1e-300
        delta = np.linalg.solve(jtj + damp[:, :, None] * np.eye(2), g[..., None])[..., 0]
        m0_t, r1_t = m0 + delta[:, 0], np.clip(r1 + delta[:, 1], *R1_BOUNDS)
        pred_t, shape_t, e_t = model(m0_t, r1_t)
        sse_t = ((s - pred_t) ** 2).sum(1)
        ok = sse_t < sse
        gain = np.where(ok, (sse - sse_t) / np.maximum(sse, 1e-300), 0.0)
        m0, r1, sse = np.where(ok, m0_t, m0), np.where(ok, r1_t, r1), np.where(ok, sse_t, sse)
        pred, shape, e = (np.where(ok[:, None], new, old) for new, old in ((pred_t, pred), (shape_t, shape), (e_t, e)))
        lam = np.clip(np.where(ok, lam * 0.3, lam * 10), 1e-12, 1e12)
        if gain.max() < 1e-12 and lam.min() > 1e-3:
            break
    return m0, r1
