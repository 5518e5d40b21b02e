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
Tikhonov     the cSVD matrix                          filter σ²/(σ²+λ²), λ per voxel by GCV (default),
                                                      the L-curve corner, or fixed (``lambda_rule``)
===========  ======================================  ==========================================

The circulant methods work in the frequency domain. A circulant matrix is diagonalised by the
DFT: its singular values are the magnitudes |H_k| of the DFT of its first column (the weighted,
zero-padded AIF times Δt), its singular vectors are the Fourier modes, and a truncated-SVD or
Tikhonov pseudo-inverse is a filter on the spectrum, ``B_k = φ_k C_k / H_k``. So no SVD is
needed: one real FFT of the AIF, then per curve

* cSVD: φ_k = [|H_k| >= thr σmax], a fixed filter; its time-domain operator (the first N rows and
  columns of the circulant pseudo-inverse, built once by FFT) is applied as one matrix product
  per chunk -- at N = 60-120 frames a dense product beats two short FFTs per curve;
* Tikhonov: one rFFT per curve; GCV(λ) for every λ of the grid in closed form from |C_k|² and
  the filter factors (one small matrix product), then one inverse rFFT with each voxel's filter;
* oSVD: the spectral weights Z_k = C_k / H_k of the bins that any threshold of the grid keeps
  come from one dense (2K, N) product per block (a real DFT restricted to those K bins, the 1/H_k
  folded in; at N = 60-120 faster than an rFFT plus the reordering and complex product). Raising
  the threshold drops whole frequency bins (in the order of |H_k|), so the residues of all
  thresholds are partial sums of one inverse real DFT restricted to the N kept samples: starting
  from the highest threshold, each lower threshold's bins are added to the residue and its second
  differences by one in-place BLAS update, and the oscillation index of every voxel is read off
  (one max, one |.| sum). That is the arithmetic of about two inverse DFTs per voxel plus three
  vector passes per threshold, not one solve per threshold. (An inverse rFFT per threshold would
  be exact too, but at N = 60-120 frames pocketfft costs about 1.4 µs per transform: 20+ of them
  per voxel is several times this.)

sSVD keeps its N x N Toeplitz matrix (not circulant, so not diagonalised by the DFT) and its SVD,
computed once per AIF. Every method is O(N log N) (FFT) or O(N²) (one dense product) per voxel,
float32, in chunks of voxels. ``Testing/test_dsc_deconvolution_fft.py`` checks each method
against the explicit L x L matrix SVD to float32 rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..core import checks
from ..core.devices import blas_threads, block_workers
from ..core.errors import InputError
from ..perfusion.slice_timing import fit_by_acquisition_time
from .low_cnr import tikhonov_cap_warning
from .parameters import DeconvolutionMethod

#: oSVD threshold grid, as fractions of σmax (ascending). Geometric: equal steps (×1.25) in log σ,
#: from 0.005 (clean simulations meet the 0.035 target near 0.01) to 0.8 (very noisy voxels).
OSVD_THRESHOLDS = np.geomspace(0.005, 0.8, 24)
#: Voxels per block inside a chunk for the oSVD search and Tikhonov: their work arrays stay in cache.
#: oSVD's block is sized by bytes: its weights, residue + second differences and scratch, ~2 kB per
#: voxel at 120 frames, fit a 2 MiB L2 cache at 1.5 MiB (measured on the 2-core Xeon, one thread:
#: 768 voxels 3.1 µs/voxel against 3.8 at 1024 and 3.6 at 256; at 60 frames 1.6 against 1.8).
OSVD_BLOCK_BYTES = 3 * 2**19
#: Tikhonov: 512 voxels (spectra, power, GCV and the inverse FFT in cache): 1.22 µs/voxel at 120
#: frames against 1.57 at 2048 (one thread, the same machine).
TIKHONOV_BLOCK = 512
#: The top of the Tikhonov λ grid, as a fraction of σmax: a voxel whose λ sits here got the most smoothing the grid
#: allows (GCV without an interior minimum, at low CNR), and reads CBF low and MTT high (dsc/low_cnr.py).
TIKHONOV_LAMBDA_CAP = 1.0
TIKHONOV_RULES = ("gcv", "lcurve", "fixed:F (0 < F <= 1)")


def parse_lambda_rule(rule) -> tuple[str, float | None]:
    """('gcv' | 'lcurve' | 'fixed', F) from ``gcv``, ``lcurve`` or ``fixed:F`` (λ = F·σmax for every voxel)."""
    text = str(rule).strip().lower()
    if text in ("gcv", "lcurve"):
        return text, None
    if text.startswith("fixed:"):
        try:
            fraction = float(text.split(":", 1)[1])
        except ValueError:
            fraction = float("nan")
        if 0.0 < fraction <= 1.0:
            return "fixed", fraction
    raise InputError(f"Tikhonov lambda rule {rule!r} is not one of {', '.join(TIKHONOV_RULES)}; "
                     "e.g. 'gcv' (the default) or 'fixed:0.1'")
PRODUCT_BLOCK = 2048  # sSVD and cSVD: one dense product per block (0.37 against 0.46 µs/voxel at 4096, 120 frames)


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
    Kept as the explicit reference for the frequency-domain solvers (and their tests).
    """
    n = len(aif)
    w = weighted_aif(np.concatenate([np.asarray(aif, dtype=np.float64), np.zeros(n)]))
    size = 2 * n
    m = np.subtract.outer(np.arange(size), np.arange(size)) % size
    return dt * w[m]


def circulant_spectrum(aif: np.ndarray, dt: float) -> np.ndarray:
    """rFFT (L/2 + 1 bins, L = 2N) of the first column of :func:`circulant_matrix`, float64.

    The circulant matrix's singular values are |H_k| (bins 1..L/2-1 count twice: ±k)."""
    n = len(aif)
    w = weighted_aif(np.concatenate([np.asarray(aif, dtype=np.float64), np.zeros(n)]))
    return dt * np.fft.rfft(w)


def bin_multiplicity(size: int) -> np.ndarray:
    """How many DFT components (of L = size) each rFFT bin stands for: 1 for DC and Nyquist, else 2."""
    mult = np.full(size // 2 + 1, 2.0)
    mult[0] = 1.0
    if size % 2 == 0:
        mult[-1] = 1.0
    return mult


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
    fitted: (n_voxels, N) the curves the residue predicts (AIF ⊗ residue), kept only when asked:
            the panel's curve plots, computed in the same pass instead of deconvolving twice.
    """

    cbf: np.ndarray
    tmax: np.ndarray
    regularisation: np.ndarray
    unmet: np.ndarray
    residue: np.ndarray | None = None
    fitted: np.ndarray | None = None


class DeconvolutionModel:
    """A deconvolution method bound to one AIF and frame interval (dipy-style Model -> Fit).

    >>> model = DeconvolutionModel(aif, dt=1.5, method="osvd")
    >>> fit = model.fit(curves)        # curves: (n_voxels, n_frames) ΔR2* [1/s]
    >>> fit.cbf, fit.tmax
    """

    def __init__(self, aif: np.ndarray, dt: float, method: DeconvolutionMethod | str = "osvd",
                 ssvd_threshold: float = 0.2, csvd_threshold: float = 0.1, oi_target: float = 0.095,
                 n_lambdas: int = 40, chunk_voxels: int = 16384, workers: int | None = None,
                 lambda_rule: str = "gcv"):
        self.aif = checks.curve(aif, "AIF")
        if self.aif.size > 1 and np.isfinite(self.aif).all() and int(np.argmax(self.aif)) == self.aif.size - 1:
            # the bolus cut off by the end of the series: oSVD read GM CBF 31.8 for a true 60 with no error (PHAE
            # refuses the same AIF, inference.py)
            raise InputError(f"the AIF peaks at its last frame (frame {self.aif.size - 1}): the bolus passage is not "
                             "in the series; give the AIF of the whole series (frames in acquisition order)")
        self.dt = checks.number(dt, "dt (the frame interval, s)", 0.0, 3600.0, low_open=True)
        try:
            self.method = DeconvolutionMethod(method)
        except ValueError:
            raise InputError(f"{method!r} is not a deconvolution method; choose one of "
                             f"{', '.join(m.value for m in DeconvolutionMethod if m.value != 'phae')}") from None
        self.ssvd_threshold = ssvd_threshold
        self.csvd_threshold = csvd_threshold
        self.oi_target = oi_target
        self.n_lambdas = n_lambdas
        self.lambda_rule, self.lambda_fraction = parse_lambda_rule(lambda_rule)
        self.chunk_voxels = chunk_voxels
        self.workers = workers  # threads over chunks; None = the CPU count (at most 4)
        self.n = self.aif.size
        self.size = 2 * self.n  # L: the zero-padded length of the circulant methods
        if self.method is DeconvolutionMethod.SSVD:
            self._init_ssvd()
            return
        self._spectrum = circulant_spectrum(self.aif, self.dt)
        self._sv = np.abs(self._spectrum)  # singular values, one per rFFT bin
        self._smax = float(self._sv.max())
        if not self._smax > 0:
            raise InputError("the AIF is zero: nothing to deconvolve")
        if self.method is DeconvolutionMethod.CSVD:
            self._threshold = self.csvd_threshold
            self._pinv_t = self._operator(self._sv >= self.csvd_threshold * self._smax)
        elif self.method is DeconvolutionMethod.OSVD:
            self._init_osvd()
        else:
            self._init_tikhonov()

    # --- setup ---------------------------------------------------------------------------
    def _init_ssvd(self):
        matrix = toeplitz_matrix(self.aif, self.dt)
        u, s, vt = np.linalg.svd(matrix)
        if not s[0] > 0:
            raise InputError("the AIF is zero: nothing to deconvolve")
        keep = s >= self.ssvd_threshold * s[0]
        # b = V diag(1/σ) Uᵀ c, one N x N operator.
        self._pinv_t = ((u[:, keep] / s[keep]) @ vt[keep]).astype(np.float32)
        self._threshold = self.ssvd_threshold

    def _operator(self, keep: np.ndarray) -> np.ndarray:
        """(N, N) float32 operator P with residue = c @ P for the spectral filter `keep`/H: the first
        N rows and columns of the circulant pseudo-inverse, built by FFT of the unit impulses."""
        gain = np.where(keep, 1.0 / np.where(keep, self._spectrum, 1.0), 0.0)
        impulses = np.fft.rfft(np.eye(self.n), n=self.size, axis=1)
        return np.fft.irfft(impulses * gain, n=self.size, axis=1)[:, : self.n].astype(np.float32)

    def _init_osvd(self):
        sv, smax = self._sv, self._smax
        order = np.argsort(-sv, kind="stable")  # bins by falling singular value
        kept_bins = (sv[None, :] >= OSVD_THRESHOLDS[:, None] * smax).sum(axis=1)  # per threshold, falling
        counts, first = np.unique(kept_bins, return_index=True)  # rising; first = lowest threshold giving it
        keep = counts > 0
        self._osvd_counts = counts[keep]
        self._osvd_thresholds = OSVD_THRESHOLDS[first[keep]].astype(np.float32)
        # Only the bins that the lowest threshold keeps are ever used.
        order = order[: int(self._osvd_counts[-1])]
        self._osvd_order = order
        n, size = self.n, self.size
        phase = 2.0 * np.pi * np.outer(order, np.arange(n)) / size  # (K, N)
        cos, sin = np.cos(phase), np.sin(phase)
        # Analysis: the spectral weights Z_k = C_k / H_k of the kept bins straight from the curve,
        # C_k = Σ_j c_j e^{-iθ_jk} (the curve zero-padded to L): one real (2K, N) matrix, rows
        # interleaving Re Z_k and Im Z_k. One dense product per block instead of an rFFT, a
        # reordering and a complex product (measured 2-3x faster at N = 60-120; K < N + 1 bins).
        gain = (1.0 / np.where(sv > 0, self._spectrum, 1.0)) * (sv > 0)
        g = gain[order][:, None]
        analysis = np.empty((2 * order.size, n))
        analysis[0::2] = cos * g.real + sin * g.imag
        analysis[1::2] = cos * g.imag - sin * g.real
        self._osvd_analysis = np.ascontiguousarray(analysis, dtype=np.float32)
        # Synthesis restricted to the N kept samples: residue[j] = Σ_k Re(Z_k) cos_k[j] + Im(Z_k)
        # sin_k[j], exactly numpy's irfft (weights 1/L for DC and Nyquist, 2/L else; the imaginary
        # parts of DC and Nyquist are ignored). Columns interleave (cos, sin) per bin, like the rows
        # of the analysis. Stacked under it, the second differences of those rows: one product
        # gives the residue and the second differences the oscillation index needs.
        weight = (bin_multiplicity(size)[order] / size)[:, None]
        sin_rows = -weight * sin
        sin_rows[(order == 0) | (2 * order == size)] = 0.0
        synthesis = np.empty((n, 2 * order.size))
        synthesis[:, 0::2] = (weight * cos).T
        synthesis[:, 1::2] = sin_rows.T
        stacked = np.vstack([synthesis, synthesis[2:] - 2.0 * synthesis[1:-1] + synthesis[:-2]])  # (2N-2, 2K)
        # Per threshold step, the columns it adds, transposed and Fortran-ordered for an in-place
        # BLAS update of the (voxel, row) work array (no temporary the size of the block).
        bounds = 2 * np.concatenate([[0], self._osvd_counts])
        self._osvd_steps = [(int(a), int(b), np.asfortranarray(stacked[:, a:b].T, dtype=np.float32))
                            for a, b in zip(bounds[:-1], bounds[1:])]
        self._osvd_stacked = np.ascontiguousarray(stacked, dtype=np.float32)
        # The chosen residues, voxel-major: (n, 2K) weights @ (2K, N).
        self._osvd_synthesis_t = np.ascontiguousarray(synthesis.T, dtype=np.float32)
        # The first threshold step a block scans (see _solve_osvd); fit() sets it from a sample.
        self._osvd_start = 0

    def _init_tikhonov(self):
        sv, smax = self._sv, self._smax
        # Capped at σmax: at low CNR GCV keeps asking for more smoothing (towards the zero
        # solution); beyond σmax every residue is flattened, so the cap bounds the smoothing.
        self._lambdas = smax * np.geomspace(1e-3, TIKHONOV_LAMBDA_CAP, self.n_lambdas)
        if self.lambda_rule == "fixed":  # one λ for every voxel: one filter, nothing to search
            self._lambdas = np.array([smax * self.lambda_fraction])
        f = sv[None, :] ** 2 / (sv[None, :] ** 2 + self._lambdas[:, None] ** 2)  # (n_lambda, K)
        mult = bin_multiplicity(self.size)
        # GCV(λ) = ||A b_λ - c||² / (L - Σ f)²; by Parseval the numerator is
        # (1/L) Σ_k mult_k (1 - f_k)² |C_k|², one (n, K) x (K, n_lambda) product for all voxels.
        self._gcv_weights = np.ascontiguousarray((mult * (1.0 - f) ** 2 / self.size).T, dtype=np.float32)
        self._gcv_denominator = ((self.size - (mult * f).sum(axis=1)) ** 2).astype(np.float32)
        self._tikhonov_filters = (f * np.conj(self._spectrum) / np.where(sv > 0, sv ** 2, 1.0)).astype(np.complex64)
        # L-curve: ||b_λ||² = (1/L) Σ_k mult_k f_k² |C_k|² / |H_k|² (Parseval again), one more product.
        inverse_power = np.where(sv > 0, 1.0 / np.where(sv > 0, sv ** 2, 1.0), 0.0)
        self._norm_weights = np.ascontiguousarray((mult * f ** 2 * inverse_power / self.size).T, dtype=np.float32)

    # ------------------------------------------------------------------------------------
    def fit(self, curves: np.ndarray, keep_residue: bool = False, progress=None,
            keep_fitted: bool = False, osvd_first_step: int | None = None) -> DeconvolutionFit:
        """Deconvolve (n_voxels, N) curves in chunks of ``chunk_voxels``; ``keep_fitted`` also
        returns each voxel's model curve (:meth:`synthesize` of its residue, float32). ``osvd_first_step``: the step
        oSVD's threshold scans start at (by default sampled from the curves, :meth:`_osvd_first_step`); only the
        speed depends on it, so the models of one run's slice groups share the first one's (``osvd_start`` after a
        fit)."""
        curves = checks.curve_matrix(curves, self.n)
        nvox = curves.shape[0]
        cbf = np.empty(nvox, np.float32)
        tmax = np.empty(nvox, np.float32)
        reg = np.empty(nvox, np.float32)
        unmet = np.zeros(nvox, bool)
        residue_all = np.empty((nvox, self.n), np.float32) if keep_residue else None
        fitted_all = np.empty((nvox, self.n), np.float32) if keep_fitted else None
        forward = toeplitz_matrix(self.aif, self.dt).T.astype(np.float32) if keep_fitted else None

        block = self._block_voxels()
        if self.method is DeconvolutionMethod.OSVD:
            self._osvd_start = (self._osvd_first_step(curves, block) if osvd_first_step is None
                                else int(osvd_first_step))

        def solve(sl: slice) -> slice:
            # Blocks of a chunk: the spectra, residues and work arrays of one block stay in cache,
            # and memory beyond the curves is a few blocks per worker, whatever the chunk size.
            for start in range(sl.start, sl.stop, block):
                rows = slice(start, min(start + block, sl.stop))
                c = np.asarray(curves[rows], dtype=np.float32)  # a copy only for non-float32 input
                residue, reg[rows], unmet[rows] = self._solve(c)
                cbf[rows], tmax[rows] = _peak(residue, self.dt)
                if keep_residue:
                    residue_all[rows] = residue
                if keep_fitted:
                    np.matmul(residue, forward, out=fitted_all[rows])
            return sl

        chunks = [slice(start, min(start + self.chunk_voxels, nvox)) for start in range(0, nvox, self.chunk_voxels)]
        with _chunk_workers(len(chunks), self.workers) as pool:
            for sl in (pool.map(solve, chunks) if pool is not None else map(solve, chunks)):
                if progress is not None:
                    progress(sl.stop / nvox)
        return DeconvolutionFit(cbf, tmax, reg, unmet, residue_all, fitted_all)

    def synthesize(self, residue: np.ndarray) -> np.ndarray:
        """Forward model: the curves that a (n_voxels, N) residue predicts (A b, first N samples)."""
        return np.asarray(residue, np.float64) @ toeplitz_matrix(self.aif, self.dt).T

    # ------------------------------------------------------------------------------------
    def _block_voxels(self) -> int:
        if self.method is DeconvolutionMethod.OSVD:
            per_voxel = 4 * (self._osvd_analysis.shape[0] + 2 * (self.n - 2) + self.n)
            return int(min(max(OSVD_BLOCK_BYTES // per_voxel // 64 * 64, 256), 4096))
        return TIKHONOV_BLOCK if self.method is DeconvolutionMethod.TIKHONOV else PRODUCT_BLOCK

    def _solve(self, c: np.ndarray):
        """(residue, regularisation, unmet) for one block of curves."""
        if self.method in (DeconvolutionMethod.SSVD, DeconvolutionMethod.CSVD):
            reg = np.full(c.shape[0], self._threshold, np.float32)
            return c @ self._pinv_t, reg, np.zeros(c.shape[0], bool)
        if self.method is DeconvolutionMethod.OSVD:
            return self._solve_osvd(c)
        spectrum = scipy.fft.rfft(c, n=self.size, axis=1)  # the one FFT of each curve (complex64)
        return self._solve_tikhonov(spectrum)

    def _solve_osvd(self, c: np.ndarray):
        """Per voxel the lowest threshold (largest kept-bin count) whose residue meets OI <= target.

        Thresholds are scanned from the most to the least regularised, adding the bins that each
        lower threshold keeps; the last threshold at which a voxel meets the target is its lowest
        one. Keeping the lowest-OI threshold instead would over-smooth (a known bug in public
        code). Work is time-major, (row, voxel): the per-voxel max and sum then run along
        contiguous rows of voxels, several times faster than reducing short rows of 60-120 frames.
        The residue and its second differences share one (2N-2, n) array, updated in place by one
        BLAS call per threshold (sgemm with beta = 1: no temporary, one read and one write of the
        array), then one max and one |.| sum are all the oscillation index costs. The decisions
        come from these running sums; the chosen residues are rebuilt by one fresh product.
        (Scanning downwards from the lowest threshold and dropping voxels once done is exact too,
        but the voxels settle near the middle of the grid, so it evaluates ~60 % of the thresholds
        per voxel and pays a full product to start and the compactions: measured no faster.)
        """
        weights = self._osvd_analysis @ c.T  # (2K, n): Re, Im of Z_k per kept bin, interleaved
        n, steps = c.shape[0], len(self._osvd_steps)
        best = np.zeros(n, np.intp)  # index into the counts; fallback: the most regularised residue
        met = np.zeros(n, bool)
        # The most regularised steps are rarely any voxel's choice (a few in 10^5 on the phantoms),
        # yet the upward scan pays each of them over every voxel. So the scan starts at the step
        # `_osvd_start` (set by fit() from a sample of the curves; one product gives the residue
        # there): a voxel's choice is its highest step that meets the target, so a voxel meeting
        # it at or above the start is decided exactly; the few that do not are scanned again over
        # the skipped steps. The start is one number per fit, whatever the chunks and threads.
        start = min(self._osvd_start, steps - 1)
        self._osvd_scan(weights, start, steps, best, met)
        if start and not met.all():
            rest = np.flatnonzero(~met)
            rest_best, rest_met = np.zeros(rest.size, np.intp), np.zeros(rest.size, bool)
            self._osvd_scan(np.ascontiguousarray(weights[:, rest]), 0, start, rest_best, rest_met)
            best[rest], met[rest] = rest_best, rest_met
        # The chosen residue of every voxel in one product: its weights beyond its bin count zeroed.
        count = 2 * self._osvd_counts[best]
        np.copyto(weights, 0.0, where=np.arange(weights.shape[0])[:, None] >= count[None, :])
        return weights.T @ self._osvd_synthesis_t, self._osvd_thresholds[best], ~met

    @property
    def osvd_start(self) -> int:
        """The step the last :meth:`fit`'s oSVD threshold scans started at (0 for the other methods)."""
        return getattr(self, "_osvd_start", 0)

    def _osvd_first_step(self, curves: np.ndarray, block: int) -> int:
        """The step the threshold scans start at: below all but the rarest choices (0.5 %) of a
        sample of one block of the curves spread over them (scanned in full). Only the speed
        depends on it: the choices do not (see _solve_osvd)."""
        steps = len(self._osvd_steps)
        sample = np.asarray(curves[:: max(curves.shape[0] // block, 1)][:block], dtype=np.float32)
        if sample.shape[0] == 0:
            return 0
        best, met = np.zeros(sample.shape[0], np.intp), np.zeros(sample.shape[0], bool)
        self._osvd_scan(self._osvd_analysis @ sample.T, 0, steps, best, met)
        if not met.any():
            return 0
        share = np.cumsum(np.bincount(best[met], minlength=steps))
        return max(int(np.searchsorted(share, 0.005 * met.sum(), side="right")) - 1, 0)

    def _osvd_scan(self, weights: np.ndarray, first: int, stop: int, best: np.ndarray, met: np.ndarray):
        """Threshold steps [first, stop) over the voxels (columns) of ``weights``: ``best`` gets the
        highest step at which a voxel meets OI <= target, ``met`` whether any did (both in place)."""
        from scipy.linalg.blas import sgemm

        n, rows = weights.shape[1], self.n
        work = np.empty((2 * rows - 2, n), np.float32)  # residue rows, then second-difference rows
        if first:  # the residue and second differences of every bin below step `first`, at once
            np.matmul(self._osvd_stacked[:, : self._osvd_steps[first][0]], weights[: self._osvd_steps[first][0]],
                      out=work)
        else:
            work[...] = 0.0
        work_t = work.T  # (n, 2N-2), Fortran-ordered: what sgemm updates in place
        residue, second = work[:rows], work[rows:]
        scratch = np.empty_like(second)  # reused buffers: no large allocation inside the loop
        peak = np.empty(n, np.float32)
        roughness = np.empty(n, np.float32)
        ok = np.empty(n, bool)
        limit = np.float32(self.oi_target * self.n)
        for step in range(first, stop):
            a, b, columns = self._osvd_steps[step]
            updated = sgemm(1.0, weights[a:b].T, columns, beta=1.0, c=work_t, overwrite_c=1)
            if not np.shares_memory(updated, work):  # never expected: a BLAS that copied its output
                work_t[...] = updated
            residue.max(axis=0, out=peak)
            np.abs(second, out=scratch)
            scratch.sum(axis=0, out=roughness)
            np.less_equal(roughness, limit * peak, out=ok)
            ok &= peak > 0
            best[ok] = step
            met |= ok

    def _solve_tikhonov(self, spectrum: np.ndarray):
        """Tikhonov filter factors f = σ²/(σ²+λ²); λ per voxel by ``lambda_rule``: the minimum of GCV, or the
        corner (maximum curvature) of the L-curve, both in closed form on |C_k|² over the grid; or one fixed λ."""
        n = spectrum.shape[0]
        if self.lambda_rule == "fixed":
            idx = np.zeros(n, np.intp)
        else:
            power = spectrum.real ** 2
            power += spectrum.imag ** 2
            residual = power @ self._gcv_weights  # (n, n_lambda): ||A b_λ - c||² (GCV's numerators)
            if self.lambda_rule == "gcv":
                residual /= self._gcv_denominator
                idx = np.argmin(residual, axis=1)
            else:
                idx = lcurve_corner(residual, power @ self._norm_weights)
            del power, residual
        spectrum *= self._tikhonov_filters[idx]
        residue = scipy.fft.irfft(spectrum, n=self.size, axis=1)[:, : self.n]
        return residue, (self._lambdas[idx] / self._smax).astype(np.float32), np.zeros(n, bool)


def lcurve_corner(residual_sq: np.ndarray, solution_sq: np.ndarray) -> np.ndarray:
    """Per row, the grid index of the L-curve's corner: the maximum signed curvature of (log ||residual||,
    log ||solution||) along a geometric λ grid (Hansen 1993; Calamante 2003 for DSC). The grid is uniform in log λ,
    so derivatives are taken per step (the step cancels in the curvature). As λ rises the residual grows and the
    solution shrinks; the corner turns counter-clockwise, so its curvature is positive."""
    tiny = np.finfo(np.float64).tiny
    x = 0.5 * np.log(np.maximum(residual_sq.astype(np.float64), tiny))
    y = 0.5 * np.log(np.maximum(solution_sq.astype(np.float64), tiny))
    dx, dy = np.gradient(x, axis=1), np.gradient(y, axis=1)
    ddx, ddy = np.gradient(dx, axis=1), np.gradient(dy, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        curvature = (dx * ddy - ddx * dy) / (dx * dx + dy * dy) ** 1.5
    curvature[~np.isfinite(curvature)] = -np.inf
    return np.argmax(curvature, axis=1)


def deconvolve_classic(aif_curve, times, brain_curves, params, warnings, report_progress, keep_fitted=False,
                       brain=None, voxel_sizes=None, guide=None, contrast=None,  # these four: PHAE only
                       offsets=None):  # each curve's acquisition time relative to the AIF's: one AIF per offset
    """The run's deconvolution (sSVD, cSVD, oSVD, Tikhonov) of the brain's curves: one model for every voxel, or with
    ``offsets`` (a 2D multi-slice series' slice times, perfusion/slice_timing.py) one per acquisition offset, each
    bound to the AIF moved to that time. Returns (fit, report entries)."""
    shared: dict = {}  # oSVD's first scan step, sampled once per run: each slice group's own sample cost +24-28 %

    def fit_group(aif, curves, progress):
        model = DeconvolutionModel(
            aif, times[1] - times[0], params.method, ssvd_threshold=params.ssvd_threshold,
            csvd_threshold=params.csvd_threshold, oi_target=params.osvd_oi_target,
            n_lambdas=params.tikhonov_lambdas, chunk_voxels=params.chunk_voxels,
            lambda_rule=params.tikhonov_lambda_rule)
        fit = model.fit(curves, progress=progress, keep_fitted=keep_fitted,  # the model curves for the panel's plots
                        osvd_first_step=shared.get("osvd_start"))
        shared.setdefault("osvd_start", model.osvd_start)
        return fit

    fit = fit_by_acquisition_time(
        fit_group, aif_curve, times, brain_curves, offsets,
        progress=lambda f: report_progress(0.35 + 0.55 * f, f"deconvolving ({params.method.value})"))
    if fit.unmet.any():
        warnings.append(f"oSVD: {int(fit.unmet.sum())} voxels met no threshold for OI <= {params.osvd_oi_target}; "
                        "the largest threshold was used there")
    extra = {}
    if params.method is DeconvolutionMethod.TIKHONOV:
        rule, _ = parse_lambda_rule(params.tikhonov_lambda_rule)
        # the share of voxels whose λ got the most smoothing the grid allows (a fixed λ is no choice: none)
        searched = rule != "fixed" and fit.cbf.size > 0
        at_cap = float(np.mean(fit.regularisation >= 0.999 * TIKHONOV_LAMBDA_CAP)) if searched else 0.0
        extra["tikhonov"] = {"lambda_rule": str(params.tikhonov_lambda_rule),
                             "lambda_over_smax_median": float(np.median(fit.regularisation)) if fit.cbf.size else None,
                             "lambda_at_cap_share": round(at_cap, 4)}
        line = tikhonov_cap_warning(at_cap, rule)
        if line:
            warnings.append(line)
    return fit, extra


@contextlib.contextmanager
def _chunk_workers(n_chunks: int, workers: int | None):
    """A thread pool over chunks with BLAS held to one thread per worker, or None (run serially).

    The chunk solvers are short BLAS products, FFTs and ufuncs that release the GIL. Letting BLAS
    thread each small product instead costs far more than it gains: on the shared 2-core machine
    under load the oSVD search ran 12x slower with two BLAS threads than with one. Without
    threadpoolctl (not bundled with Slicer) BLAS cannot be held to one thread, so chunks run
    serially with BLAS's own threading.
    """
    workers = block_workers() if workers is None else max(int(workers), 1)  # the CPUs this process may use
    if n_chunks < 2 or workers < 2:
        with blas_threads(1 if workers < 2 else None):
            yield None
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(workers, n_chunks)) as pool:
        yield pool


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
