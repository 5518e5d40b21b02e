"""Two-compartment exchange (2CXM) and uptake (2CUM) models for every voxel at once: a linear
least-squares initialisation on integrated curves, then a batched Levenberg-Marquardt fit of the
exact model, with a per-voxel arterial delay. ``ExchangeModel(...).fit(curves) -> ExchangeFit``,
the same shape of interface as :class:`.models.PKModel`.

Model (Sourbron & Buckley, NMR Biomed 2013;26:1004; the OSIPI CAPLEX definitions): plasma (vp) and
interstitium (ve) exchange with permeability-surface product PS, plasma flows in at Fp:

    vp dcp/dt = Fp (ca - cp) - PS (cp - ce),   ve dce/dt = PS (cp - ce),   Ct = vp cp + ve ce.

With kb = Fp/vp, kp = (Fp + PS)/vp, ke = PS/ve and K± = ½[(kp + ke) ± √((kp + ke)² - 4 ke kb)],
the impulse response is bi-exponential (derived from the ODEs, checked in the tests):

    2CXM   R(t) = Fp/(K+ - K-) [ (kb - K-) e^{-K+ t} + (K+ - kb) e^{-K- t} ]
    2CUM   R(t) = Fp [ E + (1 - E) e^{-kp t} ],  E = PS/(Fp + PS)      (ve -> infinity: no backflux)

and Ct = R ⊛ ca is computed exactly for an AIF piecewise linear between frames by the recursion of
:func:`.kinetics.exp_convolution`.

Linear forms (Flouri, Lesnic & Sourbron, MRM 2016;76:998): R's Laplace transform is a ratio of
polynomials, so integrating the ODE twice makes Ct linear in four (three) coefficients:

    2CXM   Ct = -(K+ + K-) ∫Ct - K+K- ∫∫Ct + Fp ∫ca + Fp·PS (1/vp + 1/ve) ∫∫ca
    2CUM   Ct = -kp ∫Ct + Fp ∫ca + Fp·PS/vp ∫∫ca

solved for all voxels by one batched normal-equation solve per delay of the grid (as for Tofts),
inverted in closed form (``_from_linear_*``). The noisy ∫Ct among the regressors biases that
solution a little at low SNR, and it can leave the physical range; it is the starting point of the
Levenberg-Marquardt fit of (Fp, PS, ve, vp), which runs on all voxels of a chunk together with
per-voxel damping. Its Jacobian needs no extra convolution per parameter: the recursion that
convolves also gives the derivative with respect to each rate K±, and the map (Fp, PS, ve, vp) ->
(A±, K±) is differentiated by forward differences of closed forms.

Arterial delay: every voxel gets a short nonlinear fit at each delay of the grid (from that delay's
linear solution) and keeps the best delay for the full fit (``_screen_delays``; why not the linear
residual alone, or a walk to better neighbours, is told there).

Units inside: time in minutes, Fp and PS in ml/ml/min (1/min), ve and vp fractions. ``ExchangeFit``
reports Fp in ml/100 ml/min (as OSIPI and the literature quote it) and PS in 1/min (ml/ml/min),
E = PS/(Fp + PS), Ktrans = E·Fp [1/min], Tc = vp/Fp [s] (the capillary transit time) and
Te = ve/PS [s] (2CXM only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import checks
from .backflux import backflux_norm, backflux_snr
from .kinetics import _segment_weights, cumulative_integral, shifted

#: Bounds of the fit, ml/ml/min for Fp and PS: far outside anything perfused tissue shows, but
#: they keep the exponentials finite on noise-only voxels.
FP_BOUNDS = (1e-4, 20.0)
PS_BOUNDS = (0.0, 10.0)
V_BOUNDS = (1e-4, 1.0)
#: The two-compartment models separate Fp from PS on the first pass, which lasts a few seconds: they need frames
#: at most this far apart [s] (docs/validation.md, issue 16: OSIPI objects at 0.5 s; our objects at 1-5 s, where
#: 5 s frames lose 17 % of the delays and double the Fp error at 0.02 mM noise); the pipeline warns above it
#: (by more than FRAME_INTERVAL_TOLERANCE, for timing jitter).
MAX_FRAME_INTERVAL_S = 2.0
FRAME_INTERVAL_TOLERANCE = 0.05
#: Start of the nonlinear fit where the linear solution is not physical (typical grey matter).
GENERIC_START = {"fp": 0.5, "ps": 0.02, "ve": 0.2, "vp": 0.05}


@dataclass
class ExchangeFit:
    """Per-voxel parameters: fp [ml/100 ml/min], ps, ktrans [1/min], ve, vp, e [fractions],
    tc, te [s] (te is 0 for 2CUM, where ve is not defined and reported as 0), delay [s], r2."""

    fp: np.ndarray
    ps: np.ndarray
    ve: np.ndarray
    vp: np.ndarray
    e: np.ndarray
    ktrans: np.ndarray
    tc: np.ndarray
    te: np.ndarray
    delay: np.ndarray
    r2: np.ndarray
    fitted: np.ndarray  # (n, T) model curves [mM]


# --- the forward model ------------------------------------------------------------------------
def _rates(fp, ps, ve, vp, uptake: bool):
    """(K+, A+, K-, A-): Ct = A+·E(K+) + A-·E(K-), E(K) = ∫ ca(τ) e^{-K(t-τ)} dτ."""
    kb = fp / vp
    kp = (fp + ps) / vp
    if uptake:
        e = ps / (fp + ps)
        return kp, fp * (1.0 - e), np.zeros_like(kp), fp * e
    ke = ps / ve
    total = kp + ke
    root = np.sqrt(np.maximum(total * total - 4.0 * ke * kb, 0.0))
    k_plus, k_minus = 0.5 * (total + root), 0.5 * (total - root)
    split = np.maximum(k_plus - k_minus, 1e-12)
    return k_plus, fp * (kb - k_minus) / split, k_minus, fp * (k_plus - kb) / split


def exp_convolution_rows(cp: np.ndarray, t: np.ndarray, k: np.ndarray, derivative: bool = False):
    """E_i = ∫_0^{t_i} cp(τ) e^{-k (t_i - τ)} dτ for a per-row AIF cp (n, T) (each voxel its own
    delay) and rate k (n,), cp piecewise linear on t; with ``derivative`` also dE/dk. The same
    exact recursion as :func:`.kinetics.exp_convolution`, E_i = e^{-kh} E_{i-1} + wa·cp_{i-1} + wb·cp_i,
    differentiated term by term (the weights' k-derivatives by central differences, once per step)."""
    n, n_t = cp.shape
    # column-major outputs: writing one frame for every voxel is then a contiguous write
    e_out = np.zeros((n, n_t), order="F")
    d_out = np.zeros((n, n_t), order="F") if derivative else None
    prev, dprev = e_out[:, 0], None if d_out is None else d_out[:, 0]
    cp = np.asfortranarray(cp)
    cache = {}
    for i in range(1, n_t):
        h = round(float(t[i] - t[i - 1]), 12)
        if h not in cache:
            wa, wb = _segment_weights(k, h)
            decay = np.exp(-k * h)
            if derivative:
                dk = 1e-6 * np.maximum(k, 1.0)
                wa1, wb1 = _segment_weights(k + dk, h)
                wa0, wb0 = _segment_weights(np.maximum(k - dk, 0.0), h)
                span = (k + dk) - np.maximum(k - dk, 0.0)
                cache[h] = (wa, wb, decay, (wa1 - wa0) / span, (wb1 - wb0) / span)
            else:
                cache[h] = (wa, wb, decay, None, None)
        wa, wb, decay, dwa, dwb = cache[h]
        a, b = cp[:, i - 1], cp[:, i]
        if derivative:
            dprev = decay * dprev - h * decay * prev + dwa * a + dwb * b
            d_out[:, i] = dprev
        prev = decay * prev + wa * a + wb * b
        e_out[:, i] = prev
    return (e_out, d_out) if derivative else e_out


def exchange_curves(cp: np.ndarray, t_min: np.ndarray, fp, ps, ve, vp, uptake: bool = False) -> np.ndarray:
    """Tissue curves (n, T) [mM] of the 2CXM (or 2CUM with ``uptake``) for per-voxel parameters
    (Fp, PS in 1/min, ve, vp fractions) and a plasma AIF cp (T,) or per voxel (n, T), on t_min (minutes)."""
    fp, ps, ve, vp = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (fp, ps, ve, vp))
    cp = np.broadcast_to(np.asarray(cp, dtype=np.float64), (fp.size, np.shape(cp)[-1]))
    k_plus, a_plus, k_minus, a_minus = _rates(fp, ps, ve, vp, uptake)
    both = exp_convolution_rows(np.concatenate([cp, cp]), t_min, np.concatenate([k_plus, k_minus]))
    return a_plus[:, None] * both[:fp.size] + a_minus[:, None] * both[fp.size:]


# --- the linear solution ----------------------------------------------------------------------
def _from_linear_2cxm(coef):
    """(fp, ps, ve, vp, valid) from the coefficients of ∫Ct, ∫∫Ct, ∫ca, ∫∫ca."""
    with np.errstate(divide="ignore", invalid="ignore"):
        total, product, fp, c0 = -coef[:, 0], -coef[:, 1], coef[:, 2], coef[:, 3]
        g = c0 / fp  # PS (1/vp + 1/ve)
        kb = total - g  # Fp/vp
        vp = fp / kb
        ke = product / kb  # PS/ve
        ps = vp * (g - ke)
        ve = ps / ke
    valid = np.isfinite(ve) & (fp > 0) & (kb > 0) & (ke > 0) & (ps >= 0) & (vp > 0) & (vp <= 1) & (ve > 0) & (ve <= 1)
    return fp, ps, ve, vp, valid


def _from_linear_2cum(coef):
    """(fp, ps, ve, vp, valid) from the coefficients of ∫Ct, ∫ca, ∫∫ca (ve is not defined: 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        kp, fp, c0 = -coef[:, 0], coef[:, 1], coef[:, 2]
        ps_over_vp = c0 / fp
        vp = fp / (kp - ps_over_vp)
        ps = vp * ps_over_vp
    valid = np.isfinite(ps) & (fp > 0) & (ps >= 0) & (vp > 0) & (vp <= 1)
    return fp, ps, np.zeros_like(fp), vp, valid


class ExchangeModel:
    """2CXM (``uptake=False``) or 2CUM bound to a plasma AIF and a time grid.

    aif: Cp (T,) [mM]; times: (T,) seconds; max_delay, delay_step: the arterial-delay grid [s];
    iterations: Levenberg-Marquardt iterations (0 = the linear solution only, clipped to the bounds).
    exact_aif: a population AIF known at any time (as for :class:`.models.PKModel`): each delay evaluates it.
    """

    def __init__(self, aif: np.ndarray, times: np.ndarray, uptake: bool = False, max_delay: float = 0.0,
                 delay_step: float = 1.0, iterations: int = 40, chunk_voxels: int = 16384, exact_aif=None):
        self.aif, self.times = checks.aif_and_times(aif, times)
        self.t_min = self.times / 60.0
        self.uptake = uptake
        n_delays = int(np.floor(max_delay / delay_step + 1e-9)) + 1 if max_delay > 0 else 1
        self.delays = np.arange(n_delays) * delay_step
        self.iterations = iterations
        self.chunk_voxels = chunk_voxels
        self.exact_aif = exact_aif

    def _shifted(self, delay: float) -> np.ndarray:
        if self.exact_aif is not None:
            return self.exact_aif.values(delay)
        return shifted(self.aif, self.times, delay)

    def fit(self, curves: np.ndarray, progress=None) -> ExchangeFit:
        curves = checks.curve_matrix(curves, self.times.size)
        n = curves.shape[0]
        parts = []
        for start in range(0, n, self.chunk_voxels):  # chunks bound the (n, T, p) Jacobians
            parts.append(self._fit_chunk(np.asarray(curves[start:start + self.chunk_voxels], dtype=np.float64)))
            if progress is not None:
                progress(min(1.0, (start + self.chunk_voxels) / max(n, 1)))
        return ExchangeFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in ExchangeFit.__dataclass_fields__))

    def ve_backflux_snr(self, curves: np.ndarray, fit: ExchangeFit) -> np.ndarray:
        """Per voxel: the backflux of the interstitium (:func:`.backflux.backflux_norm` of Ktrans = E·Fp with the
        Tofts-equivalent rate Ktrans/ve, the 2CXM's PS << Fp limit) over the noise SD of the fit residual. 2CUM has
        no ve: 0."""
        curves = np.asarray(curves)
        n, n_frames = curves.shape
        if self.uptake or n == 0:
            return np.zeros(n)
        sse = np.empty(n)
        for start in range(0, n, self.chunk_voxels):
            rows = slice(start, start + self.chunk_voxels)
            sse[rows] = ((np.asarray(curves[rows], dtype=np.float64) - fit.fitted[rows]) ** 2).sum(axis=1)
        ve = np.asarray(fit.ve, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            kep = np.where(ve > 0, fit.ktrans / np.where(ve > 0, ve, 1.0), 0.0)
        norm = backflux_norm(self.aif, self.times, fit.delay, fit.ktrans, kep, exact_aif=self.exact_aif)
        return backflux_snr(norm, sse, n_frames - 4 - (1 if self.delays.size > 1 else 0))

    # --- linear least squares over the delay grid ----------------------------------------------
    def _linear(self, y, int_ct, int2_ct):
        """Best linear coefficients and delay of every voxel over the delay grid."""
        own = [int_ct] if self.uptake else [int_ct, int2_ct]  # per-voxel regressors
        n, k_own = y.shape[0], len(own)
        g_own = np.stack([np.stack([np.einsum("nt,nt->n", a, b) for b in own], -1) for a in own], -2)
        r_own = np.stack([np.einsum("nt,nt->n", a, y) for a in own], -1)
        yy = np.einsum("nt,nt->n", y, y)
        best_sse, best_coef, best_delay = np.full(n, np.inf), np.zeros((n, k_own + 2)), np.zeros(n)
        every = []  # the coefficients of every delay: the starts of the delay screening
        for d in self.delays:
            cp = self._shifted(d)
            int_cp = cumulative_integral(cp, self.t_min) if self.exact_aif is None else self.exact_aif.integral(d)
            shared = np.stack([int_cp, cumulative_integral(int_cp, self.t_min)])  # (2, T)
            k = k_own + 2
            gram = np.empty((n, k, k))
            gram[:, :k_own, :k_own] = g_own
            cross = np.stack([a @ shared.T for a in own], 1)  # (n, k_own, 2)
            gram[:, :k_own, k_own:] = cross
            gram[:, k_own:, :k_own] = cross.transpose(0, 2, 1)
            gram[:, k_own:, k_own:] = shared @ shared.T
            rhs = np.concatenate([r_own, y @ shared.T], axis=1)
            # scale-invariant ridge: the regressors differ by orders of magnitude (∫∫ vs ∫)
            scale = np.sqrt(np.maximum(np.diagonal(gram, axis1=1, axis2=2), 1e-300))
            normed = gram / (scale[:, :, None] * scale[:, None, :]) + 1e-10 * np.eye(k)
            coef = np.linalg.solve(normed, (rhs / scale)[..., None])[..., 0] / scale
            sse = yy - np.einsum("nk,nk->n", coef, rhs)
            better = sse < best_sse
            best_sse[better], best_coef[better], best_delay[better] = sse[better], coef[better], d
            every.append(coef)
        return best_coef, best_delay, np.stack(every)

    def _fit_chunk(self, y: np.ndarray) -> ExchangeFit:
        int_ct = cumulative_integral(y, self.t_min)
        int2_ct = cumulative_integral(int_ct, self.t_min)
        coef, delay, every = self._linear(y, int_ct, int2_ct)
        theta = self._start(coef)
        aifs = np.stack([self._shifted(d) for d in self.delays])  # (n_delays, T)
        index = np.rint(delay / self._step()).astype(int)
        if self.iterations and self.delays.size > 1:
            theta, index = self._screen_delays(y, aifs, every)
        if self.iterations:
            theta = self._levenberg_marquardt(y, aifs[index], theta)
        fitted = self._forward(aifs[index], theta)
        delay = self.delays[index]
        fp, ps, ve, vp = theta.T
        if self.uptake:
            ve = np.zeros_like(fp)
        e = ps / (fp + ps)
        with np.errstate(divide="ignore", invalid="ignore"):
            te = np.where(ps > 0, 60.0 * ve / np.where(ps > 0, ps, 1.0), 0.0) if not self.uptake else np.zeros_like(fp)
        resid = ((y - fitted) ** 2).sum(axis=1)
        total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        r2 = np.where(total > 0, 1.0 - resid / np.where(total > 0, total, 1.0), 0.0)
        return ExchangeFit(100.0 * fp, ps, ve, vp, e, e * fp, 60.0 * vp / fp, te, delay, r2, fitted.astype(np.float32))

    def _start(self, coef):
        """Start of the nonlinear fit (n, 4) from linear coefficients: their closed-form inverse where
        it is physical, else :data:`GENERIC_START`, clipped to the bounds."""
        fp, ps, ve, vp, valid = (_from_linear_2cum if self.uptake else _from_linear_2cxm)(coef)
        start = {name: np.where(valid, value, GENERIC_START[name]) for name, value in
                 (("fp", fp), ("ps", ps), ("ve", ve if not self.uptake else np.full_like(fp, 1.0)), ("vp", vp))}
        return self._clip(np.stack([start["fp"], start["ps"], start["ve"], start["vp"]], 1))

    def _step(self) -> float:
        return float(self.delays[1] - self.delays[0]) if self.delays.size > 1 else 1.0

    def _screen_delays(self, y, aifs, every):
        """(start (n, 4), delay index (n,)): a short nonlinear fit at *every* delay of the grid from
        that delay's linear solution, and the delay whose fit is best.

        The linear residual alone picks the delay badly where delay trades against dispersion: two
        OSIPI 2CXM voxels (Fp 5 ml/100 ml/min) were placed 0.5 s early with PS +40 %. Walking from
        there to better neighbours was not enough either: at 5 s frames, 10 % of noise-free voxels
        stopped 2 s late with Fp 3-4x the truth, because the fit at the intermediate delay was worse."""
        short = max(self.iterations // 5, 5)
        best_sse = np.full(y.shape[0], np.inf)
        best_theta, best_index = np.empty((y.shape[0], 4)), np.zeros(y.shape[0], int)
        for j in range(self.delays.size):
            cp = np.broadcast_to(aifs[j], y.shape)
            theta = self._levenberg_marquardt(y, cp, self._start(every[j]), iterations=short)
            sse = ((y - self._forward(cp, theta)) ** 2).sum(1)
            better = sse < best_sse
            best_sse[better], best_theta[better], best_index[better] = sse[better], theta[better], j
        return best_theta, best_index

    # --- nonlinear refinement --------------------------------------------------------------------
    def _clip(self, theta):
        lo = np.array([FP_BOUNDS[0], PS_BOUNDS[0], V_BOUNDS[0], V_BOUNDS[0]])
        hi = np.array([FP_BOUNDS[1], PS_BOUNDS[1], V_BOUNDS[1], V_BOUNDS[1]])
        return np.clip(theta, lo, hi)

    def _forward(self, cp, theta):
        return exchange_curves(cp, self.t_min, *theta.T, uptake=self.uptake)

    def _model_and_jacobian(self, cp, theta, free):
        """Model curves (n, T) and their derivatives (n, T, p) with respect to theta[:, free]: the
        convolutions and their rate derivatives by the recursion, the map theta -> (A±, K±) by
        forward differences of closed forms (no extra convolution per parameter)."""
        n = theta.shape[0]
        rates = np.stack(_rates(*theta.T, self.uptake), 1)  # (n, 4): K+, A+, K-, A-
        e, d = exp_convolution_rows(np.concatenate([cp, cp]), self.t_min,
                                    np.concatenate([rates[:, 0], rates[:, 2]]), derivative=True)
        e_plus, e_minus, d_plus, d_minus = e[:n], e[n:], d[:n], d[n:]
        pred = rates[:, 1, None] * e_plus + rates[:, 3, None] * e_minus
        cols = []
        for j in free:
            step = 1e-7 + 1e-6 * np.abs(theta[:, j])
            moved = theta.copy()
            moved[:, j] += step
            dr = (np.stack(_rates(*moved.T, self.uptake), 1) - rates) / step[:, None]
            cols.append(dr[:, 1, None] * e_plus + rates[:, 1, None] * d_plus * dr[:, 0, None]
                        + dr[:, 3, None] * e_minus + rates[:, 3, None] * d_minus * dr[:, 2, None])
        return pred, np.stack(cols, 2)

    def _levenberg_marquardt(self, y, cp, theta, iterations: int | None = None):
        """Batched LM on (Fp, PS, ve, vp) [ve fixed for 2CUM]: every voxel takes its own damped
        Gauss-Newton step per iteration and keeps it only when its residual drops."""
        free = [0, 1, 3] if self.uptake else [0, 1, 2, 3]
        lam = np.full(y.shape[0], 1e-2)
        pred, jac = self._model_and_jacobian(cp, theta, free)
        sse = ((y - pred) ** 2).sum(1)
        for _ in range(self.iterations if iterations is None else iterations):
            r = y - pred
            jt = jac.transpose(0, 2, 1)
            jtj = jt @ jac
            g = (jt @ r[..., None])[..., 0]
            diag = np.diagonal(jtj, axis1=1, axis2=2)
            a = jtj + (lam[:, None] * diag + 1e-30)[:, :, None] * np.eye(len(free))
            delta = np.linalg.solve(a, g[..., None])[..., 0]
            trial = theta.copy()
            trial[:, free] += delta
            trial = self._clip(trial)
            pred2, jac2 = self._model_and_jacobian(cp, trial, free)
            sse2 = ((y - pred2) ** 2).sum(1)
            ok = sse2 < sse
            theta = np.where(ok[:, None], trial, theta)
            pred = np.where(ok[:, None], pred2, pred)
            jac = np.where(ok[:, None, None], jac2, jac)
            gain = np.where(ok, (sse - sse2) / np.maximum(sse, 1e-300), 0.0)
            sse = np.where(ok, sse2, sse)
            lam = np.clip(np.where(ok, lam * 0.3, lam * 10.0), 1e-9, 1e9)
            if gain.max() < 1e-9 and lam.min() > 1e-3:  # every voxel has converged or is stuck
                break
        return theta
