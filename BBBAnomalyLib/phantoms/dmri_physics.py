"""Voxel-level diffusion forward model for the diffusion phantoms, independent of the pipeline.

Signal of a voxel with compartment fractions f_c, proton densities/T2 weights S0_c and
cylindrically symmetric tensors D_c = λ⊥ I + (λ∥ − λ⊥) e eᵀ:

    S(b, g) = Σ_c f_c S0_c exp(−b (λ⊥_c + (λ∥_c − λ⊥_c) (g·e_c)²))

White matter is anisotropic along a smooth orientation field; grey matter, CSF and tumor core
are isotropic (λ∥ = λ⊥). Magnitude images get Rician noise. Units: mm²/s and s/mm².
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy import ndimage

# Healthy adult values at 3 T (mm²/s): WM λ∥ 1.7e-3, λ⊥ 0.35e-3 (FA ≈ 0.75, MD ≈ 0.8e-3),
# cortex MD 0.85e-3, CSF 3.0e-3 (free water at 37 °C). b0 weights from T2 at TE ≈ 80 ms.
WM_AXIAL, WM_RADIAL, GM_MD, CSF_MD = 1.7e-3, 0.35e-3, 0.85e-3, 3.0e-3
S0 = {"wm": 1.0, "gm": 1.15, "csf": 2.0}


def tensor_signal(bvals: np.ndarray, directions: np.ndarray, axial: np.ndarray, radial: np.ndarray,
                  orientation: np.ndarray | None = None) -> np.ndarray:
    """(n_voxels, n_volumes) attenuation of cylindrically symmetric tensors.

    axial, radial: (n_voxels,) diffusivities; orientation: (n_voxels, 3) unit vectors (None = isotropic).
    """
    bvals = np.asarray(bvals, np.float64)
    radial = np.asarray(radial, np.float64)[:, None]
    if orientation is None:
        return np.exp(-bvals[None, :] * radial).astype(np.float32)
    cos2 = (np.asarray(orientation) @ np.nan_to_num(directions).T) ** 2
    adc = radial + (np.asarray(axial, np.float64)[:, None] - radial) * cos2
    return np.exp(-bvals[None, :] * adc).astype(np.float32)


def fractional_anisotropy(axial, radial) -> np.ndarray:
    axial, radial = np.asarray(axial, np.float64), np.asarray(radial, np.float64)
    md = (axial + 2 * radial) / 3
    num = np.sqrt((axial - md) ** 2 + 2 * (radial - md) ** 2)
    den = np.sqrt(axial ** 2 + 2 * radial ** 2)
    return np.where(den > 0, np.sqrt(1.5) * num / np.maximum(den, 1e-12), 0.0)


def orientation_field(points_mm: np.ndarray, rng: np.random.Generator, grid_shape=None,
                      grid_index: np.ndarray | None = None, voxel_mm: float = 2.0) -> np.ndarray:
    """Unit fibre directions at MNI-space points (n, 3), smooth in space.

    A coarse map of the main systems: corpus callosum (left–right, near the midline above the
    ventricles), corticospinal tract and corona radiata (superior–inferior, lateral to the
    ventricles, down to the brainstem), association fibres (anterior–posterior elsewhere), plus a
    subject-specific smooth random perturbation (Gaussian-filtered noise, σ 8 mm) so that no two
    subjects share a field. Not an atlas: a plausible, smooth field with the right broad layout.
    """
    x, y, z = np.asarray(points_mm, np.float64).T
    callosal = np.exp(-x ** 2 / (2 * 14.0 ** 2)) * np.exp(-(z - 18.0) ** 2 / (2 * 10.0 ** 2)) * (np.abs(y + 5) < 45)
    projection = np.exp(-(np.abs(x) - 24.0) ** 2 / (2 * 9.0 ** 2)) * np.exp(-(y + 15.0) ** 2 / (2 * 18.0 ** 2))
    brainstem = np.exp(-x ** 2 / (2 * 10.0 ** 2)) * (z < -10) * np.exp(-(y + 25) ** 2 / (2 * 12.0 ** 2))
    association = 0.6 * np.ones_like(x)
    field = (3.0 * callosal[:, None] * [1.0, 0.0, 0.0] + 2.0 * (projection + brainstem)[:, None] * [0.0, 0.0, 1.0]
             + association[:, None] * [0.0, 1.0, 0.0])
    # lateral fanning of the corona radiata: tilt outward above the ventricles
    field[:, 0] += 0.5 * projection * np.sign(x) * (z > 10)
    if grid_shape is not None and grid_index is not None:
        sigma = 8.0 / voxel_mm
        for axis in range(3):
            noise = ndimage.gaussian_filter(rng.standard_normal(grid_shape), sigma)
            noise /= noise.std() + 1e-12
            field[:, axis] += 0.35 * noise[tuple(grid_index.T)]
    return field / np.maximum(np.linalg.norm(field, axis=1, keepdims=True), 1e-9)


def gradient_table(n_directions: int, rng: np.random.Generator, b_value: float = 1000.0, n_b0: int = 1,
                   jitter: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(bvals, RAS directions) with the b0 volumes first: an evenly spread set, randomly rotated,
    with b-values scattered by ``jitter`` as scanners report them."""
    from ..dmri.gradients import canonical_directions

    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    dirs = canonical_directions(n_directions) @ rotation.T
    bvals = np.r_[np.zeros(n_b0), b_value * (1 + jitter * rng.uniform(-1, 1, n_directions))]
    return bvals, np.r_[np.zeros((n_b0, 3)), dirs]


@contextlib.contextmanager
def gradient_table_as(bvals, bvecs):
    """Within the block, make_dmri_phantom acquires with this table (b-values, RAS directions) instead of its own.
    The replacement draws the same numbers from the phantom's generator as :func:`gradient_table` (a 3x3 normal,
    then the b jitter), so the subject, tumour and bias field stay those of the same seed (audit scripts and tests
    of unusual tables and of motion)."""
    global gradient_table
    original = gradient_table

    def replacement(n_directions, rng, b_value=1000.0, n_b0=1, jitter=0.01):
        rng.standard_normal((3, 3))
        rng.uniform(-1, 1, n_directions)
        return np.asarray(bvals, float), np.asarray(bvecs, float)

    gradient_table = replacement
    try:
        yield
    finally:
        gradient_table = original


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of signal plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
