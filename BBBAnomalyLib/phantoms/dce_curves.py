"""Curve-level DCE generator of *normal-appearing brain* with a wide acquisition distribution, for the
cohort RLS autoencoder (what "normal enhancement" looks like across protocols and arterial inputs).

One *case* = one protocol (frame interval, duration, flip angle, TR, relaxivity), one plasma AIF and
n voxel signal curves. Voxels are partial-volume mixes of a handful of compartments drawn per case
(GM, WM, CSF, non-leaky edema-like tissue with intact BBB, and small vessels holding 5-50 % blood, a few
percent of voxels), each with its own T10 and M0; concentrations add by volume, R1 adds by volume
(fast exchange), the signal is SPGR with Rician noise. Leaky tissue is *not* generated for training:
the autoencoder must learn normal curves only.

``TRAINING`` draws AIFs from the Parker 2006 and McGrath 2009 population shapes and a gamma-variate
"measured-like" AIF with recirculation and a plateau (time-stretched, arrival 10-60 s), frame interval
1-10 s, duration 150-600 s, flip 10-30°, TR 3-7 ms. ``HELD_APART`` (validation only) uses the
Georgiou 2019 AIF, which training never sees. ``AUGMENT``/:func:`subsample_case` shorten and undersample
cases (the seed's D_trunc / D_under as training data); ``n_leaky`` adds leaky voxels (``LEAKY``) for
model selection only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..perfusion.population_aif import georgiou_aif, mcgrath_aif, parker_aif
from . import dce_physics as phys
from .dsc_physics import gamma_variate_aif


@dataclass(frozen=True)
class DCECurveSettings:
    aif_families: tuple[str, ...] = ("parker", "mcgrath", "gamma")
    frame_interval: tuple[float, float] = (1.0, 10.0)
    duration: tuple[float, float] = (150.0, 600.0)
    arrival: tuple[float, float] = (10.0, 60.0)
    aif_stretch: tuple[float, float] = (0.7, 1.5)
    flip_angle: tuple[float, float] = (10.0, 30.0)
    tr: tuple[float, float] = (0.003, 0.007)
    relaxivity: tuple[float, float] = (3.5, 5.0)
    hematocrit: tuple[float, float] = (0.38, 0.45)
    snr: tuple[float, float] = (15.0, 80.0)
    t10_gm: tuple[float, float] = (1.2, 1.9)
    t10_wm: tuple[float, float] = (0.75, 1.25)
    vessel_fraction: tuple[float, float] = (0.01, 0.05)

    def describe(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


TRAINING = DCECurveSettings()
HELD_APART = DCECurveSettings(aif_families=("georgiou",))


@dataclass
class DCECurveCase:
    signal: np.ndarray  # (n, T) SPGR signal
    times: np.ndarray  # (T,) s
    n_baseline: int  # pre-contrast frames
    info: dict
    leaky: np.ndarray | None = None  # (n_leaky, T) SPGR signal of leaky voxels (n_leaky > 0 only): never trained on


def _u(rng, lo_hi):
    return float(rng.uniform(*lo_hi)) if lo_hi[1] > lo_hi[0] else float(lo_hi[0])


def plasma_curve(rng, family: str, arrival: float, stretch: float, hematocrit: float):
    """Cp(t) [mM] for t in seconds, 0 before ``arrival``."""
    if family == "gamma":
        kw = dict(alpha=rng.uniform(1.5, 4.0), beta=rng.uniform(1.0, 3.0), recirculation_fraction=rng.uniform(0.1, 0.4),
                  recirculation_delay=rng.uniform(8.0, 20.0), steady_state_fraction=rng.uniform(0.05, 0.25))
        peak = rng.uniform(3.0, 8.0)
        return lambda t: gamma_variate_aif(np.asarray(t, float), arrival=arrival, peak=peak, **kw) / (1 - hematocrit)
    fn = {"parker": parker_aif, "mcgrath": mcgrath_aif, "georgiou": georgiou_aif}[family]
    return lambda t: fn(np.maximum(np.asarray(t, float) - arrival, 0.0) / (60.0 * stretch), delay=0.0) \
        * (np.asarray(t, float) >= arrival) / (1 - hematocrit)


def simulate_normal_case(rng: np.random.Generator, n_voxels: int, settings: DCECurveSettings = TRAINING, *,
                         frame_interval: float | None = None, duration: float | None = None,
                         n_leaky: int = 0) -> DCECurveCase:
    """One simulated case (see the module docstring). n_leaky > 0 also simulates that many *leaky* voxels
    with the same protocol and AIF (:data:`LEAKY`: tumour-like Ktrans, ve, vp, partial-volumed with GM or WM),
    drawn after everything else so the normal voxels are the same with or without them; they are for model
    selection (rls early stopping), not for training the autoencoder."""
    s = settings
    dt = float(frame_interval if frame_interval is not None else np.exp(rng.uniform(*np.log(s.frame_interval))))
    dur = float(duration if duration is not None else _u(rng, s.duration))
    n_frames = max(int(round(dur / dt)), 20)
    times = np.arange(n_frames) * dt
    arrival = min(_u(rng, s.arrival), 0.3 * times[-1])
    hct = _u(rng, s.hematocrit)
    family = str(rng.choice(s.aif_families))
    cp = plasma_curve(rng, family, arrival, _u(rng, s.aif_stretch), hct)
    # compartments: ktrans [1/min], ve, vp, t10 [s], m0
    comps = [
        (rng.uniform(0.0, 0.0015), rng.uniform(0.05, 0.15), rng.uniform(0.03, 0.06), _u(rng, s.t10_gm), 1.2),  # GM
        (rng.uniform(0.0, 0.001), rng.uniform(0.05, 0.15), rng.uniform(0.01, 0.025), _u(rng, s.t10_wm), 1.0),  # WM
        (0.0, 0.0, 0.0, rng.uniform(3.5, 4.5), 1.4),  # CSF
        (rng.uniform(0.0, 0.003), rng.uniform(0.2, 0.4), rng.uniform(0.01, 0.02), rng.uniform(1.3, 1.7), 1.3),  # edema, intact
        (0.0, 0.0, 1.0 - hct, 1.6, 1.1),  # blood (small vessels)
    ]
    k, ve, vp, t10, m0 = (np.array(c, float) for c in zip(*comps))
    curves = phys.tissue_concentration(times, cp, k, np.where(ve > 0, ve, 1.0), vp, 0.0, fine_dt=0.1)
    # voxel composition: mostly GM or WM, partial volumes, some CSF/edema, a few vessel voxels
    kind = rng.choice(5, n_voxels, p=[0.35, 0.4, 0.1, 0.08, 0.07])
    frac = np.zeros((n_voxels, 5))
    frac[np.arange(n_voxels), np.minimum(kind, 3)] = 1.0
    mix = rng.random(n_voxels) < 0.3  # partial volume with a second tissue
    other = rng.choice(3, n_voxels)
    w = rng.uniform(0.1, 0.5, n_voxels)
    frac[mix] *= (1 - w[mix])[:, None]
    frac[mix, other[mix]] += w[mix]
    vessel = rng.random(n_voxels) < _u(rng, s.vessel_fraction)
    blood = rng.uniform(0.05, 0.5, n_voxels)
    frac[vessel] *= (1 - blood[vessel])[:, None]
    frac[vessel, 4] += blood[vessel]
    ct = frac @ curves
    r1_0 = frac @ (1.0 / t10)
    r1 = r1_0[:, None] + _u(rng, s.relaxivity) * ct
    flip, tr = _u(rng, s.flip_angle), _u(rng, s.tr)
    sig = phys.spgr_signal(1000.0 * (frac @ m0), r1, flip, tr)
    wm = float(phys.spgr_signal(1000.0, np.array([1.0 / t10[1]]), flip, tr)[0])
    snr = _u(rng, s.snr)
    noisy = phys.add_rician_noise(sig, wm / snr, rng)
    leaky = None
    if n_leaky:
        leaky = _leaky_signal(rng, n_leaky, times, cp, curves[:2], t10[:2], m0[:2], _u(rng, s.relaxivity), flip, tr,
                              wm / snr)
    n_base = max(int(np.floor(arrival / dt)), 1)
    info = {"aif_family": family, "frame_interval": dt, "duration": float(times[-1]), "flip_angle": flip, "tr": tr,
            "snr": snr, "arrival": arrival}
    return DCECurveCase(noisy.astype(np.float32), times, n_base, info, leaky)


#: Leaky tissue for model selection: Ktrans log-uniform over 0.01-0.3 min⁻¹ (the "leaky" threshold of the
#: phantoms up to a high-grade tumour rim), ve 0.1-0.6, vp 0.005-0.1, T10 1.0-2.0 s; LEAKY_COMPARTMENTS drawn
#: per case, each voxel 50-100 % of one of them, the rest GM or WM.
LEAKY = {"ktrans": (0.01, 0.3), "ve": (0.1, 0.6), "vp": (0.005, 0.1), "t10": (1.0, 2.0)}
LEAKY_COMPARTMENTS = 8


def _leaky_signal(rng, n, times, cp, normal_curves, normal_t10, normal_m0, relaxivity, flip, tr, sigma):
    c = LEAKY_COMPARTMENTS
    k = np.exp(rng.uniform(*np.log(LEAKY["ktrans"]), c))
    ve, vp, t10 = (rng.uniform(*LEAKY[key], c) for key in ("ve", "vp", "t10"))
    curves = np.concatenate([phys.tissue_concentration(times, cp, k, ve, vp, 0.0, fine_dt=0.1), normal_curves])
    r1s = np.concatenate([1.0 / t10, 1.0 / np.asarray(normal_t10)])
    m0s = np.concatenate([np.full(c, 1.2), np.asarray(normal_m0)])
    frac = np.zeros((n, c + 2))
    f = rng.uniform(0.5, 1.0, n)
    frac[np.arange(n), rng.choice(c, n)] = f
    frac[np.arange(n), c + rng.choice(2, n)] = 1.0 - f
    r1 = (frac @ r1s)[:, None] + relaxivity * (frac @ curves)
    sig = phys.spgr_signal(1000.0 * (frac @ m0s), r1, flip, tr)
    return phys.add_rician_noise(sig, sigma, rng).astype(np.float32)


#: Acquisition augmentation of the cohort RLS training (the seed's robustness experiment as training data):
#: with probability p_truncate a case keeps only its first 40-100 % of frames (never fewer than 10 after the
#: baseline), and with probability p_under only every 2nd or 3rd frame.
AUGMENT = {"p_truncate": 0.5, "truncate": (0.4, 1.0), "p_under": 0.3, "under": (2, 3), "min_post_frames": 10}


def subsample_case(case: DCECurveCase, rng: np.random.Generator, augment: dict = AUGMENT) -> DCECurveCase:
    """The same case acquired shorter and/or with a longer frame interval (frames dropped, not re-simulated)."""
    n = case.times.size
    keep = n
    if rng.random() < augment["p_truncate"]:
        keep = int(round(rng.uniform(*augment["truncate"]) * n))
    keep = min(max(keep, case.n_baseline + augment["min_post_frames"]), n)
    every = int(rng.choice(augment["under"])) if rng.random() < augment["p_under"] else 1
    idx = np.arange(0, keep, every)
    if idx.size - int(np.ceil(case.n_baseline / every)) < augment["min_post_frames"] // every:
        idx = np.arange(keep)  # too few post-contrast frames left to undersample
        every = 1
    n_base = max(int(np.ceil(case.n_baseline / every)), 1)
    times = case.times[idx]
    info = {**case.info, "duration": float(times[-1] - times[0]), "frame_interval": float(np.median(np.diff(times))),
            "truncated_to": int(keep), "every": every}
    return DCECurveCase(case.signal[:, idx], times, n_base, info, None if case.leaky is None else case.leaky[:, idx])
