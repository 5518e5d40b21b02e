"""Population arterial input functions (gadolinium concentration, mM; time in minutes): Parker,
Georgiou, McGrath (blood) and Weinmann, Fritz-Hansen (plasma); `plasma_population_aif` picks one by name.

Used when no arterial voxel can be measured (DCE with a population AIF) and by the phantoms. Parker,
Georgiou and McGrath return *blood* concentration; divide by (1 - Hct) for plasma (see METHODS.md:
forgetting it scales Ktrans by ~1.8). Parker, Georgiou and McGrath are verified against the OSIPI
DCE-DSC-MRI code collection's reference values (Testing/Data/osipi/, Apache-2.0); Weinmann and
Fritz-Hansen (no OSIPI reference exists) against their closed forms evaluated by hand at known points.

Delay convention (as in OSIPI's reference data): the curve is shifted right by `delay` minutes and is
exactly 0 for t < delay (no contrast agent before the bolus arrives), also for delay = 0 and t < 0.
Times within 1e-9 min of the delay count as arrived, so a delay of n·dt computed in floating point
does not blank the sample at n·dt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

_ARRIVAL_EPS_MIN = 1e-9  # [min]


# --- Parker et al. 2006 -----------------------------------------------------------------------
@dataclass(frozen=True)
class ParkerParameters:
    """Parker et al., MRM 2006;56:993-1000 (doi:10.1002/mrm.21066), Table 1 (population average)."""

    A1: float = 0.809  # mM·min
    A2: float = 0.330  # mM·min
    T1: float = 0.17046  # min
    T2: float = 0.365  # min
    sigma1: float = 0.0563  # min
    sigma2: float = 0.132  # min
    alpha: float = 1.050  # mM
    beta: float = 0.1685  # 1/min
    s: float = 38.078  # 1/min
    tau: float = 0.483  # min


PARKER_2006 = ParkerParameters()


def _delayed(curve, t_minutes, delay: float, parameters) -> np.ndarray:
    """curve(t - delay, parameters) after the arrival, 0 before it (t and delay in minutes)."""
    u = np.asarray(t_minutes, dtype=np.float64) - delay
    arrived = u >= -_ARRIVAL_EPS_MIN
    u = np.where(arrived, np.maximum(u, 0.0), 0.0)
    with np.errstate(under="ignore"):
        return np.where(arrived, curve(u, parameters), 0.0)


def parker_aif(t_minutes, delay: float = 0.0, parameters: ParkerParameters = PARKER_2006) -> np.ndarray:
    """Parker population AIF Cb(t) [mM] at `t_minutes`; `delay` [min] is the bolus arrival time.

    Cb(t) = Σ_{n=1,2} A_n/(σ_n√(2π)) exp(-(t - T_n)²/(2σ_n²)) + α e^{-βt} / (1 + e^{-s(t - τ)}):
    two Gaussians for the first and second pass plus an exponentially decaying sigmoid washout,
    fitted to the population average of AIFs measured at 4.97 s resolution (0.1 mmol/kg). Zero for t < delay.
    """
    return _delayed(_parker, t_minutes, delay, parameters)


def _parker(u: np.ndarray, p: ParkerParameters) -> np.ndarray:
    g1 = p.A1 / (p.sigma1 * np.sqrt(2.0 * np.pi)) * np.exp(-((u - p.T1) ** 2) / (2.0 * p.sigma1**2))
    g2 = p.A2 / (p.sigma2 * np.sqrt(2.0 * np.pi)) * np.exp(-((u - p.T2) ** 2) / (2.0 * p.sigma2**2))
    # 1/(1 + e^{-x}) written with exp of a non-positive number only (no overflow warnings at large |t|)
    x = p.s * (u - p.tau)
    ex = np.exp(-np.abs(x))
    sigmoid = np.where(x >= 0, 1.0 / (1.0 + ex), ex / (1.0 + ex))
    return g1 + g2 + p.alpha * np.exp(-p.beta * u) * sigmoid


# --- Georgiou et al. 2019 ---------------------------------------------------------------------
@dataclass(frozen=True)
class GeorgiouParameters:
    """Parameters of the Georgiou (Horsfield-form) AIF: amplitudes [mM], rates [1/min], alpha [-],
    beta [min], tau [min] (the recirculation period)."""

    A1: float
    m1: float
    A2: float
    m2: float
    A3: float
    m3: float
    alpha: float
    beta: float
    tau: float


#: Values printed in Georgiou et al. Table 3 (rounded to 2-4 digits). They reproduce the paper's
#: supplementary representative curve (Figure S2 data) only to ~5 % (0.08 mM near the peak).
GEORGIOU_2019_TABLE3 = GeorgiouParameters(
    A1=0.37, m1=0.11, A2=0.33, m2=1.17, A3=10.06, m3=16.02, alpha=5.26, beta=0.032, tau=0.129
)

#: The same functional form refined to 6 significant digits by a least-squares fit (done for this
#: package) to the supplementary curve as distributed by OSIPI (GeorgiouAIF_ref.csv, 'original_AIF',
#: 0.1 s resolution); it reproduces that curve to 3e-5 mM everywhere, so the tabulated curve is this
#: function evaluated with unrounded parameters. Each value is within 2.5 % of Table 3.
GEORGIOU_2019 = GeorgiouParameters(
    A1=0.374322, m1=0.112701, A2=0.331184, m2=1.17465, A3=10.0612, m3=16.0200,
    alpha=5.26699, beta=0.0320788, tau=0.128556,
)


def georgiou_aif(t_minutes, delay: float = 0.0, parameters: GeorgiouParameters = GEORGIOU_2019) -> np.ndarray:
    """Georgiou population AIF Cb(t) [mM] at `t_minutes`; `delay` [min] is the bolus arrival time.

    Georgiou L, Wilson DJ, Sharma N, Perren TJ, Buckley DL. "A functional form for a representative
    individual arterial input function measured from a population using high temporal resolution DCE
    MRI." MRM 2019;81:1955-1963 (doi:10.1002/mrm.27524): the measured AIF (0.1 s resolution, Gd-DOTA
    0.1 mmol/kg) of the patient closest to the cohort average, described by Horsfield et al.'s (PMB 2009)
    circulation model:

        Cb(t) = (A1 e^{-m1 t} + A2 e^{-m2 t} + A3 e^{-m3 t}) · Σ_{j>=0} γ_j(t - jτ),
        γ_j(s) = s^{a_j} e^{-s/β} / (β^{a_j+1} Γ(a_j+1)) for s > 0,  a_j = (j+1)·α + j,

    i.e. the j-th pass is the first-pass gamma variate convolved j times with itself and delayed by
    j recirculation periods τ, all modulated by a tri-exponential washout. Every pass that has started
    by the latest time is included (evaluated in log space, so high-order terms cannot overflow).
    Default parameters: :data:`GEORGIOU_2019` (see there); pass :data:`GEORGIOU_2019_TABLE3` for the
    printed values.
    """
    return _delayed(_georgiou, t_minutes, delay, parameters)


def _georgiou(u: np.ndarray, p: GeorgiouParameters) -> np.ndarray:
    washout = p.A1 * np.exp(-p.m1 * u) + p.A2 * np.exp(-p.m2 * u) + p.A3 * np.exp(-p.m3 * u)
    passes = np.zeros_like(u)
    n_passes = int(np.floor(np.max(u, initial=0.0) / p.tau)) + 1 if u.size else 0
    for j in range(n_passes):  # a loop over circulation passes (a few tens), not over samples
        s = u - j * p.tau
        a = (j + 1) * p.alpha + j
        pos = s > 0
        sp = s[pos]
        passes[pos] += np.exp(a * np.log(sp) - sp / p.beta - (a + 1.0) * np.log(p.beta) - gammaln(a + 1.0))
    return washout * passes


# --- bi-exponential plasma AIFs: Weinmann 1984 (as used by Tofts & Kermode) and Fritz-Hansen 1996 --
@dataclass(frozen=True)
class BiexponentialParameters:
    """Cp(t) = D·(a1 e^{-m1 t} + a2 e^{-m2 t}) for t >= 0: D the dose [mmol/kg], a1, a2 [kg/l], m1, m2 [1/min].
    Instantaneous rise at t = 0 (no first-pass peak): a bolus idealised as a step."""

    D: float
    a1: float
    a2: float
    m1: float
    m2: float


#: Weinmann HJ, Laniado M, Mützel W. Physiol Chem Phys Med NMR 1984;16:167-172, in the form and with
#: the values of Tofts & Kermode, MRM 1991;17:357-367 (doi:10.1002/mrm.1910170208): D = 0.1 mmol/kg
#: Gd-DTPA, a1 = 3.99 kg/l, a2 = 4.78 kg/l, m1 = 0.144 /min, m2 = 0.0111 /min. *Plasma* concentration.
WEINMANN_1984 = BiexponentialParameters(D=0.1, a1=3.99, a2=4.78, m1=0.144, m2=0.0111)

#: Fritz-Hansen T, Rostrup E, Larsson HBW, et al. MRM 1996;36:225-231 (doi:10.1002/mrm.1910360209),
#: with the bi-exponential parameters of Whitcher & Schmid, J Stat Softw 2011;44(5) (dcemriS4's
#: "fritz.hansen"): D = 1 (the amplitudes are already mM for the study's 0.1 mmol/kg), a1 = 2.4 mM,
#: a2 = 0.62 mM, m1 = 3.0 /min, m2 = 0.016 /min. *Plasma* concentration.
FRITZ_HANSEN_1996 = BiexponentialParameters(D=1.0, a1=2.4, a2=0.62, m1=3.0, m2=0.016)


def _biexponential(u: np.ndarray, p: BiexponentialParameters) -> np.ndarray:
    return p.D * (p.a1 * np.exp(-p.m1 * u) + p.a2 * np.exp(-p.m2 * u))


def weinmann_aif(t_minutes, delay: float = 0.0, parameters: BiexponentialParameters = WEINMANN_1984) -> np.ndarray:
    """Weinmann (Tofts & Kermode 1991) bi-exponential *plasma* AIF Cp(t) [mM]; `delay` [min]; 0 before it."""
    return _delayed(_biexponential, t_minutes, delay, parameters)


def fritz_hansen_aif(t_minutes, delay: float = 0.0, parameters: BiexponentialParameters = FRITZ_HANSEN_1996
                     ) -> np.ndarray:
    """Fritz-Hansen 1996 bi-exponential *plasma* AIF Cp(t) [mM] (Whitcher & Schmid's parameters); 0 before `delay` [min]."""
    return _delayed(_biexponential, t_minutes, delay, parameters)


# --- McGrath et al. 2009 (preclinical, rat) -----------------------------------------------------
@dataclass(frozen=True)
class McGrathParameters:
    """McGrath DM, Bradley DP, Tessier JL, Lacey T, Taylor CJ, Parker GJM. MRM 2009;61:1173-1184
    (doi:10.1002/mrm.21959), Table 1, model B (eq. 5): a linear rise to A1 + A2 over t1, then a
    bi-exponential washout. A1, A2 [mM]; k1, k2 [1/s]; t1 [s] (the paper's units)."""

    A1: float = 3.4
    A2: float = 1.81
    k1: float = 0.045
    k2: float = 0.0015
    t1: float = 7.0


MCGRATH_2009 = McGrathParameters()


def _mcgrath(u_minutes: np.ndarray, p: McGrathParameters) -> np.ndarray:
    s = 60.0 * u_minutes  # the published parameters are per second
    rise = (p.A1 + p.A2) * s / p.t1
    late = np.maximum(s - p.t1, 0.0)
    return np.where(s <= p.t1, rise, p.A1 * np.exp(-p.k1 * late) + p.A2 * np.exp(-p.k2 * late))


def mcgrath_aif(t_minutes, delay: float = 0.0, parameters: McGrathParameters = MCGRATH_2009) -> np.ndarray:
    """McGrath 2009 model B *blood* AIF Cb(t) [mM] of the rat (0.1 mmol/kg Gd-DTPA): preclinical,
    not a human AIF. Ca(t) = (A1 + A2) t/t1 for t <= t1, A1 e^{-k1 (t - t1)} + A2 e^{-k2 (t - t1)} after;
    `t_minutes` and `delay` in minutes (converted to the paper's seconds inside)."""
    return _delayed(_mcgrath, t_minutes, delay, parameters)


# --- the registry the pipelines use -------------------------------------------------------------
#: name -> (function of (t_minutes, delay_minutes), whether it gives plasma (True) or blood (False)).
POPULATION_AIFS = {
    "parker": (parker_aif, False),
    "georgiou": (georgiou_aif, False),
    "fritz-hansen": (fritz_hansen_aif, True),
    "weinmann": (weinmann_aif, True),
    "mcgrath": (mcgrath_aif, False),
}


#: The contrast dose [mmol/kg] each population curve was measured at (its source's protocol, see each model above):
#: Parker 2006 and Georgiou 2019 (Gd-DOTA) 0.1 in patients, Weinmann 1984 / Tofts & Kermode (Gd-DTPA) 0.1 (its D),
#: Fritz-Hansen 1996 0.1 (the amplitudes are already mM at that dose), McGrath 2009 0.1 in the rat. A protocol
#: with another dose scales the curve by dose / this (:mod:`BBBAnomalyLib.dce.aif_dose`).
MODEL_DOSE_MMOL_PER_KG = {"parker": 0.1, "georgiou": 0.1, "fritz-hansen": 0.1, "weinmann": 0.1, "mcgrath": 0.1}


def plasma_population_aif(name: str, t_minutes, hematocrit: float, delay: float = 0.0) -> np.ndarray:
    """Plasma Cp [mM] of the named population AIF at `t_minutes` (delay in minutes): blood curves
    (Parker, Georgiou, McGrath) are divided by (1 - Hct); Weinmann and Fritz-Hansen are plasma already."""
    from ..core.errors import InputError

    if name not in POPULATION_AIFS:
        raise InputError(f"population AIF {name!r} is not known; use one of {', '.join(POPULATION_AIFS)}")
    function, plasma = POPULATION_AIFS[name]
    curve = function(t_minutes, delay=delay)
    return curve if plasma else curve / (1.0 - hematocrit)
