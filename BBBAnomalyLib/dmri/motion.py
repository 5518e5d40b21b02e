"""Head motion between the volumes of a diffusion series: detection and rigid correction.

Clinical DTI/HARDI series are usually stored without motion correction, and patients move 1-3 mm / 1-3° between
volumes. The pipeline reads every volume at the same voxel, so a voxel at a tissue/CSF edge mixes two tissues
(docs/reliability.md, session 21). Here each diffusion-weighted (DW) volume is registered rigidly
(:func:`BBBAnomalyLib.core.registration.register_rigid`, Mattes mutual information inside the dilated brain) to
the mean of the shell's DW volumes, then that mean to the first b0: every volume ends in the first b0's frame,
which is the frame the maps are written on. Registering each DW volume straight to the b0 was measured and not
used: on the motion-free phantom patient 1000 it put the volumes 0.63 mm (median of the largest error over the brain;
0.73 at most) from where they were, the DW-to-mean-DW route 0.3-0.45 mm, a DW volume to another 0.14 mm: a single
direction's contrast (CSF dark, white matter bright or dark with its fibres) differs from the b0's (CSF bright) far
more than from the mean DW's. Extra b0 volumes are registered to the first b0. It is an option (``--motion-correct
rigid``), not the default: see :class:`.parameters.DMRIParameters`.

A rotated head also rotates the gradient directions relative to the tissue: the signal of volume i is the one
measured along ``R_i^T g_i`` in the head's frame (Leemans & Jones 2009, "The B-matrix must be rotated when
correcting for subject motion in DTI data"). :func:`rotated_bvecs` applies that to the RAS table.

Volumes whose largest displacement inside the brain stays under ``APPLY_VOXELS`` of a voxel are left exactly as
they are (not resampled: such an estimate is within the registration's own scatter and resampling would only blur),
so a motion-free series gives the same map bit for bit with correction on or off. The input Volume is never
modified.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.registration import RigidFit, register_rigid, resample_rigid
from ..core.volume import Volume

#: A volume is resampled only when some brain voxel moved more than this many voxels (the largest voxel side).
#: Motion-free phantoms: the estimate's largest displacement is 0.23 mm (2.5 mm voxels, 64 directions) and 0.18-0.44
#: mm (4 mm, 6 directions: each direction's contrast further from the mean's), i.e. up to 0.11 voxel.
APPLY_VOXELS = 0.15
#: The warning: a volume whose brain moved more than this many voxels at some brain voxel: its voxels no longer
#: overlap their own places, and large between-volume motion comes with motion during the volume (slice-wise), which
#: a rigid per-volume correction cannot undo. No between-volume motion up to 17 mm changed the corrected phantom
#: maps, so the threshold is not from the phantoms (docs/reliability.md, session 21).
WARN_VOXELS = 1.0
#: The brain mask is dilated by this (mm) for the metric: the brain's outer edge carries most of the information.
MASK_MARGIN_MM = 5.0
#: The pyramid's two levels in mm (voxel side x shrink factor, at least the native voxel): ~10 and ~5 mm. On the
#: 2.5 mm phantoms (shrink 4, 2) the per-volume error was the same as register_rigid's default 4/2/1 (median 0.39 mm
#: against the true pose, 12 volumes of 2 mm RMS motion) at 0.8 s a volume instead of 2.9 s; on a 4 mm grid the
#: 5 mm level is the native one (shrink 2 there, 8 mm, left the still volumes 1-1.5 mm off).
COARSE_MM, FINE_MM = 10.0, 5.0
SMOOTHING_MM = (2.0, 1.0)


def pyramid(voxel_mm) -> dict:
    """register_rigid's shrink factors and smoothing for these voxels (two levels, ~10 and ~5 mm)."""
    side = float(np.max(voxel_mm))
    fine = max(1, int(np.floor(FINE_MM / side + 1e-6)))
    coarse = max(fine + 1, int(round(COARSE_MM / side)))
    return {"shrink": (coarse, fine), "smoothing_mm": SMOOTHING_MM}
#: The DW volumes' common offset from the b0 is applied only above this many (largest) voxels of displacement:
#: mutual information between a b0 and the mean DW image has its optimum 0.06 mm (2.5 mm voxels, 64 directions) to
#: 0.56 mm (4 mm, 6 directions) away from the truth on motion-free phantoms (noiseless too: the two contrasts'
#: joint histogram, not noise), i.e. up to 0.14 voxel, while DW-to-DW estimates scatter by 0.14 mm.
COMMON_MIN_VOXELS = 0.25


@dataclass
class MotionEstimate:
    """Per-volume rigid transforms (reference = first b0 frame; ``None`` for volumes not registered: the
    reference itself and volumes the pipeline ignores) and what they mean in mm."""

    fits: list  # RigidFit | None per volume
    mean_mm: np.ndarray  # (n_volumes,) mean displacement over the brain (0 where not registered)
    max_mm: np.ndarray  # (n_volumes,) largest displacement over the brain
    rotation_deg: np.ndarray  # (n_volumes,) rotation angle
    voxel_side: float = 0.0  # the largest voxel side (mm): APPLY_VOXELS and WARN_VOXELS are in its units
    seconds: float = 0.0

    @property
    def apply_mm(self) -> float:
        return APPLY_VOXELS * self.voxel_side

    @property
    def warn_mm(self) -> float:
        return WARN_VOXELS * self.voxel_side

    def moved(self) -> np.ndarray:
        return np.flatnonzero(self.max_mm > self.apply_mm)

    def to_json(self, applied: bool) -> dict:
        registered = [i for i, f in enumerate(self.fits) if f is not None]
        return {"method": "rigid, Mattes mutual information: each DW volume to the mean DW, the mean DW and extra "
                          "b0s to the first b0",
                "applied": bool(applied), "apply_threshold_mm": round(self.apply_mm, 3),
                "warn_threshold_mm": round(self.warn_mm, 3),
                "registered_volumes": len(registered),
                "resampled_volumes": [int(i) for i in self.moved()] if applied else [],
                "max_displacement_mm": round(float(self.max_mm.max(initial=0.0)), 3),
                "worst_volume": int(np.argmax(self.max_mm)) if len(self.max_mm) else None,
                "mean_displacement_mm": [round(float(v), 3) for v in self.mean_mm],
                "largest_displacement_mm": [round(float(v), 3) for v in self.max_mm],
                "rotation_deg": [round(float(v), 3) for v in self.rotation_deg],
                "translation_mm": [None if f is None else np.round(f.translation, 3).tolist() for f in self.fits],
                "seconds": round(self.seconds, 2)}


def compose(outer: RigidFit, inner: RigidFit) -> RigidFit:
    """x -> inner(outer(x)): ``outer`` maps the reference to an intermediate frame, ``inner`` that frame to the
    volume (both in array-axis mm). Returned about ``outer``'s centre."""
    c = outer.center
    rotation = inner.rotation @ outer.rotation
    translation = inner.apply(outer.apply(c[None, :]))[0] - c
    return RigidFit(rotation, c.copy(), translation, inner.metric, inner.stop)


def registration_mask(brain: np.ndarray, voxel_mm) -> np.ndarray:
    """The brain dilated by ``MASK_MARGIN_MM`` (an ellipsoidal element in mm): the metric's region."""
    v = np.asarray(voxel_mm, float)[:3]
    r = np.maximum(np.round(MASK_MARGIN_MM / v).astype(int), 1)
    grid = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    element = sum((g / n) ** 2 for g, n in zip(grid, r)) <= 1.0
    return ndimage.binary_dilation(np.asarray(brain, bool), element)


def estimate_motion(data: np.ndarray, voxel_mm, b0_index, weighted_index, brain: np.ndarray, *,
                    threads: int | None = None, seed: int = 1) -> MotionEstimate:
    """Rigid transforms taking the first b0's frame to each volume of ``b0_index`` / ``weighted_index``.
    ``data``: (x, y, z, n) series; ``brain``: a 3D brain mask on its grid (dilated here for the metric)."""
    t0 = time.perf_counter()
    n = data.shape[3]
    v = np.asarray(voxel_mm, float)[:3]
    b0_index, weighted_index = [int(i) for i in b0_index], [int(i) for i in weighted_index]
    region = registration_mask(brain, v)
    fits: list = [None] * n
    reference = data[..., b0_index[0]].astype(np.float32)
    fits[b0_index[0]] = RigidFit.identity(np.argwhere(region).mean(axis=0) * v)
    options = dict(threads=threads, seed=seed, **pyramid(v))
    for i in b0_index[1:]:
        fits[i] = register_rigid(reference, data[..., i], v, region, **options)
    if weighted_index:
        mean_dw = np.zeros(data.shape[:3], np.float32)
        for i in weighted_index:
            mean_dw += data[..., i]
        mean_dw /= len(weighted_index)
        to_mean = [register_rigid(mean_dw, data[..., i], v, region, **options) for i in weighted_index]
        aligned = _aligned_mean(data, v, weighted_index, to_mean)
        # a second pass onto the aligned (sharp) mean, from the first: the plain mean of a series that moved half-way
        # is a double image, and every volume registered to it lands between the two (1.1-1.3 mm of spurious motion
        # on still volumes of a 6-direction phantom with 3 volumes moved 4-9 mm)
        refine = dict(options, shrink=options["shrink"][-1:], smoothing_mm=options["smoothing_mm"][-1:])
        to_mean = [register_rigid(aligned, data[..., i], v, region, initial=fit, **refine)
                   for i, fit in zip(weighted_index, to_mean)]
        # the mean DW's own place relative to the b0 (a step in the series moves the whole mean): it is the mean
        # of the volumes' positions; aligned DW mean -> b0 once, by mutual information (different contrasts)
        aligned = _aligned_mean(data, v, weighted_index, to_mean)
        # the b0 registered onto the aligned mean (fixed = the mean DW), then inverted: the other way round
        # (fixed = b0) Mattes MI's optimum lay 0.42 mm (2.5 mm, 64 directions) and 0.88 mm (4 mm, 6 directions)
        # from the truth on motion-free phantoms, this way 0.06 and 0.56 mm
        # (one registration: the full pyramid, down to the native voxels; without that level 1.1 mm at 4 mm)
        mean_to_b0 = inverse(register_rigid(aligned, reference, v, region, threads=threads, seed=seed))
        if mean_to_b0.displacement_mm(brain, v).max() <= COMMON_MIN_VOXELS * v.max():
            mean_to_b0 = RigidFit.identity(mean_to_b0.center)  # within the b0/DW metric's own bias
        for i, fit in zip(weighted_index, to_mean):
            fits[i] = compose(mean_to_b0, fit)
    mask = np.asarray(brain, bool)
    mean_mm, max_mm, rotation = np.zeros(n), np.zeros(n), np.zeros(n)
    for i, fit in enumerate(fits):
        if fit is None or i == b0_index[0]:
            continue
        d = fit.displacement_mm(mask, v)
        mean_mm[i], max_mm[i], rotation[i] = d.mean(), d.max(), fit.rotation_deg
    return MotionEstimate(fits, mean_mm, max_mm, rotation, float(v.max()), time.perf_counter() - t0)


def inverse(fit: RigidFit) -> RigidFit:
    """T^-1(y) = R^T (y - c - t) + c, about the same centre."""
    return RigidFit(fit.rotation.T, fit.center.copy(), -fit.rotation.T @ fit.translation, fit.metric, fit.stop)


def _aligned_mean(data, voxel_mm, index, fits) -> np.ndarray:
    out = np.zeros(data.shape[:3], np.float32)
    for i, fit in zip(index, fits):
        out += resample_rigid(data[..., i], voxel_mm, fit)
    return out / len(index)


def direction_cosines(affine: np.ndarray) -> np.ndarray:
    """The array axes' unit vectors in world RAS (columns): array-axis mm -> world, without the voxel sizes."""
    linear = np.asarray(affine, float)[:3, :3]
    return linear / np.linalg.norm(linear, axis=0, keepdims=True)


def rotated_bvecs(bvecs_ras: np.ndarray, fits, affine: np.ndarray) -> np.ndarray:
    """Each volume's RAS direction in the reference (head) frame: ``A R_i^T A^T g_i`` with A the direction
    cosines (the registration works in array-axis mm). Volumes without a fit keep their vector."""
    a = direction_cosines(affine)
    out = np.asarray(bvecs_ras, float).copy()
    for i, fit in enumerate(fits):
        if fit is not None:
            out[i] = a @ fit.rotation.T @ a.T @ out[i]
    return out


def corrected_series(dwi: Volume, estimate: MotionEstimate, bvecs_ras: np.ndarray) -> Volume:
    """A new Volume: the moved volumes resampled into the first b0's frame (trilinear), the others the same
    values, RAS gradients rotated. ``dwi`` is not modified."""
    v = dwi.voxel_sizes
    moved = set(int(i) for i in estimate.moved())
    data = np.array(dwi.data, dtype=np.float32 if dwi.data.dtype.kind != "f" else dwi.data.dtype, copy=True)
    fits = [fit if i in moved else None for i, fit in enumerate(estimate.fits)]
    for i in sorted(moved):
        data[..., i] = resample_rigid(dwi.data[..., i], v, estimate.fits[i])
    acq = dataclasses.replace(dwi.acquisition, bvecs=rotated_bvecs(bvecs_ras, fits, dwi.affine))
    return Volume(data, dwi.affine.copy(), None, acq)


@dataclass
class MotionStep:
    """What the pipeline's motion step hands on: the series to analyse (the input itself when nothing moved or
    correction is off), the frame its gradients are in, the report block and warnings."""

    dwi: Volume
    gradient_frame: str
    report: dict
    warnings: list


def motion_step(dwi: Volume, *, correct: bool, gradient_frame, brain_mask, b0_threshold: float,
                shell_tolerance: float, min_directions: int, target_b: float) -> MotionStep:
    """Estimate the motion of the b0s and the shell's volumes (the ones the maps read) and, with ``correct``,
    undo it. ``brain_mask``: the user's mask or None (then the automatic mask of the mean b0)."""
    from . import gradients as grad
    from .preprocessing import automatic_mask

    from ..core.registration import MIN_AXIS_VOXELS, can_register

    if not can_register(dwi.spatial_shape):
        return MotionStep(dwi, getattr(gradient_frame, "value", gradient_frame),
                          {"skipped": f"fewer than {MIN_AXIS_VOXELS} voxels along an axis"},
                          [f"head motion was not checked (--motion-correct rigid): the series has "
                           f"{min(dwi.spatial_shape)} voxels along an axis, and the registration needs at least "
                           f"{MIN_AXIS_VOXELS}"])
    acq = dwi.acquisition
    bvecs = grad.to_ras(acq.bvecs, dwi.affine, gradient_frame) if acq.bvecs is not None else None
    shell = grad.select_shell(acq.bvals, bvecs, target_b=target_b, b0_threshold=b0_threshold,
                              tolerance=shell_tolerance, min_directions=min_directions)  # refusals: prepare's own
    if brain_mask is None:
        mean_b0 = np.zeros(dwi.spatial_shape, np.float32)
        for i in shell.b0:
            mean_b0 += np.nan_to_num(dwi.data[..., int(i)].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        brain_mask, _ = automatic_mask(mean_b0 / len(shell.b0))
    estimate = estimate_motion(dwi.data, dwi.voxel_sizes, shell.b0, shell.index, brain_mask)
    moved = estimate.moved()
    applied = bool(correct and moved.size)
    report = estimate.to_json(applied)
    warnings = motion_warnings(estimate, applied, correct)
    if not applied:
        return MotionStep(dwi, getattr(gradient_frame, "value", gradient_frame), report, warnings)
    return MotionStep(corrected_series(dwi, estimate, bvecs), "ras", report, warnings)


def motion_warnings(estimate: MotionEstimate, applied: bool, correct: bool) -> list:
    worst, limit = float(estimate.max_mm.max(initial=0.0)), estimate.warn_mm
    if worst <= limit:
        return []
    over = np.flatnonzero(estimate.max_mm > limit)
    listed = ", ".join(str(int(i)) for i in over[:8]) + (f" and {over.size - 8} more" if over.size > 8 else "")
    head = (f"the head moved up to {worst:.1f} mm (volume {int(np.argmax(estimate.max_mm))}) between the volumes of "
            f"the series; {over.size} volume(s) moved more than {limit:.3g} mm (one voxel): {listed}")
    if applied:
        return [head + ". They were registered rigidly and resampled, and their gradient directions rotated "
                "(report['motion']); motion during a volume (slice-wise) and its spin-history signal changes are "
                "not corrected, so check those volumes, or leave them out and run again"]
    return [head + ". The maps read every volume at the same voxel (--motion-correct none), so voxels at tissue "
            "and CSF edges mix tissues: run with --motion-correct rigid"]
