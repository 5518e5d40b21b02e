"""Curve-level DCE forward model: plasma AIF, Tofts-family tissue curves, SPGR signal, noise.

This module is the *truth* the DCE pipeline is validated against, so it shares no code with the
fitting in :mod:`BBBAnomalyLib.dce.models`: tissue curves are computed on a fine time grid (default
0.05 s) by discrete convolution of the AIF, evaluated as a function of continuous time, with the
exponential residue integrated exactly over each fine bin; only then are they sampled at the frame
times. The fitting code, which assumes a piecewise-linear AIF on the frame grid and uses a recursive
exponential convolution, therefore does not get its own discretisation back by construction.

Units: time in seconds (the population AIF functions take minutes; converted here), Ktrans and kep
in 1/min, ve and vp as volume fractions, concentrations in mM, R1 in 1/s, relaxivity in 1/(s·mM),
TR in s, flip angle in degrees.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .dsc_physics import add_rician_noise  # noqa: F401  (re-exported: the same Rician noise model)

FINE_DT = 0.05  # [s]


def plasma_aif(kind: str = "parker", arrival: float = 30.0, hematocrit: float = 0.42) -> Callable:
    """Cp(t) [mM] for t in seconds: the population blood AIF (Parker 2006 or Georgiou 2019) shifted
    so that its curve starts at ``arrival`` s, divided by (1 - Hct) for plasma."""
    from ..perfusion.population_aif import georgiou_aif, parker_aif

    fn = {"parker": parker_aif, "georgiou": georgiou_aif}[kind]
    return lambda t_s: fn(np.asarray(t_s, dtype=np.float64) / 60.0, delay=arrival / 60.0) / (1.0 - hematocrit)


def tissue_concentration(times: np.ndarray, cp: Callable, ktrans, ve, vp, delay=0.0,
                         fine_dt: float = FINE_DT) -> np.ndarray:
    """Extended-Tofts tissue curves Ct(t) = vp·Cp(t - d) + Ktrans ∫ Cp(τ - d) e^{-kep (t - τ)} dτ.

    times: frame times [s]; cp: plasma AIF as a function of seconds; ktrans [1/min], ve, vp
    [fractions] and delay d [s] are arrays of one value per compartment (n,). Returns (n, T) [mM].
    Tofts is vp = 0; Patlak is the limit ve -> inf (pass ve = np.inf).
    """
    ktrans, ve, vp, delay = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (ktrans, ve, vp, delay))
    n = max(a.size for a in (ktrans, ve, vp, delay))
    ktrans, ve, vp, delay = (np.broadcast_to(a, (n,)) for a in (ktrans, ve, vp, delay))
    t_end = float(np.max(times)) + fine_dt
    fine = np.arange(0.0, t_end + fine_dt, fine_dt)
    out = np.zeros((n, np.size(times)))
    for i in range(n):  # a loop over compartments (a handful), not voxels
        cpi = cp(fine - delay[i])
        kep = ktrans[i] / ve[i] / 60.0 if np.isfinite(ve[i]) and ve[i] > 0 else 0.0  # [1/s]
        # exact integral of e^{-kep s} over each fine bin [j·dt, (j+1)·dt): no kernel sampling error
        edges = np.arange(fine.size + 1) * fine_dt
        if kep > 0:
            kernel = (np.exp(-kep * edges[:-1]) - np.exp(-kep * edges[1:])) / kep
        else:
            kernel = np.full(fine.size, fine_dt)
        # bin-centred convolution: Cp at the midpoint of each bin of the kernel
        cp_mid = 0.5 * (cpi + np.r_[cpi[1:], cpi[-1]])
        conv = np.convolve(cp_mid, kernel)[: fine.size]
        conv = np.r_[0.0, conv[:-1]]  # the integral up to fine[j] uses bins 0..j-1
        ct = vp[i] * cpi + (ktrans[i] / 60.0) * conv
        out[i] = np.interp(times, fine, ct)
    return out


def spgr_signal(m0, r1, flip_angle_deg: float, tr: float) -> np.ndarray:
    """Steady-state spoiled gradient echo: S = M0 sinα (1 - E1)/(1 - cosα E1), E1 = exp(-TR·R1).

    m0: (...) or scalar; r1 [1/s]: (..., T); tr [s]."""
    a = np.deg2rad(flip_angle_deg)
    r1 = np.asarray(r1)
    m0 = np.asarray(m0, dtype=r1.dtype if r1.dtype.kind == "f" else np.float64)
    if m0.ndim == r1.ndim - 1:
        m0 = m0[..., None]
    e1 = np.exp(-tr * r1)
    return m0 * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1)
