"""Rigid (six-parameter) registration of two 3D images of one patient on one voxel grid (SimpleITK).

Shared by the pipelines that read two images voxel by voxel and so need them aligned: the FLAIR onto the T1
(structural) and the frames of a dynamic series onto a reference frame (DSC/DCE motion). The metric is Mattes
mutual information, not a squared difference, because the two images' contrasts differ (FLAIR against T1; a frame
at the bolus peak against one before it) and mutual information only asks that one predicts the other.

Both images are arrays on the same grid (the caller resamples by world coordinates first) and ``voxel_mm`` gives
the array axes' voxel sizes. Transforms act on array-axis millimetre coordinates ``x = index * voxel_mm`` (axis
order as in the arrays), as ITK's do: ``T(x) = R (x - c) + c + t`` maps a point of the *fixed* image to the point
of the *moving* image that belongs there, which is what resampling the moving image onto the fixed one needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Shrink factors and Gaussian smoothing (mm) of the multi-resolution pyramid, coarse to fine. The finest level is
#: the grid itself: rigid motion of a few mm is found at the coarse levels, the sub-voxel part at the fine one.
SHRINK = (4, 2, 1)
SMOOTHING_MM = (2.0, 1.0, 0.0)
#: Fraction of the fixed mask's voxels sampled for the metric at each iteration (random, seeded: repeatable).
SAMPLING = 0.25
HISTOGRAM_BINS = 32
ITERATIONS = 200
#: ITK smooths each level's image before shrinking it and its recursive Gaussian needs 4 voxels along every axis: a
#: thinner image (a 2-3 slice slab) cannot be registered; callers check :func:`can_register` and say so.
MIN_AXIS_VOXELS = 4


def can_register(shape) -> bool:
    """Whether an image of this (spatial) shape has the voxels along every axis that the registration needs."""
    return min(int(n) for n in tuple(shape)[:3]) >= MIN_AXIS_VOXELS


@dataclass(frozen=True)
class RigidFit:
    """A rigid transform in array-axis mm coordinates, ``T(x) = rotation @ (x - center) + center + translation``.

    ``metric`` is the final (negative) mutual information reported by ITK: lower is better aligned;
    ``stop`` says why the optimiser stopped."""

    rotation: np.ndarray
    center: np.ndarray
    translation: np.ndarray
    metric: float = float("nan")
    stop: str = ""

    @classmethod
    def identity(cls, center=(0.0, 0.0, 0.0)) -> "RigidFit":
        return cls(np.eye(3), np.asarray(center, float), np.zeros(3))

    @property
    def rotation_deg(self) -> float:
        """The rotation's angle about its axis, degrees."""
        cos = (np.trace(self.rotation) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    def apply(self, points_mm: np.ndarray) -> np.ndarray:
        """T applied to an (n, 3) array of array-axis mm points."""
        p = np.asarray(points_mm, float)
        return (p - self.center) @ self.rotation.T + self.center + self.translation

    def displacement_mm(self, mask: np.ndarray, voxel_mm) -> np.ndarray:
        """|T(x) - x| (mm) at each voxel of ``mask`` (the order of ``np.argwhere(mask)``)."""
        points = np.argwhere(mask) * np.asarray(voxel_mm, float)
        return np.linalg.norm(self.apply(points) - points, axis=1)


def _image(array: np.ndarray, voxel_mm):
    """An ITK image of ``array`` with origin 0 and the given voxel sizes (ITK reverses numpy's axis order)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, np.float32))
    image.SetSpacing([float(v) for v in voxel_mm][::-1])
    return image


def register_rigid(fixed: np.ndarray, moving: np.ndarray, voxel_mm, mask: np.ndarray | None = None, *,
                   shrink=SHRINK, smoothing_mm=SMOOTHING_MM, sampling: float = SAMPLING,
                   iterations: int = ITERATIONS, seed: int = 1, threads: int | None = None,
                   initial: RigidFit | None = None) -> RigidFit:
    """The rigid transform that best aligns ``moving`` to ``fixed`` (mutual information over ``mask``, a region
    of the fixed image, e.g. its brain; default: every voxel). Rotation about the mask's centroid."""
    import SimpleITK as sitk

    fixed = np.asarray(fixed, np.float32)
    moving = np.asarray(moving, np.float32)
    if fixed.shape != moving.shape or fixed.ndim != 3:
        raise ValueError(f"rigid registration needs two 3D arrays of one shape, got {fixed.shape} and {moving.shape}")
    if not can_register(fixed.shape):
        raise ValueError(f"rigid registration needs at least {MIN_AXIS_VOXELS} voxels along every axis, got "
                         f"{fixed.shape}")
    voxel_mm = np.asarray(voxel_mm, float)[:3]
    region = np.ones(fixed.shape, bool) if mask is None else np.asarray(mask, bool)
    if not region.any():
        raise ValueError("rigid registration needs a non-empty mask")
    center = np.argwhere(region).mean(axis=0) * voxel_mm if initial is None else initial.center
    reverse = slice(None, None, -1)  # numpy axis order <-> ITK's

    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(c) for c in center[reverse]])
    if initial is not None:
        transform.SetMatrix([float(v) for v in initial.rotation[reverse, reverse].ravel()])
        transform.SetTranslation([float(v) for v in initial.translation[reverse]])

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(sampling), int(seed))
    if mask is not None:
        fixed_mask = sitk.GetImageFromArray(np.ascontiguousarray(region, np.uint8))
        fixed_mask.SetSpacing([float(v) for v in voxel_mm][::-1])
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=int(iterations),
                                                   relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(s) for s in shrink])
    method.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    if threads:
        method.SetNumberOfThreads(int(threads))
    method.Execute(_image(fixed, voxel_mm), _image(moving, voxel_mm))

    rotation = np.array(transform.GetMatrix(), float).reshape(3, 3)[reverse, reverse]
    translation = np.array(transform.GetTranslation(), float)[reverse]
    return RigidFit(rotation, np.asarray(center, float), translation, float(method.GetMetricValue()),
                    method.GetOptimizerStopConditionDescription())


def resample_rigid(moving: np.ndarray, voxel_mm, fit: RigidFit, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """``moving`` resampled onto the fixed image's voxels: ``out[x] = moving(T(x))`` (float32; ``order`` 1 is
    trilinear, 0 nearest for label maps). Points of T that fall outside ``moving`` take ``fill``."""
    from scipy import ndimage

    v = np.asarray(voxel_mm, float)[:3]
    # index space: i_moving = diag(1/v) R diag(v) i_fixed + (c + t - R c) / v
    matrix = (fit.rotation * v[None, :]) / v[:, None]
    offset = (fit.center + fit.translation - fit.rotation @ fit.center) / v
    return ndimage.affine_transform(np.asarray(moving, np.float32), matrix, offset, order=order, mode="constant",
                                    cval=float(fill)).astype(np.float32, copy=False)
