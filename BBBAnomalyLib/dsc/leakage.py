"""Boxerman–Schmainda–Weisskoff (BSW) leakage correction (Boxerman et al., AJNR 2006).

Where the blood-brain barrier leaks, contrast agent in the extravascular space shortens T1
(the signal rises, ΔR2* is underestimated: K2 > 0) or adds T2* (K2 < 0). BSW models every
voxel as a mix of the mean curve of non-enhancing brain and its running integral:

    ΔR2*(t) ≈ K1 · ΔR̄2*(t) − K2 · ∫₀ᵗ ΔR̄2*(τ) dτ

which is linear in (K1, K2): one 2-column least-squares problem shared by every voxel, i.e.
one matrix product for the whole brain. The corrected curve is ΔR2*(t) + K2 · ∫₀ᵗ ΔR̄2*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import cumulative_trapezoid

from ..core.devices import map_blocks

#: Voxels whose curve area exceeds the median by this many robust SDs are vessels, not brain tissue.
VESSEL_AREA_MADS = 6.0


@dataclass
class BSWFit:
    k1: np.ndarray  # (n,) unit-less
    k2: np.ndarray  # (n,) 1/s
    k2_t: np.ndarray  # (n,) K2 / standard error: how sure the leakage is
    reference: np.ndarray  # (N,) the non-enhancing reference curve ΔR̄2* [1/s]
    reference_integral: np.ndarray  # (N,) ∫ΔR̄2* [dimensionless: 1/s · s]
    n_reference: int  # voxels averaged into the reference

    def applied_k2(self, min_t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(K2 where |K2|/SE(K2) >= min_t else 0, float32; the mask of corrected voxels)."""
        applied = np.abs(self.k2_t) >= min_t
        return np.where(applied, self.k2, 0.0).astype(np.float32), applied

    def corrected(self, curves: np.ndarray, min_t: float = 0.0, out: np.ndarray | None = None,
                  block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Leakage-corrected curves, corrected only where |K2|/SE(K2) >= min_t. Returns (curves, applied).

        out: write there (``out=curves`` corrects in place: no second copy of a whole brain)."""
        k2, applied = self.applied_k2(min_t)
        integral = self.reference_integral.astype(np.float32)
        out = np.empty(curves.shape, np.float32) if out is None else out
        def correct(rows: slice) -> None:  # blocks: the outer product stays small
            np.add(curves[rows], k2[rows, None] * integral[None, :], out=out[rows])

        map_blocks(correct, curves.shape[0], block)
        return out, applied


def reference_curve(curves: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Mean ΔR2* of non-enhancing brain: all voxels but the excluded ones (a tumor mask) and vessels.

    Vessels are outliers of the curve area (median + 6 robust SDs): their AIF-like curves would
    skew the reference. A fixed top quantile would instead cut the upper noise tail of tissue at
    low SNR, bias the reference low and turn noise into a systematic (T2*-like) K2.
    """
    use = np.ones(curves.shape[0], bool) if exclude is None else ~exclude
    area = curves.sum(axis=1)
    if use.sum() > 20:
        median = np.median(area[use])
        mad = 1.4826 * np.median(np.abs(area[use] - median))
        use &= area <= median + VESSEL_AREA_MADS * mad
    if not use.any():
        raise ValueError("no voxels left for the BSW reference curve")
    # A weighted sum (one matrix-vector product) instead of copying the selected rows.
    return (use.astype(np.float32) @ curves).astype(np.float64) / use.sum(), int(use.sum())


def fit_bsw(curves: np.ndarray, times: np.ndarray, exclude: np.ndarray | None = None,
            fit_from: int = 0, block: int = 8192) -> BSWFit:
    """Fit K1, K2 for (n, N) ΔR2* curves against the non-enhancing reference.

    fit_from: first frame used in the fit (the baseline before it carries no information).
    """
    ref, nref = reference_curve(curves, exclude)
    integral = cumulative_trapezoid(ref, times, initial=0.0)
    design = np.stack([ref, -integral], axis=1)[fit_from:]  # (N', 2)
    pinv = np.linalg.pinv(design).T.astype(np.float32)  # (N', 2)
    # Least squares projects y onto the design's column space, so ||y - Xβ||² = ||y||² - βᵀXᵀXβ:
    # no residual matrix is formed (it would be as large as the whole series).
    gram = design.T @ design
    cov22 = np.linalg.inv(gram)[1, 1]
    dof = max(design.shape[0] - 2, 1)
    # In row blocks: y = curves[:, fit_from:] is not contiguous, and a matrix product copies such
    # an operand whole (a temporary as large as the analysed curves: the pipeline's peak memory).
    # The float64 work (coefficients, sums of squares, t values) stays per block too: only the
    # three float32 results are kept for every voxel (12 bytes, not ~80).
    k1 = np.empty(curves.shape[0], np.float32)
    k2 = np.empty(curves.shape[0], np.float32)
    k2_t = np.empty(curves.shape[0], np.float32)
    def fit(rows: slice) -> None:
        y = curves[rows, fit_from:]
        coef = (y @ pinv).astype(np.float64)
        sum_sq = np.einsum("nt,nt->n", y, y, dtype=np.float64)
        explained = np.einsum("ni,ij,nj->n", coef, gram, coef)
        sigma2 = np.maximum(sum_sq - explained, 0.0) / dof
        with np.errstate(divide="ignore", invalid="ignore"):
            t = coef[:, 1] / np.sqrt(sigma2 * cov22)
        k1[rows], k2[rows] = coef[:, 0], coef[:, 1]
        k2_t[rows] = np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)

    map_blocks(fit, curves.shape[0], block)  # independent row blocks, on a few threads
    return BSWFit(k1, k2, k2_t, ref, integral, nref)
