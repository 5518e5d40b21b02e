"""From a T1 and a FLAIR on any grids to the network's (n, size, size) slices, and back.

* FLAIR on another grid is resampled onto the T1 grid (trilinear, through both affines) with a
  notice; when the two fields of view barely overlap the run is refused, since that is almost
  always a wrong file or a missing registration.
* The brain mask is given, or computed: nonzero voxels for skull-stripped input (BraTS style),
  else Otsu + largest component + filled holes (flagged as a warning: skull-stripping is better).
* Axial slices (the voxel axis closest to superior-inferior) are resampled -- not cropped -- to
  ``size`` x ``size``: a square in millimetres around the brain's in-plane bounding box (no brain
  voxel is left out; the aspect ratio is kept), with an anti-aliasing triangle kernel when
  shrinking. :meth:`SliceGrid.to_native` maps network images back onto the native T1 grid, so
  the outputs keep the T1's affine exactly (the seed's public code saved crops with the uncropped
  affine; this cannot happen here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.volume import Volume

#: Fraction of the T1 voxels with signal that must fall inside the FLAIR's field of view.
MIN_OVERLAP = 0.5
#: Margin around the brain's in-plane bounding box (fraction of its larger side).
MARGIN = 0.04


def interpolation_matrix(n_out: int, n_in: int, start: float, step: float) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights sampling input index ``start + step * i``.

    When ``step > 1`` (shrinking) the triangle kernel is widened to ``step`` input voxels, which
    averages instead of aliasing. Samples outside the input read 0 (background)."""
    pos = start + step * np.arange(n_out, dtype=np.float64)
    width = max(1.0, abs(step))
    src = np.arange(n_in, dtype=np.float64)
    w = np.clip(1.0 - np.abs(pos[:, None] - src[None, :]) / width, 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    inside = (pos > -1.0) & (pos < n_in)
    w = np.where(total > 0, w / np.maximum(total, 1e-12), 0.0) * inside[:, None]
    return w.astype(np.float32)


def resample_separable(data: np.ndarray, matrices: list[np.ndarray | None]) -> np.ndarray:
    """Apply one interpolation matrix per axis (None = keep the axis): exact, vectorised, no loops."""
    out = np.asarray(data, np.float32)
    for axis, m in enumerate(matrices):
        if m is not None:
            out = np.moveaxis(np.tensordot(m, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def slice_axis(affine: np.ndarray) -> int:
    """The voxel axis most aligned with superior-inferior (RAS z)."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def in_plane_axes(affine: np.ndarray, axis: int | None = None) -> tuple[int, int]:
    """The two voxel axes other than the slice axis, the one closer to left-right (RAS x) first.

    Every image the structural weights were trained on is stored left-right, anterior-posterior,
    superior-inferior (BraTS-space real cases and the MNI-grid phantoms), so the networks' rows run
    left-right and their columns anterior-posterior. A file that stores the same voxels in another
    axis order (a sagittal or coronal acquisition, a converter's choice) would otherwise reach the
    networks transposed. The directions along the axes are left as stored: training saw both."""
    directions = np.abs(affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0))
    axis = slice_axis(affine) if axis is None else int(axis)
    others = [i for i in range(3) if i != axis]
    a, b = sorted(others, key=lambda i: -directions[0, i])  # stable: a tie keeps the stored order
    return int(a), int(b)


def canonical_axes(affine: np.ndarray) -> tuple[tuple[int, int, int], bool]:
    """(voxel axes in the order left-right, anterior-posterior, superior-inferior; whether the last runs
    superior to inferior): the transpose (and flip) that gives the trained storage order with the top of the
    head at the high slice index, as every training case had (:func:`in_plane_axes`). ((0, 1, 2), False) for
    BraTS (LPS) and the phantoms (LAS): their arrays are used as they are."""
    axis = slice_axis(affine)
    a, b = in_plane_axes(affine, axis)
    return (a, b, axis), bool(affine[2, axis] < 0)


@dataclass
class SliceGrid:
    """The mapping between the native T1 grid and the network's square slices."""

    shape: tuple[int, int, int]
    axes: tuple[int, int, int]  # (in-plane a, in-plane b, slice axis) of the native array
    slices: np.ndarray  # native slice indices that hold brain
    size: int
    start: tuple[float, float]  # native in-plane index of network pixel 0
    step: tuple[float, float]  # native voxels per network pixel

    @classmethod
    def around(cls, brain: np.ndarray, affine: np.ndarray, size: int) -> "SliceGrid":
        axis = slice_axis(affine)
        a, b = in_plane_axes(affine, axis)  # left-right first, whatever the storage order (as in training)
        vox = np.linalg.norm(affine[:3, :3], axis=0)
        coords = np.argwhere(brain)
        if coords.size == 0:
            raise InputError("the brain mask is empty; give a mask with the brain in it")
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        extent_mm = max((hi[a] - lo[a] + 1) * vox[a], (hi[b] - lo[b] + 1) * vox[b]) * (1 + 2 * MARGIN)
        pixel_mm = extent_mm / size
        step = (pixel_mm / vox[a], pixel_mm / vox[b])
        centre = (0.5 * (lo[a] + hi[a]), 0.5 * (lo[b] + hi[b]))
        start = tuple(c - s * (size - 1) / 2.0 for c, s in zip(centre, step))
        slices = np.flatnonzero(brain.any(axis=(a, b)))
        return cls(tuple(brain.shape), (a, b, axis), slices, int(size), start, step)

    def _matrices(self):
        a, b, _ = self.axes
        ma = interpolation_matrix(self.size, self.shape[a], self.start[0], self.step[0])
        mb = interpolation_matrix(self.size, self.shape[b], self.start[1], self.step[1])
        return ma, mb

    def to_network(self, data: np.ndarray, background: float = 0.0) -> np.ndarray:
        """(n_slices, size, size) float32 from a native 3D array (brain slices only); pixels
        beyond the native field of view read ``background`` (-1 for normalised images)."""
        a, b, axis = self.axes
        stack = np.transpose(np.asarray(data, np.float32), (axis, a, b))[self.slices] - background
        ma, mb = self._matrices()
        return resample_separable(stack, [None, ma, mb]) + np.float32(background)

    def to_native(self, images: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A native 3D float32 array from (n_slices, size, size) images; ``fill`` off the brain slices."""
        return np.ascontiguousarray(self._native_view(images, fill))

    def to_native_values(self, images: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``to_native(images, fill)[mask]`` (the values at ``mask``'s voxels, in its C order) without the
        contiguous native copy: one native array instead of two (issue 17)."""
        return self._native_view(images, fill)[np.asarray(mask, bool)]

    def _native_view(self, images: np.ndarray, fill: float) -> np.ndarray:
        """The native grid as a transposed view of one (slice axis, a, b) float32 array."""
        a, b, axis = self.axes
        back_a = native_from_network(self.shape[a], self.size, self.start[0], self.step[0])
        back_b = native_from_network(self.shape[b], self.size, self.start[1], self.step[1])
        planes = resample_separable(np.asarray(images, np.float32), [None, back_a, back_b])
        out = np.full((self.shape[axis], self.shape[a], self.shape[b]), fill, np.float32)
        out[self.slices] = planes
        return np.transpose(out, np.argsort((axis, a, b)))


def native_from_network(n_native: int, size: int, start: float, step: float) -> np.ndarray:
    """(n_native, size) linear interpolation at the network coordinate ``(j - start) / step`` of
    each native index j (the inverse of the sampling in :meth:`SliceGrid.to_network`)."""
    return interpolation_matrix(n_native, size, -start / step, 1.0 / step)


def flair_on_t1_grid(t1: Volume, flair: Volume, warnings: list[str]) -> np.ndarray:
    """The FLAIR's data on the T1's voxel grid by world coordinates (the input is never modified)."""
    flair_data, to_flair, same = flair_placement(t1, flair, warnings)
    if same:
        return np.asarray(flair_data, np.float32)
    return resample_flair(flair_data, to_flair, t1.spatial_shape)


def resample_flair(flair_data: np.ndarray, t1_to_flair: np.ndarray, shape, threads: int | None = None) -> np.ndarray:
    """The FLAIR read at each T1 voxel through the T1-index -> FLAIR-index matrix (trilinear, 0 outside; float32).

    SimpleITK's resampler on index-space images: the same trilinear values as scipy's ``affine_transform(order=1)``
    (identical on the real cases), 4-6 times faster on a 240 x 240 x 155 grid (threaded)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(flair_data, np.float32))
    transform = sitk.AffineTransform(3)  # ITK's axis order is numpy's reversed
    transform.SetMatrix([float(v) for v in np.asarray(t1_to_flair, float)[:3, :3][::-1, ::-1].ravel()])
    transform.SetTranslation([float(v) for v in np.asarray(t1_to_flair, float)[:3, 3][::-1]])
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(sitk.Image([int(n) for n in tuple(shape)[::-1]], sitk.sitkFloat32))
    resampler.SetTransform(transform)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    if threads:
        resampler.SetNumberOfThreads(int(threads))
    return sitk.GetArrayFromImage(resampler.Execute(image))


def flair_placement(t1: Volume, flair: Volume, warnings: list[str]):
    """(the FLAIR's 3D data, the T1-index -> FLAIR-index 4x4 matrix of the files' world coordinates, whether the
    two grids are the same). Refuses a FLAIR whose field of view misses the T1's head; warns when the FLAIR will
    be resampled (its grid differs)."""
    for vol, name in ((t1, "T1"), (flair, "FLAIR")):
        if not isinstance(vol, Volume):
            raise InputError(f"the {name} must be a Volume (read it with BBBAnomalyLib.io.read_volume)")
        if vol.is_4d and vol.n_frames > 1:
            raise InputError(f"the {name} is 4D {vol.data.shape}; give a single 3D volume")
    flair_data = flair.data[..., 0] if flair.data.ndim == 4 else flair.data
    # T1 voxel index -> FLAIR voxel index
    to_flair = np.linalg.inv(flair.affine) @ t1.affine
    if t1.same_grid(Volume(flair_data, flair.affine)):
        return flair_data, to_flair, True
    t1_data = t1.data[..., 0] if t1.data.ndim == 4 else t1.data
    probe = np.argwhere(np.asarray(t1_data)[::4, ::4, ::4] > 0) * 4
    if probe.size == 0:
        raise InputError("the T1 is empty (all zeros); check the file")
    idx = probe @ to_flair[:3, :3].T + to_flair[:3, 3]
    inside = np.all((idx > -0.5) & (idx < np.array(flair_data.shape[:3]) - 0.5), axis=1).mean()
    if inside < MIN_OVERLAP:
        raise InputError(
            f"the FLAIR and the T1 do not overlap: only {100 * inside:.0f} % of the T1's head lies inside the FLAIR's "
            "field of view. Check that both files belong to the same study, and register the FLAIR to the T1 first "
            "(e.g. Slicer's General Registration (BRAINS), rigid)")
    warnings.append(f"the FLAIR ({'x'.join(map(str, flair_data.shape[:3]))}) is on another grid than the T1 "
                    f"({'x'.join(map(str, t1.spatial_shape))}); it was resampled onto the T1 grid (trilinear). "
                    f"{100 * inside:.0f} % of the T1's head lies inside the FLAIR's field of view")
    return flair_data, to_flair, False


#: Above this fraction of negative values among an image's nonzero voxels it is zero-centred (z-scored or
#: otherwise signed, background 0): its negative voxels are brain. Magnitude images have a few negatives from
#: resampling undershoot at the brain's edge (0-0.9 % on the real cases), which the mask leaves out as before.
SIGNED_FRACTION = 0.1


def _negative_fraction(image: np.ndarray) -> float:
    """Fraction of the nonzero voxels that are negative (counted through two boolean arrays, no float copy)."""
    image = np.asarray(image)
    nonzero = np.count_nonzero(image)
    return float(np.count_nonzero(image < 0) / nonzero) if nonzero else 0.0


def automatic_brain_mask(t1: np.ndarray, flair: np.ndarray, warnings: list[str]) -> np.ndarray:
    """Brain voxels: the nonzero voxels of skull-stripped input, else Otsu (with a warning)."""
    signal = (np.asarray(t1) > 0) & (np.asarray(flair) > 0)
    if signal.mean() < 0.95:  # >= 5 % exact zeros: skull-stripped (or background zeroed by the scanner)
        signed = [name for name, image in (("T1", t1), ("FLAIR", flair)) if _negative_fraction(image) > SIGNED_FRACTION]
        if signed:  # a z-scored brain is half negative: "> 0" would keep half of it, silently
            signal = (np.asarray(t1) != 0) & (np.asarray(flair) != 0)
        mask = ndimage.binary_opening(signal, iterations=1)
        how = "nonzero voxels, assuming skull-stripped input" + (
            f"; the {' and '.join(signed)} {'is' if len(signed) == 1 else 'are'} zero-centred (more than "
            f"{100 * SIGNED_FRACTION:.0f} % of the nonzero voxels negative, e.g. z-scored), so negative voxels count as "
            "brain" if signed else "")
    else:
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.asarray(t1, np.float32))
        mask = sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1)).astype(bool)
        mask = ndimage.binary_opening(mask, iterations=2)
        how = "Otsu threshold of the T1: skull and scalp may remain, give --mask for a better result"
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("no brain found for the automatic mask; give --mask")
    # the components' voxel counts (ndimage.sum(mask, labels, 1..n) counted the same voxels through int64 labels
    # and float64 weights of the whole grid: +150 MiB on a 240 x 240 x 155 grid, issue 17)
    sizes = np.bincount(labels[labels > 0], minlength=n + 1)[1:]
    mask = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    warnings.append(f"brain mask computed automatically ({how}, {int(mask.sum())} voxels)")
    return mask


class BrainMaps(Mapping):
    """Native-grid float32 maps held as their brain voxels' values (C order of ``brain``); reading a map gives a
    new full-grid array, 0 off the brain. Five maps of a 240 x 240 x 155 grid would be 170 MiB held at once
    (issue 17); their brain values are 34 MiB on a 1 mm brain."""

    def __init__(self, brain: np.ndarray, values: dict[str, np.ndarray]):
        self.brain, self.brain_values = brain, values

    def __getitem__(self, name: str) -> np.ndarray:
        full = np.zeros(self.brain.shape, np.float32)
        full[self.brain] = self.brain_values[name]
        return full

    def __iter__(self):
        return iter(self.brain_values)

    def __len__(self) -> int:
        return len(self.brain_values)


def distance_at(mask: np.ndarray, where: np.ndarray, voxel_mm) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=voxel_mm)[where]`` with scipy's float64 operations in the
    same order, evaluated at ``where``'s voxels only (C order): scipy's distance step makes the index grid, the
    difference and its float64 copy for the whole array (3 + 3 + 6 times its int32 feature transform beside it:
    ~190 MiB on a 1 mm brain's box, issue 17); here one axis at a time, at ``where``."""
    where = np.asarray(where, bool)
    voxel_mm = np.asarray(voxel_mm, np.float64)
    ft = ndimage.distance_transform_edt(mask, sampling=voxel_mm, return_distances=False, return_indices=True)
    total = None
    for axis in range(where.ndim):
        index = np.arange(where.shape[axis], dtype=np.int32).reshape([-1 if a == axis else 1 for a in range(where.ndim)])
        ft[axis] -= index  # in place: the same int32 differences
        d = ft[axis][where].astype(np.float64)
        d *= voxel_mm[axis]
        np.multiply(d, d, d)
        total = d if total is None else np.add(total, d, out=total)
        del d
    del ft
    return np.sqrt(total, out=total)
