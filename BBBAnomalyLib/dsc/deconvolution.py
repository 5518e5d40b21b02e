"""Deconvolution of DSC tissue curves by the arterial input function, all voxels batched.

Model (indicator dilution): C(t) = CBF · (Ca ⊛ R)(t), discretised as ``c = A b`` with
``b = CBF · R(t_k)`` [1/s] and A the convolution matrix of the AIF with the linear-in-time
weights of Østergaard (1996): ``A[i, j] = Δt · (a[m-1] + 4 a[m] + a[m+1]) / 6``, ``m = i - j``.

The methods differ only in the matrix and in how its inverse is regularised:

===========  ======================================  ==========================================
method       matrix                                  regularisation
===========  ======================================  ==========================================
sSVD         lower-triangular Toeplitz, N x N        truncate σ < 0.2 σmax (one threshold)
cSVD         block circulant of the AIF zero-padded   truncate σ < 0.1 σmax; delay-insensitive
             to L = 2N, the full L x L matrix (Wu)
oSVD         the cSVD matrix                          per voxel: the lowest threshold whose
                                                      residue has oscillation index <= target
Tikhonov     the cSVD matrix                          filter σ²/(σ²+λ²), λ per voxel by GCV
===========  ======================================  ==========================================

The circulant matrix is diagonalised once per AIF; every voxel is then a projection onto the
singular vectors (one matrix product per chunk of voxels). oSVD adds the singular components
one block at a time and evaluates the oscillation index after each, so a whole brain costs a
few matrix products rather than one SVD solve per threshold per voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parameters import DeconvolutionMethod

#: oSVD threshold grid, as fractions of σmax (ascending). Geometric: equal steps (×1.25) in log σ,
#: from 0.005 (clean simulations meet the 0.035 target near 0.01) to 0.8 (very noisy voxels).
#: Each threshold costs one oscillation-index pass over all voxels, so the grid is kept short.
OSVD_THRESHOLDS = np.geomspace(0.005, 0.8, 24)


def weighted_aif(aif: np.ndarray) -> np.ndarray:
    """AIF samples with the linear-in-time weights (a[m-1] + 4 a[m] + a[m+1]) / 6, a[-1] = a[N] = 0."""
    a = np.concatenate([[0.0], np.asarray(aif, dtype=np.float64), [0.0]])
    return (a[:-2] + 4.0 * a[1:-1] + a[2:]) / 6.0


def toeplitz_matrix(aif: np.ndarray, dt: float) -> np.ndarray:
    """Lower-triangular N x N convolution matrix (sSVD)."""
    w = weighted_aif(aif)
    n = w.size
    m = np.subtract.outer(np.arange(n), np.arange(n))
    return np.where(m >= 0, dt * w[np.clip(m, 0, None)], 0.0)


def circulant_matrix(aif: np.ndarray, dt: float) -> np.ndarray:
    """Full L x L block-circulant matrix of the AIF zero-padded to L = 2N (Wu 2003).

    Not its top-left N x N block, which is the Toeplitz matrix again and would make cSVD = sSVD.
    """
    n = len(aif)
    w = weighted_aif(np.concatenate([np.asarray(aif, dtype=np.float64), np.zeros(n)]))
    size = 2 * n
    m = np.subtract.outer(np.arange(size), np.arange(size)) % size
    return dt * w[m]


def oscillation_index(residue: np.ndarray) -> np.ndarray:
    """OI = (1/N)(1/max R) Σ_k |R(k) - 2R(k-1) + R(k-2)| per row (second differences, Wu 2003).

    Rows whose maximum is not positive get OI = inf (no usable residue).
    """
    d2 = np.abs(residue[:, 2:] - 2.0 * residue[:, 1:-1] + residue[:, :-2]).sum(axis=1)
    peak = residue.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi = d2 / (residue.shape[1] * peak)
    oi[~(peak > 0)] = np.inf
    return oi


@dataclass
class DeconvolutionFit:
    """Result of deconvolving a batch of curves.

    cbf:  max of the flow-scaled residue, F [1/s] (multiply by 6000·kH/ρ for ml/100 g/min).
    tmax: time of that maximum [s] (sub-frame parabolic refinement); meaningful for the
          delay-insensitive methods (cSVD, oSVD, Tikhonov).
    regularisation: per-voxel threshold (fraction of σmax) for SVD methods, λ/σmax for Tikhonov.
    unmet: voxels where oSVD met no threshold in its grid (the largest was used).
    residue: (n_voxels, N) flow-scaled residue, kept only when asked (it is large).
    """

    cbf: np.ndarray
    tmax: np.ndarray
    regularisation: np.ndarray
    unmet: np.ndarray
    residue: np.ndarray | None = None


class DeconvolutionModel:
    """A deconvolution method bound to one AIF and frame interval (dipy-style Model -> Fit).

    >>> model = DeconvolutionModel(aif, dt=1.5, method="osvd")
    >>> fit = model.fit(curves)        # curves: (n_voxels, n_frames) ΔR2* [1/s]
    >>> fit.cbf, fit.tmax
    """

    def __init__(self, aif: np.ndarray, dt: float, method: DeconvolutionMethod | str = "osvd",
                 ssvd_threshold: float = 0.2, csvd_threshold: float = 0.1, oi_target: float = 0.095,
                 n_lambdas: int = 40, chunk_voxels: int = 16384):
        self.aif = np.asarray(aif, dtype=np.float64)
        self.dt = float(dt)
        self.method = DeconvolutionMethod(method)
        self.ssvd_threshold = ssvd_threshold
        self.csvd_threshold = csvd_threshold
        self.oi_target = oi_target
        self.n_lambdas = n_lambdas
        self.chunk_voxels = chunk_voxels
        self.n = self.aif.size
        if self.method is DeconvolutionMethod.SSVD:
            self.matrix = toeplitz_matrix(self.aif, self.dt)
        else:
            self.matrix = circulant_matrix(self.aif, self.dt)
        u, s, vt = np.linalg.svd(self.matrix)
        if not s[0] > 0:
            raise ValueError("the AIF is zero: nothing to deconvolve")
        # Only the first N rows of U matter: the padded half of every curve is zero.
        self._u = u[: self.n]
        self._s = s
        self._vt_n = vt[:, : self.n]  # only the first N samples of the residue are kept
        if self.method in (DeconvolutionMethod.SSVD, DeconvolutionMethod.CSVD):
            thr = self.ssvd_threshold if self.method is DeconvolutionMethod.SSVD else self.csvd_threshold
            keep = s >= thr * s[0]
            # b = V diag(1/σ) Uᵀ c, restricted to the first N samples in and out.
            self._pinv_t = ((self._u[:, keep] / s[keep]) @ self._vt_n[keep]).astype(np.float32)
            self._threshold = thr

    # ------------------------------------------------------------------------------------
    def fit(self, curves: np.ndarray, keep_residue: bool = False, progress=None) -> DeconvolutionFit:
        """Deconvolve (n_voxels, N) curves in chunks of ``chunk_voxels``."""
        curves = np.asarray(curves, dtype=np.float32)
        if curves.ndim != 2 or curves.shape[1] != self.n:
            raise ValueError(f"curves must be (n_voxels, {self.n}); got {curves.shape}")
        nvox = curves.shape[0]
        cbf = np.empty(nvox, np.float32)
        tmax = np.empty(nvox, np.float32)
        reg = np.empty(nvox, np.float32)
        unmet = np.zeros(nvox, bool)
        residue_all = np.empty((nvox, self.n), np.float32) if keep_residue else None
        for start in range(0, nvox, self.chunk_voxels):
            sl = slice(start, min(start + self.chunk_voxels, nvox))
            residue, reg[sl], unmet[sl] = self._solve(curves[sl])
            cbf[sl], tmax[sl] = _peak(residue, self.dt)
            if keep_residue:
                residue_all[sl] = residue
            if progress is not None:
                progress(sl.stop / nvox)
        return DeconvolutionFit(cbf, tmax, reg, unmet, residue_all)

    def synthesize(self, residue: np.ndarray) -> np.ndarray:
        """Forward model: the curves that a (n_voxels, N) residue predicts (A b, first N samples)."""
        return np.asarray(residue, np.float64) @ self.matrix[: self.n, : self.n].T

    # ------------------------------------------------------------------------------------
    def _solve(self, c: np.ndarray):
        if self.method in (DeconvolutionMethod.SSVD, DeconvolutionMethod.CSVD):
            reg = np.full(c.shape[0], self._threshold, np.float32)
            return c @ self._pinv_t, reg, np.zeros(c.shape[0], bool)
        coeff = c @ self._u.astype(np.float32)  # (n, L): projections Uᵀc
        if self.method is DeconvolutionMethod.OSVD:
            return self._solve_osvd(coeff)
        return self._solve_tikhonov(coeff)

    def _solve_osvd(self, coeff: np.ndarray):
        """Scan thresholds upwards from the lowest; per voxel keep the first one meeting OI <= target.

        Raising the threshold removes singular components, so scanning thresholds upwards is
        scanning the component count k downwards. We build the residues for increasing k instead
        (adding blocks of components, and their second differences, by matrix products) and
        remember, per voxel, the largest k that meets the target: that is the lowest threshold
        that meets it. Keeping the lowest-OI threshold instead would over-smooth (a known bug in
        public code). The chosen residue is rebuilt once at the end from the per-voxel k.
        """
        s = self._s
        counts = (s[None, :] >= OSVD_THRESHOLDS[:, None] * s[0]).sum(axis=1)  # k per threshold, descending
        ks, first = np.unique(counts, return_index=True)  # ascending k; first = lowest threshold giving k
        keep = ks > 0
        ks, thresholds = ks[keep], OSVD_THRESHOLDS[first[keep]]
        # Work transposed, (time, voxel): the per-voxel max and sum then run along contiguous
        # rows of voxels, several times faster than reducing short rows of 60-120 frames.
        zt = np.ascontiguousarray((coeff / s).T, dtype=np.float32)  # (L, n) component weights of V
        v = np.ascontiguousarray(self._vt_n.T, dtype=np.float32)  # (N, L)
        d2 = v[2:] - 2.0 * v[1:-1] + v[:-2]  # second differences of each component
        n = coeff.shape[0]
        residue = np.zeros((self.n, n), np.float32)
        second = np.zeros((self.n - 2, n), np.float32)
        scratch = np.empty_like(second)  # reused buffers: no large allocation inside the loop
        peak = np.empty(n, np.float32)
        roughness = np.empty(n, np.float32)
        best_k = np.full(n, ks[0])  # fallback: the most regularised residue
        best_thr = np.full(n, thresholds[0], np.float32)
        met = np.zeros(n, bool)
        k_done = 0
        for k, thr in zip(ks, thresholds):
            residue += v[:, k_done:k] @ zt[k_done:k]
            second += d2[:, k_done:k] @ zt[k_done:k]
            k_done = k
            residue.max(axis=0, out=peak)
            np.abs(second, out=scratch)
            scratch.sum(axis=0, out=roughness)
            ok = (roughness <= (self.oi_target * self.n) * peak) & (peak > 0)
            best_k[ok] = k
            best_thr[ok] = thr
            met |= ok
        components = np.arange(s.size, dtype=np.int32)[:, None] < best_k[None, :]
        residue = (v @ (zt * components)).T
        return residue, best_thr, ~met

    def _solve_tikhonov(self, coeff: np.ndarray):
        """Tikhonov filter factors f = σ²/(σ²+λ²); λ per voxel minimises GCV.

        GCV(λ) = ||A b_λ - c||² / (L - Σf)². The denominator does not depend on the voxel and the
        numerator is Σ((1-f) Uᵀc)², so the whole grid is one matrix product per chunk. The chosen
        solutions are then one product per distinct λ (at most `n_lambdas`), each with the
        precomputed operator diag(f/σ) Vᵀ, instead of a per-voxel filter.
        """
        s = self._s
        # Capped at σmax: at low CNR GCV keeps asking for more smoothing (towards the zero
        # solution); beyond σmax every residue is flattened, so the cap bounds the smoothing.
        lambdas = s[0] * np.geomspace(1e-3, 1.0, self.n_lambdas)
        f = s[None, :] ** 2 / (s[None, :] ** 2 + lambdas[:, None] ** 2)  # (n_lambda, L)
        denom = (s.size - f.sum(axis=1)) ** 2
        coeff = coeff.astype(np.float32)
        numer = (coeff ** 2) @ ((1.0 - f) ** 2).T.astype(np.float32)  # (n, n_lambda)
        idx = np.argmin(numer / denom.astype(np.float32), axis=1)
        residue = np.empty((coeff.shape[0], self.n), np.float32)
        for j in np.unique(idx):
            rows = idx == j
            operator = ((f[j] / s)[:, None] * self._vt_n).astype(np.float32)  # (L, N)
            residue[rows] = coeff[rows] @ operator
        return residue, (lambdas[idx] / s[0]).astype(np.float32), np.zeros(coeff.shape[0], bool)


def _peak(residue: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Max of each residue and its time, refined by a parabola through the neighbours of the peak."""
    k = np.argmax(residue, axis=1)
    rows = np.arange(residue.shape[0])
    peak = residue[rows, k]
    left = residue[rows, np.clip(k - 1, 0, None)]
    right = residue[rows, np.clip(k + 1, None, residue.shape[1] - 1)]
    curvature = left - 2 * peak + right
    inner = (k > 0) & (k < residue.shape[1] - 1) & (curvature < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(inner, 0.5 * (left - right) / curvature, 0.0)
    return peak.astype(np.float32), ((k + np.clip(shift, -0.5, 0.5)) * dt).astype(np.float32)
