"""Synthetic T1Gd that cannot do worse than doing nothing: T1 + a shrunk enhancement estimate.

The diffusion model is sampled with both ET labels and several starting noises. On the seed's
0-255 normalised scale (T1 and T1Gd share its constants, so the normalised T1 *is* the "no
contrast" prediction) each sample's change from the T1 is a guess at the enhancement:

* per label l (0 = non-enhancing, 1 = enhancing): mean change mu_l and its spread w_l across the
  noise samples;
* with p = p(disrupted) from the BBB identifier, the expected change is
  ``E = p mu_1 + (1 - p) mu_0`` and its variance ``V = p w_1 + (1 - p) w_0 + p (1 - p) (mu_1 - mu_0)^2``
  (the law of total variance: the noise samples within a label, plus the disagreement between the
  labels where the status is unsure);
* gadolinium only shortens T1, so the enhancement is ``max(E, 0)``;
* it is shrunk towards zero where it is not larger than its own spread (positive-part
  James-Stein form): ``added = max(E, 0) * max(0, 1 - k V / E^2)``, and set to zero below
  ``MIN_ENHANCEMENT`` = 6 units (a fifth of the normalised T1's robust sd of 31 units: image noise).
  The pipeline's default k = band_high / (1 - band_high) (1.86 for the 0.35-0.65 band): when only
  the ET+ synthesis predicts a change (mu_0 = 0, no sampler spread), the factor is
  1 - k (1 - p) / p, which is 0 for every p(disrupted) up to the band's upper edge, so no
  enhancement is painted unless the status is confidently "disrupted" (or both labels agree on it).

Where the model is unsure (labels disagree, samples scatter, or the change is small) the added
enhancement is 0 and the synthetic T1Gd equals the normalised T1 exactly: the plain-T1 baseline.
Wrong confident changes can still cost; docs/validation.md measures both against the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .normalisation import from_unit

#: Enhancements below this (0-255 scale) are not added: the noise of a normalised image.
MIN_ENHANCEMENT = 6.0


@dataclass
class EnhancementEstimate:
    """All on the network grid (n_slices, H, W), 0-255 units."""

    expected: np.ndarray  # E (signed)
    spread: np.ndarray  # sqrt(V)
    if_enhancing: np.ndarray  # mu_1: the change the model predicts if the tumor enhanced
    added: np.ndarray  # the shrunk, non-negative enhancement that the synthetic T1Gd adds to the T1


def estimate_enhancement(samples: np.ndarray, network_t1: np.ndarray, p_disrupted: float,
                         shrinkage: float = 1.0, floor: float = MIN_ENHANCEMENT) -> EnhancementEstimate:
    """``samples``: (K, 2, n, H, W) syntheses on [-1, 1] ([:, 0] non-enhancing, [:, 1] enhancing);
    ``network_t1``: (n, H, W) on [-1, 1]. See the module docstring for the equations."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 5 or samples.shape[1] != 2:
        raise ValueError("samples must be (K, 2, n, H, W): K noise samples of both ET labels")
    if not 0.0 <= p_disrupted <= 1.0:
        raise ValueError("p_disrupted must lie in [0, 1]")
    change = from_unit(samples) - from_unit(network_t1)[None, None]
    mu = change.mean(axis=0)  # (2, n, H, W)
    within = change.var(axis=0, ddof=1) if change.shape[0] > 1 else np.zeros_like(mu)
    p = float(p_disrupted)
    expected = p * mu[1] + (1 - p) * mu[0]
    variance = p * within[1] + (1 - p) * within[0] + p * (1 - p) * (mu[1] - mu[0]) ** 2
    positive = np.maximum(expected, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(positive > 0, np.clip(1.0 - shrinkage * variance / np.maximum(positive, 1e-6) ** 2, 0, 1), 0.0)
    added = np.where(positive >= floor, positive * factor, 0.0)
    return EnhancementEstimate(expected.astype(np.float32), np.sqrt(variance).astype(np.float32),
                               mu[1].astype(np.float32), added.astype(np.float32))


def native_synthesis(grid, estimate: EnhancementEstimate, native_t1_0255: np.ndarray, brain: np.ndarray):
    """(synthetic T1Gd, enhancement added, its spread) on the native T1 grid, 0-255 scale, 0 off the brain.

    The synthetic T1Gd is the native-resolution normalised T1 plus the added enhancement brought
    back from the network grid: where nothing is added it equals the T1 voxel for voxel."""
    added = np.where(brain, np.maximum(grid.to_native(estimate.added, fill=0.0), 0.0), 0.0)
    spread = np.where(brain, np.maximum(grid.to_native(estimate.spread, fill=0.0), 0.0), 0.0)
    synthetic = np.where(brain, np.clip(native_t1_0255 + added, 0.0, 255.0), 0.0)
    return synthetic.astype(np.float32), added.astype(np.float32), spread.astype(np.float32)
