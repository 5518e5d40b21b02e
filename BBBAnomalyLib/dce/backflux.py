"""Is ve determined? The backflux of the extravascular space, against the noise of a voxel's fit.

Held apart from :mod:`.models` because it is a question asked of a finished fit (by :mod:`.pipeline` and
:mod:`.exchange` as well as :meth:`.models.PKModel.ve_backflux_snr`), not part of fitting: the norm of the part
of Ktrans·E(kep) outside span{Cp, ∫Cp} (:func:`backflux_norm`), over the fit's noise SD (:func:`backflux_snr`),
and the rule that turns it into the voxels whose ve the data determine (:func:`ve_determined`,
:data:`VE_MIN_BACKFLUX_SNR`).
"""

from __future__ import annotations

import numpy as np

from .kinetics import KEP_MAX, KEP_MIN, _exp_convolution_rows, cumulative_integral, shifted

#: ve (and kep = Ktrans/ve) reaches a curve only through the backflux of the extravascular space: the part of the
#: EES uptake Ktrans·E(kep) that neither an irreversible uptake (∝ ∫Cp: kep -> 0, the Patlak limit, ve -> infinity)
#: nor a plasma-like term (∝ Cp: kep -> infinity, fast exchange, ve indistinguishable from vp) can reproduce. Where
#: that part is smaller than this many noise standard deviations (the fit residual's, per frame, as a norm over the
#: frames), ve is not determined by the data (:func:`ve_determined`). Measured in round 17 on the DCE reference
#: object (12 slices, extended Tofts, artery AIF, true T10): 93-95 % of the brain is below it (GM/WM 94-98 %: intact
#: BBB; the 2-6 % left are what a 2-SD threshold passes by chance), the enhancing rim 0.1 % at SNR 50 (seed 0),
#: 1.7 % at SNR 40 and 7 % at SNR 20 (seed 101; ve errors 0.07-0.6 there, 0.012 above it), so the rim's median
#: |ve error| of docs/validation.md is unchanged (0.010 at SNR 40, 0.020 at SNR 20).
VE_MIN_BACKFLUX_SNR = 2.0


def _span_gram_inverses(table: np.ndarray, t_min: np.ndarray):
    """(D, 2, 2) inverses of the Gram matrices of {Cp, ∫Cp} of each AIF row of ``table`` (D, T), and ∫Cp (D, T)."""
    integral = cumulative_integral(table, t_min)
    gram = np.stack([np.stack([(table * table).sum(1), (table * integral).sum(1)], -1),
                     np.stack([(table * integral).sum(1), (integral * integral).sum(1)], -1)], -2)
    return np.linalg.pinv(gram), integral


def _perpendicular(ee, ec, ei, inverses, group):
    """E·E minus its projection onto span{Cp, ∫Cp} (the squared norm of E's part outside it), >= 0."""
    a = inverses[group]
    q = a[:, 0, 0] * ec * ec + 2.0 * a[:, 0, 1] * ec * ei + a[:, 1, 1] * ei * ei
    return np.maximum(ee - q, 0.0)


def backflux_norm(aif: np.ndarray, times: np.ndarray, delay: np.ndarray, ktrans: np.ndarray, kep: np.ndarray,
                  chunk: int = 16384, exact_aif=None) -> np.ndarray:
    """Ktrans·‖E(kep)⊥‖ per voxel: the norm over the frames of the part of the EES uptake curve Ktrans·E(kep)
    (E(kep) = ∫ Cp(τ) e^{-kep (t - τ)} dτ, Cp the AIF shifted by the voxel's delay [s]) outside span{Cp, ∫Cp}:
    the only part of a curve that carries ve (see :data:`VE_MIN_BACKFLUX_SNR`). Units of the curves.
    exact_aif: a population AIF evaluated at each delay (:class:`.population_placement.ExactPopulationAIF`)."""
    times = np.asarray(times, dtype=np.float64)
    t_min = times / 60.0
    delay = np.asarray(delay, dtype=np.float64)
    ktrans, kep = (np.asarray(a, dtype=np.float64) for a in (ktrans, kep))
    delays, group = np.unique(delay, return_inverse=True)
    at = (lambda d: shifted(aif, times, d)) if exact_aif is None else exact_aif.values
    table = np.stack([at(d) for d in delays]) if delays.size else np.zeros((0, times.size))
    inverses, integral = _span_gram_inverses(table, t_min)
    out = np.zeros(ktrans.shape[0])
    for g in range(delays.size):
        idx = np.flatnonzero(group == g)
        for start in range(0, idx.size, chunk):
            rows = idx[start:start + chunk]
            e = _exp_convolution_rows(table[g], t_min, kep[rows])  # (T, m)
            ee = np.einsum("tm,tm->m", e, e)
            ec, ei = table[g] @ e, integral[g] @ e
            out[rows] = ktrans[rows] * np.sqrt(_perpendicular(ee, ec, ei, inverses, np.full(rows.size, g)))
    return out


def backflux_snr(norm: np.ndarray, sse: np.ndarray, dof: int) -> np.ndarray:
    """``norm`` over the noise SD sqrt(SSE/dof) of each voxel's fit (inf where the fit is exact and norm > 0)."""
    sigma = np.sqrt(np.maximum(np.asarray(sse, dtype=np.float64), 0.0) / max(int(dof), 1))
    norm = np.asarray(norm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma > 0, norm / np.where(sigma > 0, sigma, 1.0), np.where(norm > 0, np.inf, 0.0))


def ve_determined(snr: np.ndarray, ve: np.ndarray, kep: np.ndarray | None = None,
                  ve_bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Voxels whose ve the data determine: the backflux stands >= VE_MIN_BACKFLUX_SNR noise SDs above noise
    (:func:`backflux_norm`) and the fit is not on a bound (ve strictly inside ``ve_bounds``; kep strictly inside
    (KEP_MIN, KEP_MAX) when given: kep = 0 is the Patlak limit, KEP_MAX fast exchange). Where Ktrans is ~0 ve is
    the size of a compartment nothing enters: the fit then leaves it at its bound (ve = 1 in most normal brain)."""
    ve = np.asarray(ve)
    ok = np.asarray(snr) >= VE_MIN_BACKFLUX_SNR  # (NaN: not determined)
    ok &= np.isfinite(ve) & (ve > ve_bounds[0]) & (ve < ve_bounds[1])
    if kep is not None:
        kep = np.asarray(kep)
        ok &= (kep > KEP_MIN) & (kep < KEP_MAX)
    return ok

