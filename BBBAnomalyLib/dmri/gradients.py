"""Gradient tables: frames, shell selection and spherical-harmonic resampling to the model's set.

What is supported (and what is refused, with the reason):

* at least one b0 volume (b < ``b0_threshold``, 150 s/mm² by default); several are averaged;
* one shell within ``±shell_tolerance`` (30 %) of the model's b-value (1000 s/mm²); its attenuation
  is rescaled mono-exponentially to b = 1000, ``(S/S0) ** (1000 / (b - b0_b))``, per volume (so b-values that
  scatter around the nominal shell, as in dipy's 64-direction crop, are exact; ``b0_b`` is the b0 volumes' own
  mean b, 0 unless a protocol acquires its reference at b = 5-50). Other shells of a
  multi-shell acquisition are ignored with a warning; an acquisition without such a shell (e.g. a
  b = 2000-only scan) is refused;
* at least ``min_directions`` unique directions (antipodal pairs count once) that span the sphere:
  with 15 or more the signal is fitted with real symmetric spherical harmonics of order 6 (28 coefficients)
  when there are 28 or more directions, else order 4 (15), with Laplace–Beltrami regularisation
  (λ = 0.001; Descoteaux 2007), and evaluated on the model's canonical directions; with 6-14 (clinical DTI
  protocols) through a log-linear diffusion-tensor fit instead (:mod:`.tensor_resampling`, with a warning:
  crossing fibres are not represented). Fewer than 6 cannot determine a tensor and are refused; the line of a
  clinical 3-direction ("3-scan trace") or b0 + trace-only series says what it is and what to use instead
  (:mod:`.clinical_dwi`).

Gradient directions are used in world RAS. Slicer's DWI nodes give RAS; FSL ``.bvec`` files are
in the image's axes with x flipped when the affine's determinant is positive: :func:`to_ras`
converts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from . import tensor_resampling as tensor
from .clinical_dwi import ALTERNATIVES, directionless_shell, too_few_volumes

SH_LAMBDA = 0.001  # Laplace-Beltrami weight: 0.006 (dipy's ODF default) biases exp(-bD) by ~0.02-0.05 in S/S0
DUPLICATE_DEGREES = 3.0  # directions closer than this (or to each other's antipode) count once
SH_MIN_DIRECTIONS = 15  # order-4 spherical harmonics have 15 coefficients; fewer go through a tensor
#: The fewest unique directions accepted by default: 6-14 go through a tensor, chosen by a rule written before the
#: held-apart phantom patients (docs/reliability.md, session 20; scripts/dmri_unusual_acquisitions.py --few-directions).
DEFAULT_MIN_DIRECTIONS = 6


def canonical_directions(n: int = 64) -> np.ndarray:
    """``n`` unit vectors spread evenly over the half sphere (electrostatic repulsion with antipodes).

    Deterministic (no random start: a Fibonacci half-sphere, then fixed repulsion steps), so the
    same set comes back everywhere; the model card stores the set it was trained with anyway.
    """
    k = np.arange(n) + 0.5
    z = 1.0 - k / n  # upper hemisphere
    phi = np.pi * (1 + 5 ** 0.5) * k
    r = np.sqrt(1 - z ** 2)
    v = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    for _ in range(200):
        both = np.concatenate([v, -v])
        diff = v[:, None, :] - both[None, :, :]
        dist = np.linalg.norm(diff, axis=2)
        dist[np.arange(n), np.arange(n)] = np.inf
        force = (diff / dist[..., None] ** 3).sum(axis=1)
        force -= (force * v).sum(axis=1, keepdims=True) * v  # tangential part only
        v = v + 0.01 * force / np.abs(force).max()
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(v[:, 2:3] < 0, -v, v)


def to_ras(bvecs: np.ndarray, affine: np.ndarray, frame: str) -> np.ndarray:
    """Gradient directions in world RAS from ``frame`` 'ras' (unchanged) or 'fsl' (image axes)."""
    g = np.asarray(bvecs, dtype=np.float64).copy()
    if str(getattr(frame, "value", frame)) == "ras":
        return g
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    if np.linalg.det(linear) > 0:  # FSL stores bvecs for a radiological (x-flipped) voxel order
        g[:, 0] = -g[:, 0]
    axes = linear / np.linalg.norm(linear, axis=0, keepdims=True)  # voxel axes in RAS (rotation + flips)
    return g @ axes.T


@dataclass
class Shell:
    """The volumes the model uses: b0 indices, the shell's indices, their b-values and RAS directions."""

    b0: np.ndarray
    index: np.ndarray
    bvals: np.ndarray
    directions: np.ndarray
    nominal_b: float
    unique_directions: int
    warnings: list[str] = field(default_factory=list)
    b0_b: float = 0.0  # mean b-value of the "b0" volumes (some protocols acquire b = 5-50 instead of 0)

    @property
    def resampling(self) -> str:
        """How the shell reaches the model's directions: "spherical harmonics" or "tensor" (6-14 directions)."""
        return resampling_for(self.unique_directions)

    def to_json(self) -> dict:
        sh = self.resampling == "spherical harmonics"
        return {"b0_volumes": int(self.b0.size), "b0_b": round(self.b0_b, 1), "shell_volumes": int(self.index.size),
                "shell_b": round(self.nominal_b, 1), "unique_directions": self.unique_directions,
                "sh_order": sh_order_for(self.unique_directions) if sh else None, "resampling": self.resampling}


def select_shell(bvals, bvecs, *, target_b: float, b0_threshold: float, tolerance: float,
                 min_directions: int) -> Shell:
    """The b0 volumes and the one shell near ``target_b``; InputError naming what is missing."""
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    if bvecs is None:
        few = too_few_volumes(bvals, target_b, b0_threshold, tolerance, tensor.TENSOR_MIN_DIRECTIONS)
        if few:  # a b0 + trace series: no table of directions could make it usable, so say that, not "give --bvec"
            raise InputError(few)
        raise InputError("the DWI has b-values but no gradient directions; give --bvec FILE (FSL format, 3 rows)")
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvecs.shape != (bvals.size, 3):
        raise InputError(f"{bvals.size} b-values but gradient table of shape {bvecs.shape}; "
                         "bval and bvec must describe the same volumes, one direction per volume")
    if not np.isfinite(bvals).all() or (bvals < 0).any():
        raise InputError("the b-values contain NaN, infinite or negative values; check the bval file")
    b0 = np.flatnonzero(bvals < b0_threshold)
    if b0.size == bvals.size and bvals.max() > 0:  # every volume a "b0": b-values in ms/µm² (1.0 for 1000)?
        units = ("they look like ms/µm² (b = 1.0 is 1000 s/mm²): multiply the bval file by 1000"
                 if bvals.max() <= 10 else "there is no diffusion-weighted volume; check the bval file")
        raise InputError(f"every b-value is below the b0 threshold {b0_threshold:g} s/mm² (largest "
                         f"{bvals.max():g}): the bval file must hold s/mm² (b0 = 0, the shell about 1000); {units}")
    if b0.size == 0:
        raise InputError(f"no b0 volume (b < {b0_threshold:g} s/mm²) among b-values {_shells(bvals)}: "
                         "S/S0 needs at least one non-diffusion-weighted volume")
    weighted = bvals >= b0_threshold
    norms = np.linalg.norm(np.nan_to_num(bvecs), axis=1)  # b0 rows may be NaN (dipy's crop) or zero
    low, high = target_b * (1 - tolerance), target_b * (1 + tolerance)
    on_shell = weighted & (bvals >= low) & (bvals <= high)
    if not on_shell.any():
        lengths = norms[weighted & (norms > 1e-6)]
        scaled = (f" The gradient vectors are {lengths.min():.2f}-{lengths.max():.2f} long: if their lengths encode the "
                  "b-value (b·|g|², as DWMRI NRRD and some vendor tables do), write each volume's own b-value in the "
                  "bval file and unit vectors in the bvec file." if lengths.size and np.ptp(lengths) > 0.1 else "")
        raise InputError(f"no shell near b = {target_b:g} s/mm² (accepted {low:g}–{high:g}); this acquisition has "
                         f"b = {_shells(bvals)}. The models were trained on b ≈ {target_b:g} single-shell data; "
                         "acquire (or extract) a b ≈ 1000 shell, or train a model on your own b-value with "
                         f"`bbbanomaly train dmri-vae`.{scaled}")
    directionless = on_shell & (~np.isfinite(bvecs).all(axis=1) | (norms < 0.5))
    if directionless[on_shell].all():  # b0 + trace-weighted images only: the clinical 3-direction DWI's export
        raise InputError(directionless_shell(int(on_shell.sum()), target_b))
    warnings = []
    if directionless.any():
        # Siemens' trace-weighted (TRACEW) and Philips' isotropic image: the mean of the shell's volumes, stored at
        # the shell's b with a zero vector. It carries no direction for the SH fit; an ordinary series holding one
        # was refused, though its other volumes are complete.
        on_shell &= ~directionless
        warnings.append(f"{int(directionless.sum())} volume(s) at b ≈ {target_b:g} have no gradient direction (a zero "
                        "or NaN bvec: a trace-weighted/isotropic image as Siemens and Philips series carry, or a b0 "
                        "with a wrong b-value) and were left out")
    ignored = weighted & ~on_shell & ~directionless
    if ignored.any():
        warnings.append(f"{int(ignored.sum())} diffusion-weighted volumes outside the b ≈ {target_b:g} shell "
                        f"(b = {_shells(bvals[ignored])}) were ignored: the model uses one shell")
    index = np.flatnonzero(on_shell)
    directions = bvecs[index] / norms[index, None]
    if (np.abs(norms[index] - 1) > 0.1).any():  # FSL bvecs are unit vectors; some tables scale b by |g|²
        warnings.append(f"the gradient directions of the shell are not unit vectors (lengths {norms[index].min():.2f}-"
                        f"{norms[index].max():.2f}); they were normalised and b taken from the bval file as it is. "
                        "If the lengths encode the b-value (b·|g|²), give the b-values per volume in the bval file")
    unique = count_unique(directions)
    if unique < max(min_directions, tensor.TENSOR_MIN_DIRECTIONS):
        raise InputError(too_few_directions(unique, min_directions, target_b))
    nominal = float(np.median(bvals[index]))
    if abs(nominal - target_b) > 0.05 * target_b:
        warnings.append(f"shell b = {nominal:g} s/mm² rescaled to b = {target_b:g} assuming mono-exponential decay")
    if resampling_for(unique) == "tensor":
        spans = tensor.design_condition(directions) <= tensor.MAX_CONDITION
    else:
        spans = np.linalg.cond(sh_basis(directions, sh_order_for(unique))) <= 1e4
    if not spans:
        raise InputError("the gradient directions do not span the sphere (e.g. all in one plane); the signal "
                         "cannot be resampled to the model's directions")
    return Shell(b0, index, bvals[index], directions, nominal, unique, warnings, float(bvals[b0].mean()))


def too_few_directions(unique: int, min_directions: int, target_b: float) -> str:
    """The refusal's line for a shell of ``unique`` directions under ``min_directions``."""
    if unique < tensor.TENSOR_MIN_DIRECTIONS:  # a 3-direction ("3-scan trace") clinical DWI: what it is, what instead
        return (f"the b ≈ {target_b:g} shell has {unique} unique gradient directions; at least "
                f"{tensor.TENSOR_MIN_DIRECTIONS} are needed to resample it to the model's directions (a diffusion "
                f"tensor has 6 unknowns; {SH_MIN_DIRECTIONS} for spherical harmonics). {ALTERNATIVES}")
    return (f"the b ≈ {target_b:g} shell has {unique} unique gradient directions; this run asks for at least "
            f"{min_directions} (min_directions). The default ({DEFAULT_MIN_DIRECTIONS}) resamples 6-14 directions "
            "through a diffusion tensor, with a warning; lower DMRIParameters.min_directions to run it")


def resampling_for(n_unique: int) -> str:
    return "spherical harmonics" if n_unique >= SH_MIN_DIRECTIONS else "tensor"


def count_unique(directions: np.ndarray) -> int:
    cos = np.abs(directions @ directions.T)
    close = cos > np.cos(np.radians(DUPLICATE_DEGREES))
    keep = ~np.triu(close, k=1).any(axis=0)  # a direction counts unless an earlier one matches it
    return int(keep.sum())


def sh_order_for(n_unique: int) -> int:
    return 6 if n_unique >= 28 else 4


def _spherical_harmonic():
    """scipy's Y_n^m as ``f(degree, order, polar, azimuth)``.

    Why two names: scipy 1.15 added ``sph_harm_y(n, m, polar, azimuth)`` and 1.17 removed the older
    ``sph_harm(m, n, azimuth, polar)`` (other argument order, the same function). Slicer 5.10 ships scipy 1.13,
    which has only the older one, and runs the dMRI pipeline with its own scipy.
    """
    import scipy.special

    if hasattr(scipy.special, "sph_harm_y"):
        return scipy.special.sph_harm_y
    older = scipy.special.sph_harm
    return lambda degree, order, polar, azimuth: older(order, degree, azimuth, polar)


def sh_basis(directions: np.ndarray, order: int) -> np.ndarray:
    """Real symmetric spherical harmonics (even degrees up to ``order``) at unit ``directions``: (n, n_coef)."""
    sph_harm_y = _spherical_harmonic()

    x, y, z = np.asarray(directions, dtype=np.float64).T
    polar = np.arccos(np.clip(z, -1, 1))
    azimuth = np.arctan2(y, x)
    columns = []
    for degree in range(0, order + 1, 2):
        for m in range(-degree, degree + 1):
            ylm = sph_harm_y(degree, abs(m), polar, azimuth)
            if m < 0:
                columns.append(np.sqrt(2) * ylm.imag)
            elif m == 0:
                columns.append(ylm.real)
            else:
                columns.append(np.sqrt(2) * ylm.real)
    return np.stack(columns, axis=1)


def resampling_matrix(directions_in: np.ndarray, directions_out: np.ndarray, order: int,
                      regularisation: float = SH_LAMBDA) -> np.ndarray:
    """(n_out, n_in) matrix taking signals on ``directions_in`` to ``directions_out`` through a
    regularised SH fit: one matrix product per voxel chunk instead of a fit per voxel."""
    basis_in = sh_basis(directions_in, order)
    degrees = np.concatenate([[d] * (2 * d + 1) for d in range(0, order + 1, 2)])
    penalty = np.diag((degrees * (degrees + 1.0)) ** 2)
    fit = np.linalg.solve(basis_in.T @ basis_in + regularisation * penalty, basis_in.T)  # (n_coef, n_in)
    return sh_basis(directions_out, order) @ fit


def _shells(bvals: np.ndarray) -> str:
    rounded = np.unique(np.round(np.asarray(bvals) / 50.0) * 50.0)
    return ", ".join(f"{b:g}" for b in rounded)


def to_fsl(bvecs_ras: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_ras` for 'fsl': RAS directions as an FSL ``.bvec`` file holds them."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    axes = linear / np.linalg.norm(linear, axis=0, keepdims=True)
    g = np.nan_to_num(np.asarray(bvecs_ras, dtype=np.float64)) @ np.linalg.inv(axes).T
    if np.linalg.det(linear) > 0:
        g[:, 0] = -g[:, 0]
    return g
