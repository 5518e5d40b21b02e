"""Population arterial input functions (whole-blood gadolinium concentration, mM; time in minutes).

Used when no arterial voxel can be measured (DCE with a population AIF) and by the phantoms. Both
functions return *blood* concentration; divide by (1 - Hct) for plasma (see METHODS.md: forgetting it
scales Ktrans by ~1.8). Both are verified against the OSIPI DCE-DSC-MRI code collection's reference
values (Testing/Data/osipi/, Apache-2.0).

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
