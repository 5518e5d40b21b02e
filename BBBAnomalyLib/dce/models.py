"""Tofts, extended Tofts and Patlak for every voxel at once: linear least squares + optional
nonlinear refinement, with a per-voxel bolus delay. dipy-style: ``PKModel(...).fit(curves) -> PKFit``.

Linear forms (Murase, MRM 2004;51:858): integrating the Tofts ODE dCt/dt = Ktrans·Cp - kep·Ct gives
    extended Tofts   Ct = (Ktrans + kep·vp)·∫Cp - kep·∫Ct + vp·Cp
    Tofts            Ct = Ktrans·∫Cp - kep·∫Ct
    Patlak           Ct = vp·Cp + Ktrans·∫Cp
so each voxel is one 2x2 or 3x3 normal-equation solve, all voxels batched; the AIF regressors are
shared and the only per-voxel regressor is ∫Ct. Murase's form puts the noisy ∫Ct among the
regressors (a small bias at low SNR); ``refine`` removes it with a batched Levenberg-Marquardt fit
of the exact model, whose exponential convolution is computed recursively, exactly for an AIF that
is piecewise linear between frames (no discrete-convolution error at coarse sampling).

Units: time in minutes inside this module (Ktrans, kep in 1/min); ``PKModel`` takes seconds.
Bolus delay: the AIF is shifted by each delay of a grid (0 .. max_delay) and every voxel keeps the
delay with the smallest linear-fit residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parameters import Model

KEP_MAX = 10.0  # [1/min]; faster exchange is indistinguishable from vp at clinical frame rates


def cumulative_integral(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid along the last axis, starting at 0 (same length as t)."""
    y = np.asarray(y, dtype=np.float64)
    steps = 0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(t)
    return np.concatenate([np.zeros(y.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)


def _segment_weights(k, h):
    """Weights (wa, wb) with ∫_0^h (a + (b - a) s/h) e^{-k (h - s)} ds = wa·a + wb·b, stable as k -> 0."""
    x = k * h
    small = x < 1e-3
    xs = np.where(small, 1.0, x)
    one_minus = -np.expm1(-xs)
    wb = np.where(small, h * (0.5 - x / 6.0), (h / xs) * (1.0 - one_minus / xs))
    wa = np.where(small, h * (0.5 - x / 3.0), h * one_minus / xs - wb)
    return wa, wb


def exp_convolution(cp: np.ndarray, t: np.ndarray, kep: np.ndarray, xp=np) -> np.ndarray:
    """E(t_i) = ∫_0^{t_i} Cp(τ) e^{-kep (t_i - τ)} dτ for each kep (n,), Cp piecewise linear on t.

    Recursive: E_i = e^{-kep h} E_{i-1} + wa·Cp_{i-1} + wb·Cp_i — a loop over frames, every voxel at
    once (numpy or torch arrays through ``xp``). ``cp`` is one AIF (T,) shared by all voxels, or one
    per voxel (n, T) (the refinement of voxels with different bolus delays in one batch)."""
    # frames are rows of a (T, n) array written in place and transposed once at the end: writing
    # column i of an (n, T) array is a strided access (10x slower), and stacking columns afterwards
    # cost three temporaries per frame. The arithmetic and its order are unchanged:
    # E_i = ((decay·E_{i-1}) + wa·Cp_{i-1}) + wb·Cp_i, so the result is bit-identical to the stacked form.
    if xp is np and kep.dtype.kind != "f":
        kep = kep.astype(np.float64)  # integer rates: the result is real (as kep * 0.0 made it before)
    out = xp.empty((t.shape[0],) + tuple(kep.shape), dtype=kep.dtype) if xp is np else \
        xp.empty((t.shape[0],) + tuple(kep.shape), dtype=kep.dtype, device=kep.device)
    out[0] = 0.0
    per_voxel = getattr(cp, "ndim", 1) == 2
    if per_voxel:  # frames as contiguous rows, as the output
        cp = np.ascontiguousarray(cp.T) if xp is np else cp.T.contiguous()
    weights = {}  # per distinct frame interval (one for uniform sampling): computed once, not per frame
    for i in range(1, t.shape[0]):
        h = round(float(t[i] - t[i - 1]), 12)
        if h not in weights:
            if xp is np:
                weights[h] = (*_segment_weights(kep, h), np.exp(-kep * h))
            else:
                weights[h] = (*_torch_segment_weights(kep, h), xp.exp(-kep * h))
        wa, wb, decay = weights[h]
        row = out[i]
        xp.multiply(decay, out[i - 1], out=row)
        row += wa * (cp[i - 1] if per_voxel else float(cp[i - 1]))
        row += wb * (cp[i] if per_voxel else float(cp[i]))
    # one contiguous (n, T) copy (as np.stack made): callers reduce along frames, and a strided
    # view would change the summation order of those reductions (last-bit differences)
    return np.ascontiguousarray(out.T) if xp is np else out.T.contiguous()


def _torch_segment_weights(k, h):
    import torch

    x = k * h
    small = x < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    one_minus = -torch.expm1(-xs)
    wb = torch.where(small, h * (0.5 - x / 6.0), (h / xs) * (1.0 - one_minus / xs))
    wa = torch.where(small, h * (0.5 - x / 3.0), h * one_minus / xs - wb)
    return wa, wb


def model_curves(model: Model, cp: np.ndarray, t_min: np.ndarray, ktrans, kep, vp) -> np.ndarray:
    """Tissue curves (n, T) [mM] of the model for per-voxel parameters (1/min, fraction)."""
    model = Model(model)
    ktrans, kep, vp = (np.asarray(a, dtype=np.float64) for a in (ktrans, kep, vp))
    if model is Model.PATLAK:
        return vp[:, None] * cp + ktrans[:, None] * cumulative_integral(cp, t_min)
    out = ktrans[:, None] * exp_convolution(cp, t_min, kep)
    if model is Model.EXTENDED_TOFTS:
        out += vp[:, None] * cp
    return out


def shifted(cp: np.ndarray, t: np.ndarray, delay: float) -> np.ndarray:
    """The AIF arriving ``delay`` later (linear interpolation, zero before the first sample)."""
    return np.interp(t - delay, t, cp, left=0.0) if delay else np.asarray(cp, dtype=np.float64)


@dataclass
class PKFit:
    """Per-voxel parameters: ktrans, kep [1/min], ve, vp [fractions], delay [s], r2 (fit quality)."""

    ktrans: np.ndarray
    kep: np.ndarray
    ve: np.ndarray
    vp: np.ndarray
    delay: np.ndarray
    r2: np.ndarray
    fitted: np.ndarray  # (n, T) model curves [mM]


class PKModel:
    """A pharmacokinetic model bound to an AIF and a time grid; ``fit`` solves all voxels at once.

    aif: plasma Cp (T,) [mM]; times: (T,) seconds (need not be uniform); max_delay, delay_step: the
    bolus-delay grid in s; refine: Levenberg-Marquardt on the exact model after the linear fit.
    """

    def __init__(self, model: Model | str, aif: np.ndarray, times: np.ndarray, max_delay: float = 0.0,
                 delay_step: float = 1.0, refine: bool = False, refine_iterations: int = 15,
                 device: str = "cpu", chunk_voxels: int = 65536):
        self.model = Model(model)
        self.aif = np.asarray(aif, dtype=np.float64)
        self.times = np.asarray(times, dtype=np.float64)
        self.t_min = self.times / 60.0
        n_delays = int(np.floor(max_delay / delay_step + 1e-9)) + 1 if max_delay > 0 else 1
        self.delays = np.arange(n_delays) * delay_step
        self.refine = refine and self.model is not Model.PATLAK  # Patlak is linear: LS is already exact
        self.refine_iterations = refine_iterations
        self.device = device
        self.chunk_voxels = chunk_voxels

    def fit(self, curves: np.ndarray, progress=None) -> PKFit:
        n = curves.shape[0]
        parts = []
        for start in range(0, n, self.chunk_voxels):  # chunks bound the (n, T) temporaries
            parts.append(self._fit_chunk(np.asarray(curves[start:start + self.chunk_voxels], dtype=np.float64)))
            if progress is not None:
                progress(min(1.0, (start + self.chunk_voxels) / max(n, 1)))
        return PKFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in PKFit.__dataclass_fields__))

    # --- linear least squares over the delay grid ------------------------------------------------
    def _design(self, cp: np.ndarray):
        """The regressors shared by all voxels (k_shared, T); -∫Ct is added per voxel except for Patlak."""
        int_cp = cumulative_integral(cp, self.t_min)
        if self.model is Model.PATLAK:
            return np.stack([cp, int_cp])
        if self.model is Model.TOFTS:
            return np.stack([int_cp])
        return np.stack([int_cp, cp])

    def _linear(self, shared: np.ndarray, y_shared: np.ndarray, i_shared: np.ndarray, ss: dict):
        """Coefficients and residual sum of squares of every voxel for one AIF delay.

        shared: (s, T) regressors of this delay; y_shared = y @ shared.T and i_shared = ∫Ct @ shared.T,
        computed for all delays in one product by the caller (tall-skinny products dominate the cost)."""
        if self.model is Model.PATLAK:
            gram = shared @ shared.T
            coef = np.linalg.solve(gram + 1e-12 * np.trace(gram) * np.eye(2), y_shared.T).T  # (n, 2)
            sse = ss["yy"] - np.einsum("nk,nk->n", coef, y_shared)
            return coef, np.maximum(sse, 0.0)
        s = shared.shape[0]
        k = s + 1
        n = y_shared.shape[0]
        gram = np.empty((n, k, k))
        gram[:, :s, :s] = shared @ shared.T
        gram[:, :s, s] = -i_shared  # shared · (-∫Ct)
        gram[:, s, :s] = -i_shared
        gram[:, s, s] = ss["ii"]
        rhs = np.concatenate([y_shared, -ss["iy"][:, None]], axis=1)
        # the ridge goes on the diagonal in place: same values as gram + (1e-10·trace·I + 1e-30·I)
        # (off-diagonal terms added 0 exactly), without three (n, k, k) temporaries
        ridge = 1e-10 * np.trace(gram, axis1=1, axis2=2) * 1.0 + 1e-30
        diagonal = np.einsum("nii->ni", gram)  # a writable view of the diagonals
        diagonal += ridge[:, None]
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
        sse = ss["yy"] - np.einsum("nk,nk->n", coef, rhs)
        return coef, np.maximum(sse, 0.0)

    def _parameters(self, coef: np.ndarray):
        """Unconstrained (ktrans, kep, vp) from the linear coefficients, and which voxels leave the
        physical ranges (Ktrans, vp >= 0; 0 <= kep <= KEP_MAX; vp <= 1)."""
        zero = np.zeros(coef.shape[0])
        if self.model is Model.PATLAK:
            vp, ktrans, kep = coef[:, 0], coef[:, 1], zero
        elif self.model is Model.TOFTS:
            ktrans, kep, vp = coef[:, 0], coef[:, 1], zero
        else:
            b1, vp, kep = coef[:, 0], coef[:, 1], coef[:, 2]
            ktrans = b1 - kep * vp
        outside = (ktrans < 0) | (vp < 0) | (vp > 1) | (kep < 0) | (kep > KEP_MAX)
        return ktrans.copy(), kep.copy(), vp.copy(), outside

    def _on_the_boundary(self, y, cp, kep):
        """Least squares with kep fixed at its bound: Ct = Ktrans·E(kep) [+ vp·Cp] is linear in
        (Ktrans, vp); a negative one is set to 0 and the other refitted alone. Clipping the unconstrained
        solution instead keeps Ktrans = b1 - kep·vp from the wrong kep, which on noise-only voxels gave
        Ktrans 10-100 times the tumor's."""
        if self.model is Model.PATLAK:
            basis = [cumulative_integral(cp, self.t_min)[None].repeat(y.shape[0], 0)]
        else:
            basis = [exp_convolution(cp, self.t_min, kep)]
        if self.model is not Model.TOFTS:
            basis.append(np.broadcast_to(cp, y.shape))

        def single(b):
            return np.maximum(np.einsum("nt,nt->n", b, y) / np.maximum(np.einsum("nt,nt->n", b, b), 1e-30), 0.0)

        k_only = single(basis[0])
        if len(basis) == 1:
            return k_only, np.zeros(y.shape[0])
        e, c = basis
        g = np.stack([np.stack([np.einsum("nt,nt->n", e, e), np.einsum("nt,nt->n", e, c)], -1),
                      np.stack([np.einsum("nt,nt->n", e, c), np.einsum("nt,nt->n", c, c)], -1)], -2)
        rhs = np.stack([np.einsum("nt,nt->n", e, y), np.einsum("nt,nt->n", c, y)], -1)
        g = g + 1e-12 * np.trace(g, axis1=1, axis2=2)[:, None, None] * np.eye(2) + 1e-30 * np.eye(2)
        kt, v = np.linalg.solve(g, rhs[..., None])[..., 0].T
        v_only = single(c)
        kt, v = np.where(kt < 0, 0.0, kt), np.where(kt < 0, v_only, v)
        kt, v = np.where(v < 0, k_only, kt), np.where(v < 0, 0.0, v)
        return kt, np.clip(v, 0.0, 1.0)

    def _fit_chunk(self, y: np.ndarray) -> PKFit:
        int_ct = cumulative_integral(y, self.t_min)
        ss = {"yy": np.einsum("nt,nt->n", y, y), "ii": np.einsum("nt,nt->n", int_ct, int_ct),
              "iy": np.einsum("nt,nt->n", int_ct, y)}
        best_sse = np.full(y.shape[0], np.inf)
        best_coef = best_delay = None
        designs = [self._design(shifted(self.aif, self.times, d)) for d in self.delays]
        stacked = np.concatenate(designs)  # (n_delays·s, T): one product per voxel matrix for all delays
        y_all, i_all = y @ stacked.T, int_ct @ stacked.T
        for j, d in enumerate(self.delays):
            cols = slice(j * designs[0].shape[0], (j + 1) * designs[0].shape[0])
            coef, sse = self._linear(designs[j], y_all[:, cols], i_all[:, cols], ss)
            better = sse < best_sse
            if best_coef is None:
                best_coef, best_delay = coef, np.zeros(y.shape[0])
            best_coef[better] = coef[better]
            best_delay[better] = d
            best_sse[better] = sse[better]
        ktrans, kep, vp, outside = self._parameters(best_coef)
        kep = np.clip(kep, 0.0, KEP_MAX)
        fitted = np.empty_like(y)
        delays = np.unique(best_delay)
        aifs = {d: shifted(self.aif, self.times, d) for d in delays}
        for d in delays:  # boundary refit per delay of the grid (it needs the linear kep only)
            fix = (best_delay == d) & outside
            if fix.any():
                ktrans[fix], vp[fix] = self._on_the_boundary(y[fix], aifs[d], kep[fix])
        if self.refine:  # all delays in one batch, each voxel with its own AIF (fewer, larger array ops)
            cps = aifs[delays[0]] if delays.size == 1 else \
                np.stack([aifs[d] for d in delays])[np.searchsorted(delays, best_delay)]
            ktrans, kep, vp = self._refine(y, cps, ktrans, kep, vp)
        for d in delays:  # one forward model per delay of the grid
            rows = best_delay == d
            fitted[rows] = model_curves(self.model, aifs[d], self.t_min, ktrans[rows], kep[rows], vp[rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            ve = np.where(kep > 0, np.clip(ktrans / np.where(kep > 0, kep, 1.0), 0.0, 1.0),
                          np.where(ktrans > 0, 1.0, 0.0))
        if self.model is Model.PATLAK:
            ve = np.zeros_like(ktrans)  # no backflux: ve is not defined by Patlak
        resid = ((y - fitted) ** 2).sum(axis=1)
        total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        r2 = np.where(total > 0, 1.0 - resid / np.where(total > 0, total, 1.0), 0.0)
        return PKFit(ktrans, kep, ve, vp, best_delay, r2, fitted.astype(np.float32))

    # --- nonlinear refinement -----------------------------------------------------------------------
    def _refine(self, y, cp, ktrans, kep, vp):
        """Batched Levenberg-Marquardt on (Ktrans, kep[, vp]) with analytic derivatives; kep's
        derivative by a forward difference of the recursive convolution."""
        import torch

        from ..core.devices import resolve_device

        dev = resolve_device(self.device)
        tt = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=dev)  # noqa: E731
        Y, K, E, V = tt(y), tt(ktrans), tt(np.maximum(kep, 1e-4)), tt(vp)
        Cp = tt(cp)  # (T,), or (n, T) when the voxels have different delays
        source = Cp if cp.ndim == 2 else cp  # a shared AIF stays numpy: its samples enter as scalars
        t = self.t_min
        extended = self.model is Model.EXTENDED_TOFTS
        lam = torch.full_like(K, 1e-2)

        def forward(k, e, v):
            conv = exp_convolution(source, t, e, xp=torch)
            return k[:, None] * conv + (v[:, None] * Cp if extended else 0.0), conv

        pred, conv = forward(K, E, V)
        sse = ((Y - pred) ** 2).sum(1)
        for _ in range(self.refine_iterations):
            step = 1e-4 * torch.clamp(E, min=1e-2)
            conv2 = exp_convolution(source, t, E + step, xp=torch)
            cols = [conv, K[:, None] * (conv2 - conv) / step[:, None]]
            if extended:
                cols.append(Cp.expand_as(conv))
            J = torch.stack(cols, dim=2)  # (n, T, p)
            r = Y - pred
            JTJ = J.transpose(1, 2) @ J
            g = (J.transpose(1, 2) @ r[..., None])[..., 0]
            diag = torch.diagonal(JTJ, dim1=1, dim2=2)
            A = JTJ + torch.diag_embed(lam[:, None] * diag + 1e-12)
            delta = torch.linalg.solve(A, g[..., None])[..., 0]
            K2 = torch.clamp(K + delta[:, 0], min=0.0)
            E2 = torch.clamp(E + delta[:, 1], 1e-4, KEP_MAX)
            V2 = torch.clamp(V + delta[:, 2], 0.0, 1.0) if extended else V
            pred2, conv_new = forward(K2, E2, V2)
            sse2 = ((Y - pred2) ** 2).sum(1)
            ok = sse2 < sse
            K, E, V = torch.where(ok, K2, K), torch.where(ok, E2, E), torch.where(ok, V2, V)
            pred = torch.where(ok[:, None], pred2, pred)
            conv = torch.where(ok[:, None], conv_new, conv)
            sse = torch.where(ok, sse2, sse)
            lam = torch.where(ok, lam * 0.3, lam * 10.0).clamp(1e-8, 1e8)
        return K.cpu().numpy(), E.cpu().numpy(), V.cpu().numpy()
