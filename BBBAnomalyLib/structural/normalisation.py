"""Histogram-mode intensity normalisation of the seed (cbsi-contrast-free-bbb-status, Methods).

Per volume, inside the brain: the mode v̂ of a 254-bin histogram, the robust deviation
φ = sqrt(mean((v̂ - v)²)), then ``(v - v̂) / φ · c + v0`` clipped to [0, 255] and mapped to [-1, 1].
(c, v0) = (30, 75) for T2-FLAIR and (31, 99) for T1 and T1Gd. The mode (normal white matter in
a T1, the brain parenchyma in a FLAIR) lands on v0 whatever the scanner's scale; a synthetic
T1Gd is returned on the same [0, 255] scale (it has no scanner units to go back to).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError

#: (c, v0) per contrast, from the seed.
CONSTANTS = {"flair": (30.0, 75.0), "t1": (31.0, 99.0), "t1gd": (31.0, 99.0)}
BINS = 254


def histogram_mode(values: np.ndarray, bins: int = BINS) -> float:
    """Centre of the fullest bin of a ``bins``-bin histogram over [min, max] of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise InputError("the brain mask is empty: nothing to normalise")
    counts, edges = np.histogram(values, bins=bins)
    i = int(np.argmax(counts))
    return float(0.5 * (edges[i] + edges[i + 1]))


def normalise_0_255(data: np.ndarray, brain: np.ndarray, contrast: str) -> np.ndarray:
    """The seed's steps 1-5: float32 on [0, 255], 0 outside the brain. ``data`` is not modified."""
    try:
        c, v0 = CONSTANTS[contrast]
    except KeyError:
        raise ValueError(f"contrast must be one of {', '.join(CONSTANTS)}") from None
    values = np.asarray(data)[brain].astype(np.float64)  # not a float64 copy of the whole grid (issue 17)
    if not np.isfinite(values).all():
        raise InputError(f"the {contrast.upper()} has NaN or infinite values inside the brain; replace them "
                         "(e.g. with 0) or give a brain mask that excludes them")
    if values.size == 0 or values.max() == values.min():
        raise InputError(f"the {contrast.upper()} is constant (or empty) inside the brain mask; check the image and the mask")
    mode = histogram_mode(values)
    phi = float(np.sqrt(np.mean((mode - values) ** 2)))
    if phi <= 0:
        raise InputError(f"the {contrast.upper()} is constant inside the brain mask; check the image and the mask")
    out = np.zeros(np.shape(data), np.float32)
    out[brain] = np.clip((values - mode) / phi * c + v0, 0.0, 255.0)
    return out


def to_unit(data_0_255: np.ndarray) -> np.ndarray:
    """Step 6: [0, 255] -> [-1, 1] (x / 255 * 2 - 1 in float32; the steps after the first in place: one new
    array instead of three, issue 17)."""
    out = np.asarray(data_0_255, np.float32) / 255.0
    out *= 2.0
    out -= 1.0
    return out


def from_unit(data_unit) -> np.ndarray:
    """Step 7: [-1, 1] -> [0, 255] ((x + 1) / 2 * 255 in float32, in place after the first step)."""
    out = np.asarray(data_unit, np.float32) + 1.0
    out /= 2.0
    out *= 255.0
    return out


def normalise(data: np.ndarray, brain: np.ndarray, contrast: str) -> np.ndarray:
    """Steps 1-6: the network's input on [-1, 1]; -1 outside the brain (to_unit's float32 steps, in place on the
    0-255 array this function made: one volume, issue 17)."""
    out = normalise_0_255(data, brain, contrast)
    out /= 255.0
    out *= 2.0
    out -= 1.0
    return out
