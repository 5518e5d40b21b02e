"""A run's map, computed on the grid the library's DICOM reader gives a series, put on the grid Slicer gave the node.

The two agree for every regular series (session 23, ``Testing/test_slicer_dicom_geometry.py``): Slicer's DICOM
scalar-volume plugin reads with ITK's ImageSeriesReader (origin = ImagePositionPatient of the first slice along the
normal, slice step = first-to-last / (n - 1), in-plane axes and spacing from ImageOrientationPatient/PixelSpacing,
the shear of a gantry tilt kept), the same arithmetic as ``io.dicom``: their matrices differ by < 1e-7 mm.

Where slice positions stray from a straight line by more than 1e-3 mm in-plane (ImagePositionPatient written with
2 decimals, or positions that wobble within the reader's tolerance), Slicer adds an "acquisition transform" and
MultiVolumeImporterPlugin hardens it into every frame: the frames are resampled onto a box that can hold one more
row/column, with its origin moved by the stray (a few micrometres). The maps then sit a sub-voxel distance from the
node's voxels of the same index. Refusing them ("not on the grid") lost a finished run; they are placed voxel by
voxel instead, only while every node voxel lies within :data:`SUBVOXEL_TOL` voxel of the map voxel it takes, and
the distance is logged and added to the run's warnings. Anything further apart is still refused.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

_log = logging.getLogger("BBBAnomalyLib")

#: matrix entries of the two grids closer than this [mm]: the same grid, the map is placed as it is
SAME_GRID_ATOL_MM = 1e-3
#: largest distance, in voxels, between a node voxel's centre and the map voxel placed on it
SUBVOXEL_TOL = 0.1


def onto_node_grid(array: np.ndarray, affine: np.ndarray, dims, node_affine: np.ndarray):
    """``(array on the node's grid, note)`` for a (k, j, i) map ``array`` with voxel->RAS ``affine`` and a node of
    ``dims`` (i, j, k) and ``node_affine``: the array itself and None on the same grid; a copy with each node voxel
    given the map voxel of the same index (0 beyond the map) and one line saying so when the grids differ by at most
    :data:`SUBVOXEL_TOL` voxel and one voxel of extent per axis; ``(None, None)`` otherwise."""
    dims = tuple(int(n) for n in dims)
    if array.shape[::-1] == dims and np.allclose(affine, node_affine, atol=SAME_GRID_ATOL_MM):
        return array, None
    if array.ndim != 3 or len(dims) != 3 or np.any(np.abs(np.subtract(array.shape[::-1], dims)) > 1):
        return None, None
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in dims])), dtype=np.float64)
    try:
        node_to_map = np.linalg.solve(affine, node_affine)  # node voxel -> map voxel
    except np.linalg.LinAlgError:
        return None, None
    in_map = corners @ node_to_map[:3, :3].T + node_to_map[:3, 3]
    # an affine map: no voxel strays further than the grid's corners do, so with < 0.5 voxel the nearest map
    # voxel of every node voxel is the one of the same index
    offset_voxels = float(np.abs(in_map - corners).max())
    if not np.isfinite(offset_voxels) or offset_voxels > SUBVOXEL_TOL:
        return None, None
    homogeneous = np.c_[corners, np.ones(len(corners))]
    offset_mm = float(np.linalg.norm((homogeneous @ node_affine.T - homogeneous @ affine.T)[:, :3], axis=1).max())
    placed = np.zeros(dims[::-1], dtype=array.dtype)
    k, j, i = (min(a, b) for a, b in zip(array.shape, placed.shape))
    placed[:k, :j, :i] = array[:k, :j, :i]
    extent = "" if array.shape[::-1] == dims else (
        f", {' x '.join(map(str, array.shape[::-1]))} voxels against {' x '.join(map(str, dims))} (0 where the map "
        "has no voxel)")
    note = (f"the maps' grid (the DICOM files' as the library reads them) is {offset_mm:.3g} mm "
            f"({offset_voxels:.2g} voxel) from the input's, which Slicer resampled to regularise its slice positions"
            f"{extent}: each map voxel was placed on the input voxel of the same index")
    return placed, note


def log_note(note: str, node_name: str, report: dict) -> None:
    """The note once in the log and in the run's warnings (the report as the panel holds it; the file is kept)."""
    line = f"'{node_name}': {note}"
    warnings = report.setdefault("warnings", [])
    if not isinstance(warnings, list) or line in warnings:
        return
    _log.warning("%s", line)
    warnings.append(line)
