"""The DSC reference object acquired after a preload: a first dose (or the DCE series' dose) minutes before the bolus.

Why: the consensus DSC protocol for brain tumours (Boxerman et al., Neuro-Oncology 2020;22:1262-1275) gives a
preload of contrast several minutes before the DSC bolus, and many clinics run the DCE series first so that its dose
is the preload. Such a series starts with gadolinium already in the blood and, in the leaky rim, in the extravascular
space; the T1 of the rim is already short, so the second bolus's T1 leakage effect is smaller. Nothing else in the
project simulates it (docs/validation.md, "Not simulated"). :func:`make_preloaded_dsc_phantom` adds it to
:func:`.dsc.make_dsc_phantom`'s object, which it leaves untouched: with ``dose_fraction`` 0 the series is that
object's, bit for bit (noise included).

What the preload adds, in the object's ΔR2* units (one relaxivity for artery and tissue, as :mod:`.dsc_physics`):

* blood: the same bolus scaled by ``dose_fraction``, arriving ``interval_min`` before the DSC bolus, whose plateau
  washes out after its first minute as the Weinmann bi-exponential plasma curve (Weinmann et al. 1984, in Tofts &
  Kermode, MRM 1991;17:357; ``perfusion.population_aif.WEINMANN_1984``); every compartment sees it through its own
  residue (:func:`.dsc_physics.tissue_concentration`), the artery as is. The DSC bolus's own plateau stays flat, as
  in the ordinary object.
* the rim's (and, at a tenth, the core's) extravascular gadolinium: a Tofts exchange, its exposure
  E(t) = ∫ ref(τ) e^{-kep (t-τ)} dτ of the preload's non-tumour brain-mean curve ref (the BSW reference, as the
  ordinary object's leakage term -K2·∫ref uses for the DSC bolus, where kep = 0). It enters twice:
  - T2*: +K2_T2*·E, a susceptibility effect of the extravascular agent (signal down);
  - T1: -K2_T1·h(E), h the spoiled-gradient-echo T1 signal change of ΔR1 = κE, normalised to slope 1 at E = 0
    (flip ``flip_deg``, TR the frame interval, rim T1 ``t1_rim_s``; κ from ``ktrans_per_min``, r1 ``r1`` and the
    object's arterial plateau read as Weinmann's plasma concentration 1 min after injection).
  The object's net K2 (``leakage``) is split K2 = K2_T1 - K2_T2* with K2_T2* = ``t2s_share``·K2_T1, and the DSC
  bolus's own T1 term becomes -K2_T1·h'(E_pre(t))·∫ref: the T1 sensitivity the preload has left (h' = 1 without
  one; about 0.2 after a full dose 5 min before at the defaults), so the leakage of the second bolus turns
  T2*-dominant where the preload has shortened T1 far enough, the reason the preload is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid
from scipy.signal import lfilter

from ..perfusion.population_aif import WEINMANN_1984, _biexponential
from . import dsc_physics as phys
from .anatomy import load_anatomy
from .dsc import (_CHUNK, COMPARTMENTS, CORE_LEAKAGE_FRACTION, S0_WM, DSCPhantom, DSCPhantomParameters,
                  _artery_mask, _slab, _tissue_table, _tumor_fractions, make_dsc_phantom)

#: The object's arterial plateau (steady-state fraction x peak) is read as Weinmann's plasma concentration this many
#: minutes after the injection: the conversion from the object's ΔR2* units to mM for the rim's ΔR1.
PLATEAU_MINUTES = 1.0
FINE_STEP = 0.25  # s, the grid the preload's curves and the Tofts exposure are computed on


@dataclass
class Preload:
    """The preload and the rim's T1 physics. Times in minutes where named so, else seconds.

    dose_fraction: the preload's dose over the DSC bolus's (1: a full dose, as a DCE series' dose; 0.25: a quarter).
    interval_min: preload arrival to the DSC bolus arrival (DCE-first protocols: about 5-7 min).
    ktrans_per_min, kep_per_min: the enhancing rim's Tofts exchange (typical enhancing high-grade glioma: Ktrans
    0.05-0.15 /min, ve 0.2-0.4); the core's Ktrans is CORE_LEAKAGE_FRACTION of it (the object's K2 split).
    r1: longitudinal relaxivity [1/(mM s)] (gadobutrol/gadoterate about 3.5-5 at 1.5-3 T).
    t1_rim_s: the rim's native T1 (glioma at 3 T about 1.5-2 s). flip_deg: the consensus 60° with a preload.
    t2s_share: K2_T2*/K2_T1, how much of the extravascular agent's T1 effect its susceptibility effect cancels."""

    dose_fraction: float = 1.0
    interval_min: float = 5.0
    ktrans_per_min: float = 0.1
    kep_per_min: float = 0.33
    r1: float = 4.0
    t1_rim_s: float = 1.6
    flip_deg: float = 60.0
    t2s_share: float = 0.5

    def check(self) -> None:
        if self.dose_fraction < 0 or self.interval_min <= 0 or self.kep_per_min < 0 or self.ktrans_per_min < 0:
            raise ValueError("need dose_fraction >= 0, interval_min > 0, ktrans and kep >= 0")
        if not 0 <= self.t2s_share < 1 or not 0 < self.flip_deg < 180 or self.t1_rim_s <= 0:
            raise ValueError("need 0 <= t2s_share < 1, 0 < flip_deg < 180 and t1_rim_s > 0")


def washout(minutes_after: np.ndarray) -> np.ndarray:
    """The plateau's share left ``minutes_after`` the injection: Weinmann's Cp relative to its value at
    :data:`PLATEAU_MINUTES` (1 before then: the object's plateau forms during the first minute)."""
    u = np.maximum(np.asarray(minutes_after, dtype=np.float64), PLATEAU_MINUTES)
    return _biexponential(u, WEINMANN_1984) / _biexponential(np.array(PLATEAU_MINUTES), WEINMANN_1984)


def preload_blood(p: DSCPhantomParameters, preload: Preload):
    """The preload's arterial ΔR2* [1/s] as a callable of the time since the preload's arrival - p.bolus_arrival:
    the object's bolus (first pass, recirculation, plateau) scaled by the dose, its plateau washing out."""
    fraction = dsc_default_steady_state()

    def blood(t):
        t = np.asarray(t, dtype=np.float64)
        passes = phys.gamma_variate_aif(t, arrival=p.bolus_arrival, peak=p.aif_peak, steady_state_fraction=0.0)
        plateau = phys.gamma_variate_aif(t, arrival=p.bolus_arrival, peak=p.aif_peak,
                                         steady_state_fraction=fraction) - passes
        return preload.dose_fraction * (passes + plateau * washout((t - p.bolus_arrival) / 60.0))
    return blood


def dsc_default_steady_state() -> float:
    """gamma_variate_aif's default plateau fraction (what the ordinary object uses)."""
    import inspect

    return float(inspect.signature(phys.gamma_variate_aif).parameters["steady_state_fraction"].default)


def t1_signal_log(r1_per_s: np.ndarray, tr: float, flip_deg: float) -> np.ndarray:
    """ln of the spoiled gradient-echo T1 factor (1 - E1)/(1 - cos α E1), E1 = exp(-TR R1)."""
    e1 = np.exp(-tr * np.asarray(r1_per_s, dtype=np.float64))
    return np.log1p(-e1) - np.log1p(-np.cos(np.radians(flip_deg)) * e1)


def t1_signal_log_slope(r1_per_s: np.ndarray, tr: float, flip_deg: float) -> np.ndarray:
    """d/dR1 of :func:`t1_signal_log`: TR E1 (1/(1 - E1) - cos α/(1 - cos α E1))."""
    e1 = np.exp(-tr * np.asarray(r1_per_s, dtype=np.float64))
    c = np.cos(np.radians(flip_deg))
    return tr * e1 * (1.0 / (1.0 - e1) - c / (1.0 - c * e1))


def t1_response(exposure: np.ndarray, kappa: float, r1_native: float, tr: float, flip_deg: float):
    """(h(E), h'(E)): the T1 signal change of ΔR1 = κE in units of its slope at E = 0 (h ≈ E for small κE)."""
    e = np.asarray(exposure, dtype=np.float64)
    if kappa == 0:
        return e.copy(), np.ones_like(e)
    slope0 = t1_signal_log_slope(r1_native, tr, flip_deg)
    h = (t1_signal_log(r1_native + kappa * e, tr, flip_deg) - t1_signal_log(r1_native, tr, flip_deg)) / (kappa * slope0)
    return h, t1_signal_log_slope(r1_native + kappa * e, tr, flip_deg) / slope0


def tofts_exposure(times: np.ndarray, reference: np.ndarray, kep_per_s: float) -> np.ndarray:
    """E(t) = ∫_0^t ref(τ) e^{-kep (t - τ)} dτ on a uniform grid (ref piecewise linear; exact for kep = 0)."""
    dt = float(times[1] - times[0])
    decay = np.exp(-kep_per_s * dt)
    increments = 0.5 * dt * (reference[1:] + reference[:-1])  # each step's inflow, decayed from its midpoint
    return np.r_[0.0, lfilter([np.sqrt(decay)], [1.0, -decay], increments)]


def make_preloaded_dsc_phantom(preload: Preload | None = None, params: DSCPhantomParameters | None = None,
                               **overrides) -> DSCPhantom:
    """The DSC object (``params`` + ``overrides``, as :func:`.dsc.make_dsc_phantom`) acquired after ``preload``.
    Truth maps and masks are the ordinary object's (the preload changes no perfusion); the phantom's
    ``signal.acquisition.extra["preload"]`` records the preload and ``leakage_reference`` stays the DSC bolus's."""
    clean, p, idx, terms = preload_terms(preload, params, **overrides)
    extra = None if terms is None else sum(terms.values())
    dtype = np.dtype(p.dtype)
    sigma = None if p.snr is None or not np.isfinite(p.snr) else S0_WM / p.snr
    rng = np.random.default_rng(p.seed)  # the ordinary object's noise stream, drawn in its chunks
    flat = clean.signal.data.reshape(-1, clean.times.size)
    for start in range(0, idx.size, _CHUNK):
        c = slice(start, start + _CHUNK)
        sig = flat[idx[c]]
        if extra is not None:
            sig = sig * np.exp(-p.te * extra[c]).astype(dtype)
        flat[idx[c]] = sig if sigma is None else phys.add_rician_noise(sig, sigma, rng)
    acq = clean.signal.acquisition
    acq.extra = {**(acq.extra or {}), "snr": p.snr, "preload": dataclasses.asdict(preload or Preload())}
    clean.params = p
    return clean


def preload_terms(preload: Preload | None = None, params: DSCPhantomParameters | None = None, **overrides):
    """(the noiseless ordinary object, its parameters, the brain voxels' flat indices, the preload's ΔR2* terms):
    "blood" (intravascular, artery included), "preload_leakage" (the preload's extravascular T1 and T2* terms) and
    "bolus_t1_left" (the DSC bolus's T1 term less the ordinary object's), each (n_brain_voxels, n_frames) [1/s] in
    the order of the indices; None without a preload. Their sum is what the preloaded series adds."""
    preload = preload or Preload()
    preload.check()
    p = dataclasses.replace(params or DSCPhantomParameters(), **overrides)
    clean = make_dsc_phantom(p, snr=None)
    anat = load_anatomy()
    k0, k1 = _slab(anat.shape, anat.affine, p)
    brain = np.array(anat.brain[:, :, k0:k1])
    # the ordinary object's compartment fractions (make_dsc_phantom's, recomputed: that function returns signals)
    enh, core, edema = _tumor_fractions(brain.shape, clean.signal.affine, p) * brain
    artery = _artery_mask(brain, clean.signal.affine)
    normal = 1.0 - enh - core - edema
    csf, gm, wm = (anat.fractions[:, :, k0:k1][..., i] for i in range(3))
    frac = np.stack([csf * (normal + edema), gm * normal, wm * normal, edema * (gm + wm), enh, core], axis=-1)
    frac[artery] = 0.0
    idx = np.flatnonzero(brain)
    fv = frac.reshape(-1, len(COMPARTMENTS))[idx].astype(np.float64)
    art = artery.ravel()[idx].astype(np.float64)
    terms = _preload_delta_r2s(p, preload, _tissue_table(p), fv, art, clean.times, clean.leakage_reference)
    return clean, p, idx, terms


def _preload_delta_r2s(p, preload: Preload, tissues, fv, art, times, dsc_reference) -> dict | None:
    """The ΔR2* terms the preload adds to the ordinary object's (:func:`preload_terms`); None for no preload."""
    if preload.dose_fraction == 0:
        return None
    lead = 60.0 * preload.interval_min
    fine = np.arange(0.0, lead + times[-1] + FINE_STEP, FINE_STEP)  # from the preload's own t = 0 on
    cbv = np.array([tissues[c]["cbv"] for c in COMPARTMENTS])
    cbf = np.array([tissues[c]["cbf"] for c in COMPARTMENTS])
    mtt = np.divide(cbv * 60.0, cbf, out=np.zeros_like(cbv), where=cbf > 0)
    delay = np.full(len(COMPARTMENTS), float(p.tissue_delay))
    delay[[COMPARTMENTS.index("enhancing"), COMPARTMENTS.index("core")]] += p.tumor_delay
    blood = preload_blood(p, preload)
    curves = phys.tissue_concentration(fine, blood, cbv / 100.0, mtt, delay, p.dispersion, residue=p.residue)
    # the BSW reference of the preload (non-tumour brain mean), as the ordinary object's leakage_reference
    reference_voxels = (fv[:, 4] + fv[:, 5] == 0) & (art == 0)
    reference = fv[reference_voxels].mean(axis=0) @ curves
    exposure_fine = tofts_exposure(fine, reference, preload.kep_per_min / 60.0)
    at_frames = lambda values: np.interp(times + lead, fine, values)  # noqa: E731
    exposure = at_frames(exposure_fine)
    intravascular = np.stack([at_frames(c) for c in curves])  # (6, n_frames)
    dsc_exposure = -phys.bsw_leakage(times, dsc_reference, 1.0)  # ∫ref of the DSC bolus (the object's, kep = 0)

    # κ: ΔR1 per unit exposure. Exposure is ∫ ref; ref ≈ ρ Ca (ρ: the reference's blood share), Ca = c Cp
    plateau_mm = float(_biexponential(np.array(PLATEAU_MINUTES), WEINMANN_1984))
    c = dsc_default_steady_state() * p.aif_peak / plateau_mm  # object ΔR2* [1/s] per mM plasma
    rho = float(trapezoid(reference, fine) / trapezoid(blood(fine), fine))
    kappa = preload.r1 * preload.ktrans_per_min / 60.0 / (rho * c)
    tr = p.tr or p.frame_interval
    k2_t1 = p.leakage / (1.0 - preload.t2s_share)
    k2_t2s = preload.t2s_share * k2_t1
    leaky = {4: 1.0, 5: CORE_LEAKAGE_FRACTION}  # compartment -> its Ktrans relative to the rim's
    terms = {"blood": fv @ intravascular + art[:, None] * at_frames(blood(fine))[None, :],
             "preload_leakage": np.zeros((fv.shape[0], times.size)), "bolus_t1_left": np.zeros((fv.shape[0], times.size))}
    for column, share in leaky.items():
        h, slope = t1_response(exposure, kappa * share, 1.0 / preload.t1_rim_s, tr, preload.flip_deg)
        # the preload's own T1 and T2* terms, and the DSC bolus's T1 term rescaled by the sensitivity left (its
        # ordinary -K2·∫ref is in the clean signal already: add -K2_T1·(h' - 1)·∫ref)
        terms["preload_leakage"] += fv[:, column, None] * (share * (-k2_t1 * h + k2_t2s * exposure))[None, :]
        terms["bolus_t1_left"] += fv[:, column, None] * (share * -k2_t1 * (slope - 1.0) * dsc_exposure)[None, :]
    return terms
