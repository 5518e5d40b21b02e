"""Curve-level DSC generator with a deliberately wide distribution, for training and testing learned
perfusion maps (PHAE) on data they were not built on.

One *case* = one protocol (frame interval, duration, echo time), one arterial input and n tissue curves.
What a case draws is set by :class:`CurveSettings`; two presets exist and never overlap where it matters:

* ``TRAINING``: AIF families ``gamma`` (random gamma-variate first pass + recirculation + plateau, as
  ``dsc_physics.gamma_variate_aif``) and ``parker`` (the Parker 2006 population shape, time-stretched
  0.6-1.6x, rescaled to a ΔR2* peak), each with a random dispersion of the *measured* AIF and a
  partial-volume mix with tissue; frame interval 0.8-2.5 s; duration 50-150 s; tissue delay -3..+5 s;
  a quarter of the curves at exactly zero delay (``delay_zero_fraction``);
  residues exponential, gamma, Lorentzian, box; T2*- and T1-dominant leakage in some curves; noise on the
  *signal* before the ΔR2* conversion (Rician), or, in a share of the cases, Gaussian noise on the
  concentration curves themselves ("concentration input", no conversion).
* ``TRAINING_WIDE`` (issue 14, round 4): ``TRAINING`` with three more AIF families -- ``bigamma`` (a strong,
  early second pass: 35-70 % of the first, 3-7 s later), ``skewgamma`` (a low-shape gamma variate with a long
  tail) and ``lognormal`` (log-normal first pass and recirculation) -- and the measured AIF's dispersion kernel
  drawn per case from exponential, box (uniform on [0, 2τ]) and lagged-normal (Gaussian ⊛ exponential). Never
  Georgiou, never the gamma kernel. ``TRAINING`` and ``HELD_APART`` draw exactly as before.
* ``HELD_APART``: the Georgiou 2019 population AIF (a family training never sees), gamma-kernel
  dispersion instead of the exponential one, fixed frame intervals / durations / SNRs chosen by the
  validation, its own seeds. Used only by scripts/validate_phae.py and the tests.

Truth per curve: cbf [1/s] *relative to the measured AIF's area* (what any deconvolution can recover:
a partial-volumed AIF scales every method's CBF alike), cbv (fraction, same convention), mtt [s],
delay [s], residue, snr, leakage k2. kH = ρ = 1 (one relaxivity for artery and tissue, like
``dsc_physics``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.integrate import cumulative_trapezoid, trapezoid  # not np.trapezoid: numpy >= 2.0 only (Slicer <= 5.8 ships 1.26)

from ..perfusion.population_aif import georgiou_aif, parker_aif
from . import dsc_physics as phys

RESIDUE_FAMILIES = ("exponential", "gamma", "lorentzian", "box")


@dataclass(frozen=True)
class CurveSettings:
    aif_families: tuple[str, ...] = ("gamma", "parker")
    frame_interval: tuple[float, float] = (0.8, 2.5)  # s, uniform
    duration: tuple[float, float] = (50.0, 150.0)  # s, uniform
    arrival: tuple[float, float] = (5.0, 25.0)  # s, bolus arrival in the AIF (capped at 35 % of the window)
    aif_peak: tuple[float, float] = (15.0, 80.0)  # 1/s, ΔR2* peak of the arterial curve
    aif_dispersion: tuple[float, float] = (0.0, 2.0)  # s, time constant applied to the *measured* AIF
    aif_dispersion_kernel: str | tuple[str, ...] = "exponential"  # or "gamma" (held-apart); a tuple: one per case
    partial_volume: tuple[float, float] = (0.7, 1.0)  # arterial fraction of the AIF voxels
    mtt: tuple[float, float] = (1.0, 20.0)  # s, log-uniform
    cbv: tuple[float, float] = (0.005, 0.15)  # fraction, log-uniform
    delay: tuple[float, float] = (-3.0, 5.0)  # s, tissue delay relative to the measured AIF
    # share of curves with EXACTLY zero delay (a point mass in the delay prior; the rest uniform on ``delay``).
    # The draw consumes the same random numbers whatever the value, so 0.25 (every preset) draws as before and
    # another value changes only which curves sit at zero (issue 14, round 7: the point mass pulls low-CNR delay
    # estimates to 0)
    delay_zero_fraction: float = 0.25
    tissue_dispersion: tuple[float, float] = (0.0, 3.0)  # s (half the curves get none)
    residues: tuple[str, ...] = RESIDUE_FAMILIES
    # share of a case's curves that take the case's ONE residue shape (drawn from ``residues`` per case); the rest
    # draw theirs per curve. 0 (every preset): per curve only, and no extra random numbers are drawn (issue 14,
    # round 14: can a case context learn the case's dominant capillary transit shape?)
    case_residue_fraction: float = 0.0
    leaky_fraction: float = 0.25  # share of curves with residual leakage
    k2: tuple[float, float] = (0.0, 0.015)  # 1/s, |BSW K2|; sign + (T2*) or - (T1) at random
    snr: tuple[float, float] = (8.0, 150.0)  # baseline S0 / sigma, log-uniform
    tissue_gain: tuple[float, float] = (1.0, 6.0)  # tissue ΔR2* contrast factor (low to in-vivo contrast)
    te: tuple[float, float] = (0.02, 0.045)  # s
    concentration_input_fraction: float = 0.2  # cases with Gaussian noise on concentration, no conversion
    fine_dt: float = 0.1

    def __post_init__(self):
        if not 0.0 <= float(self.delay_zero_fraction) <= 1.0:
            raise ValueError(f"delay_zero_fraction must lie in [0, 1], not {self.delay_zero_fraction}")
        if not 0.0 <= float(self.case_residue_fraction) <= 1.0:
            raise ValueError(f"case_residue_fraction must lie in [0, 1], not {self.case_residue_fraction}")

    def describe(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


TRAINING = CurveSettings()
#: issue 14, round 4: the training distribution widened in AIF shape: three more families (bigamma: a strong early
#: second pass; skewgamma: a long-tailed low-shape first pass; lognormal) and three dispersion kernels of the
#: measured AIF (exponential, box, lagged-normal) drawn per case. Never Georgiou, never the gamma kernel.
TRAINING_WIDE = replace(TRAINING, aif_families=("gamma", "parker", "bigamma", "skewgamma", "lognormal"),
                        aif_dispersion_kernel=("exponential", "box", "laggednormal"))
HELD_APART = CurveSettings(aif_families=("georgiou",), aif_dispersion_kernel="gamma", frame_interval=(1.0, 1.0),
                           duration=(90.0, 90.0), concentration_input_fraction=0.0, leaky_fraction=0.0)


@dataclass
class CurveCase:
    curves: np.ndarray  # (n, T) ΔR2* (or concentration) as a pipeline would hand the deconvolution, float32
    aif: np.ndarray  # (T,) measured arterial curve, same units
    frame_interval: float
    truth: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _log_uniform(rng, lo_hi, n=None):
    lo, hi = lo_hi
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n)) if hi > lo else (np.full(n, lo) if n else lo)


def _uniform(rng, lo_hi, n=None):
    lo, hi = lo_hi
    return rng.uniform(lo, hi, n) if hi > lo else (np.full(n, float(lo)) if n else float(lo))


def arterial_function(rng: np.random.Generator, family: str, arrival: float, peak: float):
    """A callable Ca(t) [1/s] of continuous time, 0 before ``arrival``, maximum ≈ ``peak``."""
    if family == "gamma":
        kw = dict(alpha=rng.uniform(1.5, 5.0), beta=rng.uniform(0.7, 2.0), recirculation_fraction=rng.uniform(0.05, 0.35),
                  recirculation_delay=rng.uniform(5.0, 12.0), steady_state_fraction=rng.uniform(0.03, 0.15))
        return lambda t: phys.gamma_variate_aif(t, arrival=arrival, peak=peak, **kw)
    if family in ("parker", "georgiou"):
        stretch = rng.uniform(0.6, 1.6) if family == "parker" else rng.uniform(0.8, 1.3)
        shape = parker_aif if family == "parker" else georgiou_aif
        # the population curves start their rise ~10 s after their delay; align the foot with `arrival`
        grid = np.linspace(0.0, 3.0, 3601)  # minutes
        ref = shape(grid, delay=0.0)
        foot = grid[np.argmax(ref > 0.02 * ref.max())]
        scale = peak / ref.max()
        return lambda t: scale * shape(np.maximum((np.asarray(t, float) - arrival) / (60.0 * stretch) + foot, 0.0),
                                       delay=0.0) * (np.asarray(t, float) >= arrival)
    if family == "bigamma":  # a stronger and earlier second pass (recirculation 35-70 % of the first, 3-7 s later)
        kw = dict(alpha=rng.uniform(1.5, 5.0), beta=rng.uniform(0.7, 2.0), recirculation_fraction=rng.uniform(0.35, 0.7),
                  recirculation_delay=rng.uniform(3.0, 7.0), steady_state_fraction=rng.uniform(0.03, 0.15))
        return lambda t: phys.gamma_variate_aif(t, arrival=arrival, peak=peak, **kw)
    if family == "skewgamma":  # a low-shape gamma variate with a long tail (alpha 0.8-1.8, beta 2.5-5 s)
        kw = dict(alpha=rng.uniform(0.8, 1.8), beta=rng.uniform(2.5, 5.0), recirculation_fraction=rng.uniform(0.0, 0.2),
                  recirculation_delay=rng.uniform(8.0, 15.0), steady_state_fraction=rng.uniform(0.03, 0.15))
        return lambda t: phys.gamma_variate_aif(t, arrival=arrival, peak=peak, **kw)
    if family == "lognormal":  # log-normal first pass + a broader log-normal recirculation + a smooth plateau
        mu, sig = np.log(rng.uniform(3.0, 9.0)), rng.uniform(0.3, 0.7)  # median 3-9 s after arrival
        frac, lag, ss = rng.uniform(0.05, 0.35), rng.uniform(6.0, 14.0), rng.uniform(0.03, 0.15)

        def lognormal(u, m, s_):
            u = np.maximum(u, 1e-9)
            return np.where(u > 1e-9, np.exp(-(np.log(u) - m) ** 2 / (2 * s_ * s_)) / u, 0.0)

        ref_t = np.linspace(1e-3, 60.0, 6001)
        ref = lognormal(ref_t, mu, sig)
        norm, t_peak = ref.max(), float(ref_t[np.argmax(ref)])

        def fn(t):
            u = np.asarray(t, float) - arrival
            first = lognormal(u, mu, sig) / norm
            second = frac * lognormal(u - lag, mu + np.log(1.6), sig * 1.3) / norm
            plateau = ss / (1.0 + np.exp(-(u - t_peak - lag) / 3.0))
            return peak * (first + second + plateau) * (u > 0)
        return fn
    raise ValueError(f"unknown AIF family {family!r}")


DISPERSION_KERNELS = ("exponential", "gamma", "box", "laggednormal")


def dispersion_kernel(t: np.ndarray, tau: float, kernel: str) -> np.ndarray:
    """The (unnormalised) dispersion kernel at times t >= 0 with mean transit ``tau`` [s]: exponential
    e^(-t/τ); gamma of shape 2 (the held-apart one); box (uniform on [0, 2τ]); laggednormal (a Gaussian of
    mean τ/2 and SD τ/4 convolved with an exponential of mean τ/2, in closed form)."""
    if kernel == "exponential":
        return np.exp(-t / tau)
    if kernel == "gamma":
        return t * np.exp(-2.0 * t / tau)
    if kernel == "box":
        return (t <= 2.0 * tau).astype(float)
    if kernel == "laggednormal":
        from scipy.special import erfc

        mu, sd, lam = 0.5 * tau, 0.25 * tau, 2.0 / tau  # exponentially modified Gaussian
        arg = lam * (mu + lam * sd * sd - t)
        return np.exp(np.minimum(0.5 * lam * (2.0 * mu + lam * sd * sd - 2.0 * t), 50.0)) * erfc(arg / (np.sqrt(2.0) * lam * sd))
    raise ValueError(f"unknown dispersion kernel {kernel!r}; use one of {', '.join(DISPERSION_KERNELS)}")


def _dispersed(values: np.ndarray, dt_fine: float, tau: float, kernel: str) -> np.ndarray:
    """Convolve fine-grid rows with a unit-area dispersion kernel (see ``dispersion_kernel``)."""
    if tau <= 0:
        return values
    t = np.arange(0.0, 12.0 * tau + dt_fine, dt_fine)
    k = dispersion_kernel(t, tau, kernel)
    k /= k.sum()
    from scipy.signal import fftconvolve

    return fftconvolve(values, k[None, :] if values.ndim == 2 else k, axes=-1)[..., :values.shape[-1]]


def simulate_curve_case(rng: np.random.Generator, n_curves: int, settings: CurveSettings = TRAINING, *,
                        frame_interval: float | None = None, n_frames: int | None = None, snr=None,
                        tissue_gain=None, aif_family: str | None = None, mtt=None, cbv=None, delay=None,
                        residue: str | np.ndarray | None = None, concentration_input: bool | None = None) -> CurveCase:
    """One case drawn from ``settings``; keyword overrides fix a quantity (sweeps)."""
    s = settings
    dt = float(frame_interval if frame_interval is not None else _uniform(rng, s.frame_interval))
    if n_frames is None:
        n_frames = int(round(_uniform(rng, s.duration) / dt))
    times = np.arange(n_frames) * dt
    arrival = float(min(_uniform(rng, s.arrival), 0.35 * times[-1]))
    family = aif_family or str(rng.choice(s.aif_families))
    ca_true = arterial_function(rng, family, arrival, float(_uniform(rng, s.aif_peak)))

    n = n_curves
    mtt = np.broadcast_to(np.asarray(mtt, float), (n,)).copy() if mtt is not None else _log_uniform(rng, s.mtt, n)
    cbv = np.broadcast_to(np.asarray(cbv, float), (n,)).copy() if cbv is not None else _log_uniform(rng, s.cbv, n)
    delay = (np.broadcast_to(np.asarray(delay, float), (n,)).copy() if delay is not None
             else np.where(rng.random(n) < s.delay_zero_fraction, 0.0, _uniform(rng, s.delay, n)))
    disp = np.where(rng.random(n) < 0.5, 0.0, _uniform(rng, s.tissue_dispersion, n))
    # residue: one name for every curve, or one name per curve (an array: tissues of different shapes in one case)
    res_names = (np.asarray(residue, dtype=str).copy() if isinstance(residue, np.ndarray)
                 else np.array([residue] * n if residue else rng.choice(s.residues, n)))
    if res_names.shape != (n,):
        raise ValueError(f"residue names must be one per curve ({n}); got {res_names.shape}")
    if residue is None and s.case_residue_fraction > 0:  # drawn after the per-curve shapes: fraction 0 draws as before
        dominant = str(rng.choice(s.residues))
        res_names = np.where(rng.random(n) < s.case_residue_fraction, dominant, res_names)
    conc = np.empty((n, n_frames))
    for name in np.unique(res_names):
        sel = res_names == name
        conc[sel] = phys.tissue_concentration(times, ca_true, cbv[sel], mtt[sel], delay[sel], disp[sel],
                                              residue=str(name), fine_dt=s.fine_dt)
    k2 = np.where(rng.random(n) < s.leaky_fraction, _uniform(rng, s.k2, n) * rng.choice([-1.0, 1.0], n), 0.0)
    if np.any(k2 != 0):  # BSW-type residual leakage: + K2·∫Ca (T2*-dominant) or - (T1-dominant)
        conc += k2[:, None] * cumulative_trapezoid(ca_true(times), times, initial=0.0)[None, :]

    # the measured AIF: dispersed on its way to the measuring voxel, partial-volumed with tissue
    t_fine = np.arange(0.0, times[-1] + s.fine_dt, s.fine_dt)
    # one kernel (a string, draws nothing: existing presets unchanged) or one drawn per case from a tuple
    kernel = (s.aif_dispersion_kernel if isinstance(s.aif_dispersion_kernel, str)
              else str(rng.choice(s.aif_dispersion_kernel)))
    tau = float(_uniform(rng, s.aif_dispersion))
    ca_meas_fine = _dispersed(ca_true(t_fine), s.fine_dt, tau, kernel)
    ca_meas = np.interp(times, t_fine, ca_meas_fine)
    pv = float(_uniform(rng, s.partial_volume))
    tissue_mean = np.median(conc, axis=0) if n else 0.0
    ca_meas = pv * ca_meas + (1.0 - pv) * tissue_mean
    # truth relative to the measured AIF's area (what any deconvolution of this AIF can recover)
    area_ratio = trapezoid(ca_true(times), times) / max(trapezoid(ca_meas, times), 1e-12)

    conc_in = concentration_input if concentration_input is not None else bool(rng.random() < s.concentration_input_fraction)
    # a scalar fixes the value, a tuple (lo, hi) is a range, an ndarray gives one value per curve
    snr_v = (np.full(n, float(snr)) if snr is not None and np.isscalar(snr)
             else np.asarray(snr, float).copy() if isinstance(snr, np.ndarray)
             else _log_uniform(rng, s.snr if snr is None else snr, n))
    gain = (np.full(n, float(tissue_gain)) if tissue_gain is not None and np.isscalar(tissue_gain)
            else np.asarray(tissue_gain, float).copy() if isinstance(tissue_gain, np.ndarray)
            else _log_uniform(rng, s.tissue_gain if tissue_gain is None else tissue_gain, n))
    stop = max(int(np.ceil(arrival / dt - 1e-9)), 3)
    if conc_in:
        # concentration input: Gaussian noise, SNR relative to 4 % of the AIF peak (a blood-volume-sized signal)
        sigma = 0.04 * float(ca_meas.max()) / snr_v
        curves = conc + sigma[:, None] * rng.standard_normal(conc.shape)
        aif = ca_meas + float(np.median(sigma)) * rng.standard_normal(n_frames) / np.sqrt(rng.integers(4, 41))
        te = None
    else:
        te = float(_uniform(rng, s.te))
        s0 = rng.uniform(600.0, 2000.0, n)
        curves = _noisy_delta_r2s(conc * gain[:, None], s0, s0 / snr_v, te, stop, rng) / gain[:, None]
        n_art = int(rng.integers(4, 41))
        art = np.broadcast_to(ca_meas, (n_art, n_frames))
        s0a = np.full(n_art, 1000.0)
        aif = _noisy_delta_r2s(art, s0a, s0a / float(np.median(snr_v)), te, stop, rng).mean(axis=0)
    truth = {"cbf": cbv / mtt * area_ratio, "cbv": cbv * area_ratio, "mtt": mtt, "delay": delay, "k2": k2,
             "residue": res_names, "snr": snr_v, "gain": gain, "dispersion": disp}
    info = {"aif_family": family, "dispersion_kernel": kernel, "aif_dispersion": tau, "frame_interval": dt, "n_frames": n_frames, "arrival": arrival, "pv": pv,
            "concentration_input": conc_in, "te": te}
    return CurveCase(curves.astype(np.float32), aif.astype(np.float32), dt, truth, info)


def _noisy_delta_r2s(delta, s0, sigma, te, stop, rng) -> np.ndarray:
    """ΔR2* [1/s] as the pipeline measures it: Rician-noisy signal, S0 from frames [1, stop)."""
    signal = phys.signal_from_delta_r2s(s0[:, None], delta, te)
    sig = np.asarray(sigma, float)[:, None]
    noisy = np.hypot(signal + sig * rng.standard_normal(signal.shape), sig * rng.standard_normal(signal.shape))
    base = noisy[:, 1:stop].mean(axis=1, keepdims=True)
    return -np.log(np.maximum(noisy, 1e-3 * base) / base) / te


def simulate_curve_cases(n_cases: int, curves_per_case: int, seed: int = 0,
                         settings: CurveSettings = TRAINING, repeats: int = 1, group_residue: bool = False,
                         **kw) -> list[CurveCase]:
    """``n_cases`` cases; with ``repeats`` = K > 1 each case holds curves_per_case // K *groups* of K curves
    that share one truth (MTT, CBV, delay, SNR, tissue gain, and the case's AIF) and differ in their noise,
    residue shape, tissue dispersion and leakage: rows [g·K, (g+1)·K) are group g (``truth["group"]``).
    What a group's estimates average to is the estimator's bias conditional on that truth (training
    penalises it, see dsc/phae/training.py). ``group_residue``: a group also shares its residue shape (drawn per
    group from ``settings.residues``), so that bias is conditional on the transit shape too (issue 14, round 15;
    drawn after the rest, so False draws as before)."""
    rng = np.random.default_rng(seed)
    if repeats <= 1:
        return [simulate_curve_case(rng, curves_per_case, settings, **kw) for _ in range(n_cases)]
    s, k = settings, int(repeats)
    g = max(curves_per_case // k, 1)
    out = []
    for _ in range(n_cases):
        truth = {"mtt": _log_uniform(rng, s.mtt, g), "cbv": _log_uniform(rng, s.cbv, g),
                 "delay": np.where(rng.random(g) < s.delay_zero_fraction, 0.0, _uniform(rng, s.delay, g)),
                 "snr": _log_uniform(rng, s.snr, g), "tissue_gain": _log_uniform(rng, s.tissue_gain, g)}
        truth = {key: np.repeat(v, k) for key, v in truth.items()}
        if group_residue:
            truth["residue"] = np.repeat(rng.choice(s.residues, g), k).astype(str)
        case = simulate_curve_case(rng, g * k, settings, **{**truth, **kw})
        case.truth["group"] = np.repeat(np.arange(g), k)
        out.append(case)
    return out


__all__ = ["CurveSettings", "TRAINING", "TRAINING_WIDE", "HELD_APART", "DISPERSION_KERNELS", "dispersion_kernel", "CurveCase", "simulate_curve_case", "simulate_curve_cases",
           "arterial_function", "replace"]
