"""Simulated DSC curves for training PHAE: what the pipeline hands the deconvolution, with no labels used.

Each *case* is one acquisition protocol (frame interval, duration, TE) and one arterial input: a
gamma-variate first pass with recirculation and steady state (``phantoms.dsc_physics.gamma_variate_aif``)
whose arrival, shape, peak, recirculation and plateau are drawn per case. Its tissue curves are
C = CBF·(Ca_delayed,dispersed ⊛ R) from ``dsc_physics.tissue_concentration`` with MTT log-uniform in
1-20 s, CBV 0.5-12 ml/100 ml, delay 0-3 s, dispersion 0-3 s and residues drawn from the exponential,
gamma and Lorentzian shapes (so the decoder's Lorentzian is *not* the truth for most curves). The
signal S0·exp(-TE·ΔR2*) gets Rician noise at SNR 10-100 (σ = 1000 / SNR, S0 700-1800 as in the DSC
reference object) after a tissue gain of 1-4 (the reference object's single relaxivity gives tissue
signal drops of 2-7 %, in-vivo DSC reaches 20-40 % in grey matter: the gain spans both contrast
regimes; CBV and flow are unaffected since the network normalises each curve), and is converted back to ΔR2* with the baseline mean before arrival, like
``run_dsc``; the AIF is the mean ΔR2* of 4-40 noisy arterial voxels. Curves are leakage-free: the
pipeline applies BSW leakage correction before the deconvolution, and PHAE sees corrected curves.

The truth (MTT, delay, CBV) is returned for validation only; training never reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...phantoms import dsc_physics as phys

RESIDUE_CHOICES = ("exponential", "gamma", "lorentzian")


@dataclass
class SimulatedCase:
    curves: np.ndarray  # (n, T) ΔR2* [1/s], float32
    aif: np.ndarray  # (T,) measured (noisy) arterial ΔR2* [1/s]
    frame_interval: float
    truth: dict  # mtt, delay, cbv (fraction), cbf [1/s], snr: (n,) arrays; never used in training


def simulate_case(rng: np.random.Generator, n_curves: int, frame_interval: float | None = None,
                  n_frames: int | None = None, snr: float | tuple[float, float] = (10.0, 100.0),
                  te: float = 0.03, tissue_gain: tuple[float, float] = (1.0, 4.0)) -> SimulatedCase:
    """One simulated case (protocol + AIF) with ``n_curves`` tissue curves."""
    dt = float(frame_interval if frame_interval is not None else rng.choice([1.0, 1.2, 1.5, 1.8, 2.0]))
    if n_frames is None:
        n_frames = int(round(rng.uniform(60.0, 120.0) / dt))
    times = np.arange(n_frames) * dt
    arrival = rng.uniform(8.0, min(25.0, 0.35 * times[-1]))
    aif_kw = dict(arrival=arrival, peak=rng.uniform(25.0, 70.0), alpha=rng.uniform(2.0, 4.5),
                  beta=rng.uniform(0.9, 1.8), recirculation_fraction=rng.uniform(0.1, 0.3),
                  recirculation_delay=rng.uniform(6.0, 10.0), steady_state_fraction=rng.uniform(0.04, 0.12))
    aif_fn = lambda t: phys.gamma_variate_aif(t, **aif_kw)  # noqa: E731

    mtt = np.exp(rng.uniform(np.log(1.0), np.log(20.0), n_curves))
    cbv = np.exp(rng.uniform(np.log(0.005), np.log(0.12), n_curves))
    delay = np.where(rng.random(n_curves) < 0.3, 0.0, rng.uniform(0.0, 3.0, n_curves))
    dispersion = np.where(rng.random(n_curves) < 0.5, 0.0, rng.uniform(0.0, 3.0, n_curves))
    kinds = rng.choice(len(RESIDUE_CHOICES), n_curves)
    conc = np.empty((n_curves, n_frames))
    for k, name in enumerate(RESIDUE_CHOICES):
        sel = kinds == k
        if sel.any():
            conc[sel] = phys.tissue_concentration(times, aif_fn, cbv[sel], mtt[sel], delay[sel], dispersion[sel],
                                                  residue=name)
    snr_v = (np.full(n_curves, float(snr)) if np.isscalar(snr)
             else np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), n_curves)))
    stop = max(int(np.ceil(arrival / dt - 1e-9)), 3)  # baseline frames [1, stop): before the bolus
    s0 = rng.uniform(700.0, 1800.0, n_curves)
    gain = np.exp(rng.uniform(np.log(tissue_gain[0]), np.log(tissue_gain[1]), n_curves))
    curves = _noisy_delta_r2s(conc * gain[:, None], s0, 1000.0 / snr_v, te, stop, rng)
    n_art = int(rng.integers(4, 41))
    art = np.broadcast_to(aif_fn(times), (n_art, n_frames))
    aif = _noisy_delta_r2s(art, np.full(n_art, 1200.0), np.full(n_art, 1000.0 / float(np.median(snr_v))),
                           te, stop, rng).mean(axis=0)
    truth = {"mtt": mtt, "delay": delay, "cbv": cbv, "cbf": cbv / mtt, "snr": snr_v, "dispersion": dispersion,
             "residue": np.array(RESIDUE_CHOICES)[kinds]}
    truth["gain"] = gain
    return SimulatedCase((curves / gain[:, None]).astype(np.float32), aif.astype(np.float32), dt, truth)


def _noisy_delta_r2s(delta, s0, sigma, te, stop, rng) -> np.ndarray:
    """ΔR2* [1/s] as the pipeline measures it: Rician-noisy signal, S0 from frames [1, stop)."""
    signal = phys.signal_from_delta_r2s(s0, delta, te)
    noisy = _rician(signal, sigma, rng)  # per-curve σ (add_rician_noise takes one σ)
    base = noisy[:, 1:stop].mean(axis=1, keepdims=True)
    return -np.log(np.maximum(noisy, 1e-3 * base) / base) / te


def _rician(signal, sigma, rng):
    sigma = np.asarray(sigma, dtype=np.float64)[:, None]
    re = signal + sigma * rng.standard_normal(signal.shape)
    im = sigma * rng.standard_normal(signal.shape)
    return np.hypot(re, im)


def simulate_cases(n_cases: int, curves_per_case: int, seed: int = 0, **kw) -> list[SimulatedCase]:
    rng = np.random.default_rng(seed)
    return [simulate_case(rng, curves_per_case, **kw) for _ in range(n_cases)]
