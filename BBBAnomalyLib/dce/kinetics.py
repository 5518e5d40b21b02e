"""The tracer-kinetic arithmetic under :class:`.models.PKModel` (and :mod:`.exchange`): exact, vectorised kernels.

Held apart from :mod:`.models` because these are the model equations and their numerics, usable and testable alone,
while :mod:`.models` is the fit (chunks, delay grid, linear solve, refinement loop, PKFit). Here: the cumulative
trapezoid, the recursive exponential convolution E(kep) of a piecewise-linear AIF (numpy or torch) with its segment
weights and their exact derivatives by kep, the one-pass Levenberg-Marquardt sums over the frames (torch), the
element-wise 2x2/3x3 SPD solves, the model curves and the delayed AIF; and the kep range the fits use.

Units: time in minutes (Ktrans, kep in 1/min).
"""

from __future__ import annotations

import numpy as np

from .parameters import Model

KEP_MAX = 10.0  # [1/min]; faster exchange is indistinguishable from vp at clinical frame rates
KEP_MIN = 1e-4  # [1/min]; the refinement's lower bound (kep = 0 is the Patlak limit)


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
    """E(t_i) = ∫_0^{t_i} Cp(τ) e^{-kep (t_i - τ)} dτ for each kep (n,), Cp piecewise linear on t: (n, T).

    Recursive: E_i = e^{-kep h} E_{i-1} + wa·Cp_{i-1} + wb·Cp_i — a loop over frames, every voxel at
    once (numpy or torch arrays through ``xp``). ``cp`` is one AIF (T,) shared by all voxels, or one
    per voxel (n, T)."""
    out = _exp_convolution_rows(cp, t, kep, xp)
    # one contiguous (n, T) copy (as np.stack made): callers reduce along frames, and a strided
    # view would change the summation order of those reductions (last-bit differences)
    return np.ascontiguousarray(out.T) if xp is np else out.T.contiguous()


def _exp_convolution_rows(cp, t, kep, xp=np):
    """``exp_convolution`` with frames as rows: (T, n)."""
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
    return out




def _f_moment(x, m, terms=8):
    """f_m(x) = ∫_0^1 v^m e^{-x v} dv by its series Σ_j (-x)^j / (j! (m + j + 1)) (small x: no cancellation)."""
    out = np.zeros_like(x)
    term = np.ones_like(x)
    factorial = 1.0
    for j in range(terms):
        out += term / (factorial * (m + j + 1))
        term = term * -x
        factorial *= j + 1
    return out


def _segment_derivatives(k, h):
    """(d wa/dk, d wb/dk) of ``_segment_weights``: -h²·f2(x) and -h²·(f1(x) - f2(x)), x = k·h, with
    f_m(x) = ∫_0^1 v^m e^{-x v} dv (closed form above x = 0.05, where its cancellation costs < 1e-10
    relative in float64; the series below, truncated after 8 terms: < 1e-14 relative)."""
    x = k * h
    small = x < 0.05
    xs = np.where(small, 1.0, x)
    e = np.exp(-xs)
    f1 = np.where(small, _f_moment(x, 1), (1.0 - e * (1.0 + xs)) / (xs * xs))
    f2 = np.where(small, _f_moment(x, 2), (2.0 - e * (xs * xs + 2.0 * xs + 2.0)) / (xs * xs * xs))
    return -h * h * f2, -h * h * (f1 - f2)


def _solve3_spd(a00, a01, a02, a11, a12, a22, b0, b1, b2):
    """x = A⁻¹b for many symmetric positive definite 3x3 systems at once (arrays of any equal shape):
    LDLᵀ elimination written out element-wise (no pivoting: A is SPD). Works on numpy and torch."""
    l10 = a01 / a00
    l20 = a02 / a00
    d1 = a11 - l10 * a01
    u12 = a12 - l20 * a01
    l21 = u12 / d1
    d2 = a22 - l20 * a02 - l21 * u12
    z1 = b1 - l10 * b0
    z2 = (b2 - l20 * b0 - l21 * z1) / d2
    x1 = z1 / d1 - l21 * z2
    x0 = b0 / a00 - l10 * x1 - l20 * z2
    return x0, x1, z2


def _solve2_spd(a00, a01, a11, b0, b1):
    l10 = a01 / a00
    d1 = a11 - l10 * a01
    x1 = (b1 - l10 * b0) / d1
    return b0 / a00 - l10 * x1, x1


def _lm_sums(Y, table_t, group, k, e, v, steps, extended):
    """One pass over the frames at (Ktrans k, kep e, vp v) (float64 (m,) tensors): the sums over
    frames (9, m) float64 of r·r, E·E, E·∂E, E·Cp, ∂E·∂E, ∂E·Cp, E·r, ∂E·r and Cp·r, r the residual,
    E(kep) the recursive convolution and ∂E its exact derivative by kep (the recursion differentiated:
    ∂E_i = decay·∂E_{i-1} - h·decay·E_{i-1} + wa'·Cp_{i-1} + wb'·Cp_i). Y: (T, m) curves, frames as
    rows, in the working precision; table_t: (T, D) the AIFs, group: (m,) each voxel's column of it
    (gathered frame by frame: no (T, m) copy of the AIFs); steps: the T-1 frame intervals [min]."""
    import torch

    dev, f32, f64 = Y.device, Y.dtype, torch.float64
    n_frames = Y.shape[0]
    m = Y.shape[1]
    weights = {}
    kep64 = e.cpu().numpy()
    for h in set(steps):  # per distinct frame interval: the segment weights, their derivatives, decay
        wa, wb = _segment_weights(kep64, h)
        dwa, dwb = _segment_derivatives(kep64, h)
        decay = np.exp(-kep64 * h)
        weights[h] = [torch.as_tensor(w, dtype=f32, device=dev) for w in (wa, wb, dwa, dwb, decay, h * decay)]
    k32, v32 = k.to(f32), v.to(f32)
    sums = torch.zeros((9, m), dtype=f32, device=dev)
    rr, ee, ed, ec, dd, dc, er, dr, cr = sums
    conv = torch.zeros((2, m), dtype=f32, device=dev)  # E of the previous and the current frame
    deriv = torch.zeros((2, m), dtype=f32, device=dev)
    r = torch.empty(m, dtype=f32, device=dev)
    aif = torch.empty((2, m), dtype=f32, device=dev)  # each voxel's AIF at the previous and the current frame
    torch.index_select(table_t[0], 0, group, out=aif[0])
    if extended:  # frame 0: E = ∂E = 0, r = y - vp·Cp
        torch.addcmul(Y[0], v32, aif[0], value=-1.0, out=r)
        rr.addcmul_(r, r)
        cr.addcmul_(aif[0], r)
    else:
        rr.addcmul_(Y[0], Y[0])
    for i in range(1, n_frames):
        wa, wb, dwa, dwb, decay, h_decay = weights[steps[i - 1]]
        prev, cur = conv[(i - 1) % 2], conv[i % 2]
        dprev, dcur = deriv[(i - 1) % 2], deriv[i % 2]
        c0, c1 = aif[(i - 1) % 2], aif[i % 2]
        torch.index_select(table_t[i], 0, group, out=c1)
        torch.mul(decay, dprev, out=dcur)  # ∂E_i = decay·∂E_{i-1} - h·decay·E_{i-1} + wa'·c0 + wb'·c1
        dcur.addcmul_(h_decay, prev, value=-1.0)
        dcur.addcmul_(dwa, c0)
        dcur.addcmul_(dwb, c1)
        torch.mul(decay, prev, out=cur)  # E_i = decay·E_{i-1} + wa·c0 + wb·c1
        cur.addcmul_(wa, c0)
        cur.addcmul_(wb, c1)
        torch.addcmul(Y[i], k32, cur, value=-1.0, out=r)
        if extended:
            r.addcmul_(v32, c1, value=-1.0)
            ec.addcmul_(cur, c1)
            dc.addcmul_(dcur, c1)
            cr.addcmul_(c1, r)
        rr.addcmul_(r, r)
        ee.addcmul_(cur, cur)
        ed.addcmul_(cur, dcur)
        dd.addcmul_(dcur, dcur)
        er.addcmul_(cur, r)
        dr.addcmul_(dcur, r)
    return sums.to(f64)


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

