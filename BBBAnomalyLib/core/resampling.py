"""A parameter map measured on one grid, read at the voxels of another (placed by both grids' affines).

Quantitative maps that a run needs on its own grid are often acquired on another one: a B1 map at 4-8 mm with its
own field of view for a VFA fit, a T10 map (a VFA series' T1) for a DCE series of another resolution. Such maps are
0 (or not finite) where nothing was measured: outside the head, where a fit failed. A plain trilinear
interpolation would pull the values at the map's edge towards that 0, so each target voxel takes the trilinear
average of the *measured* voxels around it (normalised convolution: the interpolation weights of measured voxels
renormalised to 1). Target voxels where measured voxels carry too little weight lie at or beyond the map's edge:
those inside the map's field of view and within ``nearest_mm`` of a measured voxel (the edge of a head mask) take
its value; the rest (beyond the field of view, or deep in the background) are reported as not covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .volume import Volume

#: A resampled value needs measured voxels to carry at least this share of the trilinear weights.
MIN_MEASURED_WEIGHT = 0.25
#: ... and a voxel without it takes its nearest measured value when that lies within this distance [mm] (or one
#: source voxel).
NEAREST_MM = 10.0


@dataclass
class Resampled:
    """``values`` at the target voxels asked for (NaN where not ``covered``); ``filled``: how many took their nearest
    measured value; ``voxel_mm``: the source map's voxel sizes (for messages)."""

    values: np.ndarray
    covered: np.ndarray
    filled: int
    voxel_mm: np.ndarray


def measured_at(source: Volume, target_affine: np.ndarray, ijk: np.ndarray, measured: np.ndarray | None = None,
                nearest_mm: float = NEAREST_MM, min_weight: float = MIN_MEASURED_WEIGHT) -> Resampled:
    """``source`` (a 3D map) at the target voxels ``ijk`` ((n, 3) indices of a grid with ``target_affine``).
    ``measured``: the source voxels that hold a value (default: finite and positive)."""
    from scipy import ndimage

    data = np.asarray(source.data, dtype=np.float64)
    if measured is None:
        measured = np.isfinite(data) & (data > 0)
    voxel_src = np.sqrt((np.asarray(source.affine)[:3, :3] ** 2).sum(axis=0))
    if not measured.any():
        return Resampled(np.full(len(ijk), np.nan), np.zeros(len(ijk), bool), 0, voxel_src)
    world = np.asarray(target_affine, float) @ np.c_[ijk, np.ones(len(ijk))].T
    coords = (np.linalg.inv(source.affine) @ world)[:3]
    values = np.where(measured, data, 0.0)
    weight = ndimage.map_coordinates(measured.astype(np.float64), coords, order=1, mode="constant", cval=0.0)
    total = ndimage.map_coordinates(values, coords, order=1, mode="constant", cval=0.0)
    covered = weight >= min_weight
    result = np.divide(total, weight, out=np.full_like(total, np.nan), where=covered)
    filled = 0
    if not covered.all():
        # The edge of the map's own head mask rarely matches the target's: a value is carried out to the target
        # voxels within nearest_mm of a measured voxel (its nearest one); beyond that the map does not cover them.
        distance, nearest = ndimage.distance_transform_edt(~measured, sampling=voxel_src, return_indices=True)
        at = np.rint(coords[:, ~covered]).astype(int)
        inside_map = np.all((at >= 0) & (at < np.asarray(measured.shape)[:, None]), axis=0)
        at = np.clip(at, 0, np.asarray(measured.shape)[:, None] - 1)
        near = inside_map & (distance[tuple(at)] <= max(nearest_mm, float(voxel_src.max())))
        source_idx = tuple(n[tuple(at[:, near])] for n in nearest)
        where = np.flatnonzero(~covered)[near]
        result[where] = data[source_idx]
        covered[where] = True
        filled = int(near.sum())
    return Resampled(result, covered, filled, voxel_src)
