"""What the commonest clinical DWI cannot give, said as such (session 23).

The usual glioma DWI is not DTI: a 3-direction ("3-scan trace") acquisition at b = 0 and 1000 (often also 50 or
500), exported as the three directions, or as the b0 and the trace-weighted (isotropic) image only, with the
scanner's ADC map. It measures the mean diffusivity, not how the signal changes with direction, which is what the
anomaly models read (their input is S/S0 on 64 directions, reached from >= 6 through a tensor). Those series are
refused; these lines say why in the user's terms and what can be done instead, instead of a bare direction count or
"check the bvec file".

Also here: a "b0" that is diffusion-weighted. A DWMRI NRRD gives each volume b = b_max·|g|², so a trace-weighted
volume saved with a zero gradient (as an FSL series holding Siemens' TRACEW or Philips' isotropic image becomes when
saved as NRRD) reads as a b0, and its ~0.45x signal was averaged into S0 (every S/S0 raised).
"""

from __future__ import annotations

import numpy as np

#: What the user of a 3-direction or trace-only DWI can do instead (the project has no learned ADC-only method).
ALTERNATIVES = ("A 3-direction ('3-scan trace') or trace-only DWI, the usual clinical one, measures the mean "
                "diffusivity (the scanner's ADC map) but not the direction dependence the anomaly model reads: give "
                "the patient's DTI series (6 or more directions at b ≈ 1000) if one was acquired, read the scanner's "
                "ADC map as it is, or map anomalies from T1 and FLAIR with `bbbanomaly t1flair`")

#: A "b0" whose brain median is below this fraction of the brightest b0's is diffusion-weighted: a trace image at
#: b = 1000 reads ~0.45 in tissue (exp(-0.8)); b0s differ by drift (a few %), a b = 50 reference by exp(-0.04).
B0_CONSISTENT_FRACTION = 0.8


def too_few_volumes(bvals, target_b: float = 1000.0, b0_threshold: float = 150.0, tolerance: float = 0.3,
                    needed: int = 6) -> str | None:
    """The refusal for a series with fewer than ``needed`` volumes near ``target_b`` (no table of directions can
    rescue it), else None. Used where the directions are missing: the count alone decides."""
    b = np.asarray(bvals, np.float64).ravel()
    near = int(((b >= b0_threshold) & (b >= target_b * (1 - tolerance)) & (b <= target_b * (1 + tolerance))).sum())
    if 0 < near < needed:
        return (f"the series has {near} diffusion-weighted volume(s) at b ≈ {target_b:g} s/mm² (b-values "
                f"{_listed(b)}); the anomaly model needs at least {needed} gradient directions there. {ALTERNATIVES}")
    return None


def directionless_shell(n_volumes: int, target_b: float) -> str:
    """The refusal for a shell whose every volume has a zero or NaN direction (b0 + trace-weighted images)."""
    return (f"the {n_volumes} volume(s) at b ≈ {target_b:g} s/mm² have a zero or NaN gradient direction: "
            "trace-weighted (isotropic) images, as a clinical DWI exported as b0 + trace carries (or a wrong bvec "
            f"file). {ALTERNATIVES}")


def inconsistent_b0s(medians: np.ndarray) -> np.ndarray:
    """Indices (into ``medians``, the b0 volumes' brain medians) of "b0"s that are diffusion-weighted."""
    medians = np.asarray(medians, np.float64)
    return np.flatnonzero(medians < B0_CONSISTENT_FRACTION * medians.max())


def dropped_b0_warning(volumes, fractions) -> str:
    listed = ", ".join(f"{int(v)} ({100 * f:.0f} %" for v, f in zip(volumes, fractions))
    return (f"volume(s) {listed} of the brightest b0's brain signal) are stored as b0 but are diffusion-weighted (a "
            "trace-weighted image saved with a zero gradient, as a DWMRI NRRD makes of one, or a wrong b-value): they "
            "were left out of S0. Give their b-value in the table, or remove them, to silence this")


def _listed(bvals: np.ndarray) -> str:
    rounded = np.unique(np.round(bvals / 50.0) * 50.0)
    return ", ".join(f"{v:g}" for v in rounded)
