"""Curve-level DSC forward model: arterial input, residue functions, tissue curves, leakage, signal.

This module is the *truth* the DSC pipeline is validated against, so it deliberately shares no code
with the deconvolution: tissue curves are computed on a fine time grid (default 0.05 s) from an AIF
evaluated as a function of continuous time (analytically when a callable is given), with residue and
dispersion kernels integrated exactly over each fine bin, and only then sampled at the frame times.
A deconvolution that assumes a piecewise-linear AIF on the frame grid therefore does not get its own
discretisation back by construction.

Units: time in seconds, ΔR2* in 1/s, CBV as a *volume fraction* (ml/ml), MTT and delays in s,
dispersion time constant in s, BSW K2 in 1/s. The linear model ΔR2*(t) = k·C(t) is used for artery
and tissue alike with one relaxivity, so a curve in ΔR2* units is a concentration in "ΔR2* units"
and CBV = ∫C/∫Ca holds with kH/ρ = 1.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import fft as sfft
from scipy.integrate import cumulative_trapezoid
from scipy.interpolate import PchipInterpolator
from scipy.special import gammainc, gammaln

RESIDUES = ("exponential", "box", "lorentzian", "gamma")
GAMMA_RESIDUE_SHAPE = 3.0  # shape k of the gamma transit-time distribution behind the "gamma" residue


def gamma_shape(kind: str) -> float | None:
    """The transit-time shape k of a gamma residue name: "gamma" is k = 3 (the one the generators draw);
    "gamma<k>" (e.g. "gamma1.5", "gamma8", k >= 1) is any other, for checks on shapes nothing was trained on
    (k = 1 is the exponential, k -> infinity the box). None for the other families or an invalid name."""
    if kind == "gamma":
        return GAMMA_RESIDUE_SHAPE
    if isinstance(kind, str) and kind.startswith("gamma"):
        try:
            k = float(kind[5:])
        except ValueError:
            return None
        return k if np.isfinite(k) and k >= 1.0 else None
    return None


def is_residue(kind: str) -> bool:
    """A residue name :func:`residue` knows: one of RESIDUES or a "gamma<k>" shape."""
    return kind in RESIDUES or gamma_shape(kind) is not None


# --- arterial input ---------------------------------------------------------------------------
def _gamma_density(t: np.ndarray, exponent: float, scale: float) -> np.ndarray:
    """Unit-area gamma variate t^a e^{-t/b} / (b^{a+1} Γ(a+1)) for t > 0, 0 otherwise (log-space: no overflow)."""
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros_like(t)
    pos = t > 0
    tp = t[pos]
    out[pos] = np.exp(exponent * np.log(tp) - tp / scale - (exponent + 1.0) * np.log(scale) - gammaln(exponent + 1.0))
    return out


def gamma_variate_aif(
    times,
    arrival: float = 15.0,
    peak: float = 50.0,
    alpha: float = 3.0,
    beta: float = 1.5,
    recirculation_fraction: float = 0.2,
    recirculation_delay: float = 8.0,
    steady_state_fraction: float = 0.08,
) -> np.ndarray:
    """Arterial ΔR2*(t) [1/s] at `times` [s]: first pass + recirculation + steady-state tail.

    First pass: the gamma variate (t - arrival)^alpha exp(-(t - arrival)/beta) with alpha = 3.0 and
    beta = 1.5 s, the AIF of the classic DSC deconvolution simulations (Østergaard et al., MRM 1996;
    36:715-725, reused by Calamante 2000 and Wu 2003); it peaks alpha·beta = 4.5 s after arrival and
    is scaled so that this peak equals `peak` [1/s].
    Recirculation: following Horsfield's circulation model as used for the Georgiou et al. population
    AIF (MRM 2019;81:1955-1963), the second pass is the first pass convolved with itself: a gamma variate
    of exponent 2·alpha + 1 and the same beta, i.e. delayed, dispersed and lower, starting
    `recirculation_delay` s after arrival (Georgiou's recirculation period is 0.129 min = 7.7 s) and
    carrying `recirculation_fraction` of the first-pass area (default 0.2: its peak is ~13 % of the first).
    Steady state: `steady_state_fraction`·peak reached smoothly as the recirculation passes (the
    gamma CDF of the second pass), modelling the well-mixed plateau (Parker/Georgiou AIFs: ~10 % of the
    peak after 1 min); whole-body clearance (half-life ~1.5 h) is negligible within a DSC scan.
    Because the recirculation starts after the first-pass peak when recirculation_delay > alpha·beta,
    `peak` is the global maximum of the curve. Exactly 0 before `arrival`, so pre-bolus frames are clean.
    Works element-wise on arrays of any shape, so it can be evaluated on a fine grid or per delay.
    """
    t = np.asarray(times, dtype=np.float64) - arrival
    first_peak = _gamma_density(np.array([alpha * beta]), alpha, beta)[0]
    area = peak / first_peak  # area of the first pass [1/s · s]
    first = area * _gamma_density(t, alpha, beta)
    tr = t - recirculation_delay
    second_exp = 2.0 * alpha + 1.0
    second = recirculation_fraction * area * _gamma_density(tr, second_exp, beta)
    tail = steady_state_fraction * peak * gammainc(second_exp + 1.0, np.maximum(tr, 0.0) / beta)
    return first + second + tail


# --- residue functions ------------------------------------------------------------------------
def residue(kind: str, t, mtt) -> np.ndarray:
    """Residue function R(t) (R(0) = 1, non-increasing, ∫_0^∞ R = MTT) for t >= 0 [s], MTT [s].

    exponential: exp(-t/MTT) (one well-mixed compartment); box: 1 for t < MTT (plug flow);
    lorentzian: 1/(1 + (πt/(2·MTT))^2) (the PHAE decoder's residue; heavy tail);
    gamma: 1 - CDF of a gamma transit-time distribution with shape 3 and mean MTT (flat start, a
    capillary-bed-like shape); gamma<k>: the same with shape k (:func:`gamma_shape`). Broadcasts t against
    mtt; R = 0 for t < 0.
    """
    t = np.asarray(t, dtype=np.float64)
    mtt = np.asarray(mtt, dtype=np.float64)
    tp = np.maximum(t, 0.0)
    if kind == "exponential":
        r = np.exp(-tp / mtt)
    elif kind == "box":
        r = (tp < mtt).astype(np.float64)
    elif kind == "lorentzian":
        r = 1.0 / (1.0 + (np.pi * tp / (2.0 * mtt)) ** 2)
    elif gamma_shape(kind) is not None:
        k = gamma_shape(kind)
        r = 1.0 - gammainc(k, tp * k / mtt)
    else:
        raise ValueError(f"unknown residue {kind!r}; choose one of {RESIDUES} or gamma<k>")
    return np.where(t >= 0, r, 0.0)


def residue_integral(kind: str, t, mtt) -> np.ndarray:
    """∫_0^t R(s) ds in closed form (→ MTT as t → ∞); used to bin the kernel exactly on the fine grid."""
    tp = np.maximum(np.asarray(t, dtype=np.float64), 0.0)
    mtt = np.asarray(mtt, dtype=np.float64)
    if kind == "exponential":
        return mtt * -np.expm1(-tp / mtt)
    if kind == "box":
        return np.minimum(tp, mtt)
    if kind == "lorentzian":
        return (2.0 * mtt / np.pi) * np.arctan(np.pi * tp / (2.0 * mtt))
    if gamma_shape(kind) is not None:
        k = gamma_shape(kind)
        x = tp * k / mtt
        return tp * (1.0 - gammainc(k, x)) + mtt * gammainc(k + 1.0, x)
    raise ValueError(f"unknown residue {kind!r}; choose one of {RESIDUES} or gamma<k>")


# --- tissue curves ----------------------------------------------------------------------------
def _bin_weights(cumulative: Callable[[np.ndarray], np.ndarray], n: int, dt: float) -> np.ndarray:
    """Mass of a kernel in the fine bins [(m-½)dt, (m+½)dt] ∩ [0, ∞), m = 0..n-1 (midpoint-rule weights)."""
    edges = (np.arange(n + 1) - 0.5) * dt
    c = cumulative(np.maximum(edges, 0.0))
    return np.diff(c, axis=-1)


def _aif_on_grid(aif, times: np.ndarray, t_fine: np.ndarray, delays: np.ndarray) -> np.ndarray:
    """Ca(t - delay) on the fine grid, shape (n_delays, n_fine). Callables are evaluated exactly;
    sampled AIFs are PCHIP-interpolated (shape-preserving, no overshoot) and held constant outside."""
    tt = t_fine[None, :] - delays[:, None]
    if callable(aif):
        return np.asarray(aif(tt), dtype=np.float64)
    a = np.asarray(aif, dtype=np.float64).ravel()
    if a.size != times.size:
        raise ValueError(f"a sampled AIF needs one value per frame time: {a.size} values for {times.size} times")
    return PchipInterpolator(times, a, extrapolate=False)(np.clip(tt, times[0], times[-1]))


def tissue_concentration(
    times,
    aif,
    cbv,
    mtt,
    delay=0.0,
    dispersion=0.0,
    residue: str = "exponential",
    fine_dt: float = 0.05,
    dtype=np.float64,
    chunk: int = 256,
) -> np.ndarray:
    """Tissue ΔR2*/concentration curves C = CBF·(Ca_delayed,dispersed ⊛ R), shape (n_voxels, n_times).

    times: (n_times,) frame times [s]. aif: a callable of continuous time [s] (preferred: evaluated
    exactly on the fine grid) or an array sampled at `times` (PCHIP-interpolated). cbv: blood volume
    *fraction* (ml/ml, e.g. 0.04 for 4 ml/100 ml). mtt [s]; CBF = CBV/MTT [1/s]. MTT = 0 means a purely
    intravascular voxel, C = CBV·Ca (an artery with cbv = 1 gives back the AIF). delay [s]: the tissue
    sees Ca(t - delay). dispersion [s]: time constant β of the vascular transport kernel exp(-t/β)/β
    (area 1, so ∫C is unchanged); 0 = none. All four broadcast to one voxel axis.

    Computed on a fine grid (`fine_dt`, from min(0, times[0]) to times[-1]; no tracer before its start)
    with the residue and dispersion kernels binned exactly, convolved by batched FFT, then linearly
    interpolated at `times`. Only unique (mtt, delay, dispersion) triples are convolved — a
    piecewise-constant phantom has a handful — in chunks of `chunk` to bound memory; voxels then
    differ only by their CBV scale factor.
    """
    if not is_residue(residue):
        raise ValueError(f"unknown residue {residue!r}; choose one of {RESIDUES} or gamma<k>")
    times = np.asarray(times, dtype=np.float64).ravel()
    cbv, mtt, delay, dispersion = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (cbv, mtt, delay, dispersion))
    )
    if cbv.ndim != 1:
        cbv, mtt, delay, dispersion = (v.ravel() for v in (cbv, mtt, delay, dispersion))
    if np.any(cbv > 1.0) or np.any(cbv < 0):
        raise ValueError("cbv is a blood volume fraction in [0, 1] (ml/ml); divide ml/100 ml by 100")
    if np.any(mtt < 0) or np.any(dispersion < 0):
        raise ValueError("mtt and dispersion must be >= 0 s")

    t0 = min(0.0, times[0])
    n_fine = int(np.ceil((times[-1] - t0) / fine_dt)) + 2
    t_fine = t0 + fine_dt * np.arange(n_fine)
    n_fft = sfft.next_fast_len(2 * n_fine, real=True)
    # linear interpolation of the fine curves at the frame times: same indices/weights for every curve
    pos = (times - t0) / fine_dt
    i0 = np.clip(np.floor(pos).astype(int), 0, n_fine - 2)
    w1 = pos - i0

    uniq, inverse = _unique_rows(mtt, delay, dispersion)
    unit = np.empty((uniq.shape[0], times.size), dtype=np.float64)  # curve per unit CBV
    for start in range(0, uniq.shape[0], chunk):
        u = uniq[start:start + chunk]
        u_mtt, u_delay, u_disp = u[:, 0], u[:, 1], u[:, 2]
        ca = _aif_on_grid(aif, times, t_fine, u_delay)  # (g, n_fine)
        spec = sfft.rfft(ca, n_fft, axis=1)
        has_disp = u_disp > 0
        if has_disp.any():
            beta = u_disp[has_disp][:, None]
            kern = _bin_weights(lambda e: -np.expm1(-e / beta), n_fine, fine_dt)
            spec[has_disp] *= sfft.rfft(kern, n_fft, axis=1)
        flow = u_mtt > 0
        if flow.any():
            m = u_mtt[flow][:, None]
            kern = _bin_weights(lambda e: residue_integral(residue, e, m), n_fine, fine_dt) / m
            spec[flow] *= sfft.rfft(kern, n_fft, axis=1)
        fine = sfft.irfft(spec, n_fft, axis=1)[:, :n_fine]
        # causality: nothing before the delayed AIF starts (removes FFT round-off from pre-bolus frames)
        started = ca != 0
        first = np.where(started.any(axis=1), started.argmax(axis=1), n_fine)
        fine[np.arange(n_fine)[None, :] < first[:, None]] = 0.0
        unit[start:start + chunk] = fine[:, i0] * (1.0 - w1) + fine[:, i0 + 1] * w1
    out = np.take(unit.astype(dtype, copy=False), inverse, axis=0)
    out *= cbv[:, None].astype(dtype)
    return out


def _unique_rows(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique parameter tuples and the index of each voxel's tuple; per-column 1D uniques combined
    into one integer code (much faster than np.unique(axis=0) on 10^5-10^6 rows)."""
    code = np.zeros(columns[0].shape, dtype=np.int64)
    values = []
    for col in columns:
        u, inv = np.unique(col, return_inverse=True)
        code = code * u.size + inv.ravel()
        values.append(u)
    ucode, inverse = np.unique(code, return_inverse=True)
    rows = np.empty((ucode.size, len(columns)), dtype=np.float64)
    for j in range(len(columns) - 1, -1, -1):
        rows[:, j] = values[j][ucode % values[j].size]
        ucode = ucode // values[j].size
    return rows, inverse.ravel()


# --- leakage, signal and noise ----------------------------------------------------------------
def bsw_leakage(times, reference_curve, k2) -> np.ndarray:
    """Boxerman–Schmainda–Weisskoff leakage term  -K2·∫_0^t reference  [1/s] (cumulative trapezoid).

    reference_curve: ΔR2* [1/s] of non-leaky tissue at `times` [s], (n_times,) or (n_voxels, n_times);
    k2 [1/s], scalar or (n_voxels,). K2 > 0 is T1-dominant leakage: ΔR2* goes down (the signal goes up),
    so an uncorrected CBV is too low; K2 < 0 is T2*-dominant leakage (Boxerman et al., AJNR 2006).
    This is exactly the linear model the BSW correction fits, so with the same reference the truth K2
    is recoverable.
    """
    times = np.asarray(times, dtype=np.float64)
    ref = np.asarray(reference_curve, dtype=np.float64)
    cum = cumulative_trapezoid(ref, times, axis=-1, initial=0.0)
    k2 = np.asarray(k2, dtype=np.float64)
    if k2.ndim == 0:
        return -k2 * cum
    return -k2[:, None] * cum


def signal_from_delta_r2s(s0, delta_r2s, te: float) -> np.ndarray:
    """Gradient-echo signal S = S0·exp(-TE·ΔR2*), TE [s], ΔR2* [1/s] (..., n_times); S0 (...) or scalar."""
    d = np.asarray(delta_r2s)
    s0 = np.asarray(s0, dtype=d.dtype if d.dtype.kind == "f" else np.float64)
    if s0.ndim == d.ndim - 1:
        s0 = s0[..., None]
    return s0 * np.exp(-te * d)


def add_rician_noise(signal, sigma: float, rng=None) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation `sigma` per channel.

    rng: a numpy Generator or a seed. Draws in the signal's float dtype (float32 stays float32), real
    part first then imaginary, so results are reproducible for a given generator state.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    s = np.asarray(signal)
    dt = s.dtype if s.dtype in (np.float32, np.float64) else np.float64
    re = rng.standard_normal(s.shape, dtype=dt)
    re *= sigma
    re += s
    im = rng.standard_normal(s.shape, dtype=dt)
    im *= sigma
    return np.hypot(re, im)
