"""Reading and writing :class:`~BBBAnomalyLib.core.volume.Volume` objects: NIfTI, NRRD, DICOM.

One entry point per direction so that the CLI, the worker and the Slicer bridge agree on formats,
geometry (RAS affine), units (s, SI) and errors:

- :func:`read_volume` -- ``.nii``/``.nii.gz`` (nibabel, JSON sidecar, bval/bvec), ``.nrrd``/``.nhdr``/
  ``.seq.nrrd`` (SimpleITK; Slicer sequence and MultiVolume fields), or a DICOM series folder;
  ``times``/``frame_interval`` supply or override the frame timing of a 4D series.
- :func:`write_volume` -- NIfTI or NRRD by extension, written completely or not at all.
- :func:`read_times`, :func:`read_mask`, :func:`read_dicom_series`.

Format details (what is read, what is written, what Slicer makes of it) are in the docstrings of
:mod:`.nifti`, :mod:`.nrrd` and :mod:`.dicom`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.volume import Volume
from ._common import SUPPORTED, check_geometry, check_image_data, describe_grids, file_kind
from .dicom import list_series, read_dicom_series
from .nifti import read_nifti, write_nifti
from .nrrd import read_nrrd, write_nrrd
from .timing import override_times, read_times

_log = logging.getLogger("BBBAnomalyLib")

__all__ = ["read_volume", "write_volume", "read_times", "read_mask", "read_dicom_series", "list_series"]


def read_volume(path, *, times=None, frame_interval: float | None = None, lazy: bool = False,
                gradient_files: bool = True) -> Volume:
    """Read a 3D volume or 4D series as a Volume (x, y, z[, t]) with a RAS affine.

    times: frame times in seconds (array, or a times file path), replacing the file's timing.
    frame_interval: seconds between frames; times become 0, dt, 2 dt, ...
    Give at most one of the two; they apply to 4D data only and must match its frame count.
    lazy: a 4D NIfTI series is not read yet: the Volume's ``source`` reads it frame block by
    frame block (the DSC pipeline gathers its voxels so, never holding the whole series), and
    the first use of ``.data`` reads it whole. Other formats and 3D images are read at once.
    gradient_files: False leaves a NIfTI's ``x.bval``/``x.bvec`` unread (a DWI given its own table).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"read_volume needs a file or folder path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"input '{path}' not found; check the path ({SUPPORTED})")
    kind, suffix = file_kind(path)
    if kind == "nifti":
        volume = read_nifti(path, suffix, lazy=lazy, gradient_files=gradient_files)
    elif kind == "nrrd":
        volume = read_nrrd(path)
    else:
        volume = read_dicom_series(path)
    # Checked at read time, before any computation: complex/RGB voxels and an affine that cannot
    # place voxels (NaN, zero voxel size, singular) would otherwise surface as a meaningless map or
    # a traceback when the maps are written.
    check_image_data(volume.source if volume.source is not None else volume.data, str(path))
    check_geometry(volume.affine, str(path))
    return override_times(volume, times, frame_interval, str(path))


def write_volume(volume: Volume, path) -> Path:
    """Write a Volume as NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``, ``.seq.nrrd``).

    Creates the parent folder. Float data is stored as float32, integer/bool data (masks,
    labels) as integers. Geometry, frame times and acquisition metadata are kept (NIfTI: header
    + JSON sidecar + bval/bvec; NRRD: header fields). Returns the path written. A sheared voxel
    grid (a gantry-tilted DICOM series) is refused for NIfTI, whose qform ITK and 3D Slicer would
    read millimetres off; NRRD stores it exactly.
    """
    if not isinstance(volume, Volume):
        raise InputError(f"write_volume needs a Volume, got {type(volume).__name__}")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"'{path}' is a folder; give a file name ending in .nii.gz, .nii, .nrrd or .seq.nrrd")
    kind, suffix = file_kind(path)
    if kind == "nifti":
        write_nifti(volume, path, suffix)
    else:
        write_nrrd(volume, path)
    return path


def _on_reference_lattice(grid: Volume, reference: Volume, block: bool = False) -> np.ndarray | None:
    """``grid``'s data placed on ``reference``'s voxels when its voxel centres lie on the same lattice: the same
    voxels stored with the axes permuted or reversed (a mask saved by another tool in another orientation, e.g. RAS
    vs LPS storage), or with ``block`` a sub-block of them (a Slicer segmentation, which Slicer writes cropped to its
    segments when it has no reference geometry; its voxels outside the block are 0). None when it is not such a
    lattice, or when a nonzero voxel of it lies outside the reference. Other files of another extent are not taken
    as crops: the same affine with another shape is as likely a mask of another image. Exact: whole voxels are
    moved, nothing is interpolated."""
    if grid.affine.shape != (4, 4) or reference.same_grid(grid):
        return None
    try:
        to_reference = np.linalg.solve(reference.affine, grid.affine)  # mask voxel index -> reference voxel index
    except np.linalg.LinAlgError:
        return None
    linear, offset = to_reference[:3, :3], to_reference[:3, 3]
    rounded = np.rint(linear)
    # a signed permutation within the grids' own tolerance (GRID_TOLERANCE_MM over the largest voxel edge)
    tol = 1e-3
    if (not np.allclose(linear, rounded, atol=tol) or not np.all(np.abs(rounded).sum(axis=0) == 1)
            or not np.all(np.abs(rounded).sum(axis=1) == 1) or not np.allclose(offset, np.rint(offset), atol=tol)):
        return None
    perm, flips, starts = [], [], []
    for ref_axis in range(3):
        mask_axis = int(np.flatnonzero(rounded[ref_axis])[0])
        sign = rounded[ref_axis, mask_axis]
        n = grid.spatial_shape[mask_axis]
        perm.append(mask_axis)
        if sign < 0:
            flips.append(ref_axis)
        # the reference index of the block's first voxel, once the mask's axes run like the reference's
        starts.append(int(np.rint(offset[ref_axis])) - (n - 1 if sign < 0 else 0))
    data = np.transpose(grid.data, perm)
    if flips:
        data = np.flip(data, axis=tuple(flips))
    if all(start == 0 for start in starts) and data.shape == reference.spatial_shape:
        return data
    if not block:
        return None
    source = tuple(slice(max(0, -a), min(n, size - a)) for a, n, size in zip(starts, data.shape,
                                                                           reference.spatial_shape))
    target = tuple(slice(max(0, a), max(0, a) + (s.stop - s.start)) for a, s in zip(starts, source))
    inside = data[source] if all(s.stop > s.start for s in source) else data[:0, :0, :0]
    if np.count_nonzero(np.nan_to_num(inside)) != np.count_nonzero(np.nan_to_num(data)):
        return None  # part of the region lies outside the input: refused as another grid, as before
    placed = np.zeros(reference.spatial_shape, data.dtype)
    if inside.size:
        placed[target] = inside
    return placed


def read_mask(path_or_array, reference: Volume, name: str, label=None) -> np.ndarray:
    """A boolean 3D mask (nonzero = inside) on `reference`'s voxel grid.

    path_or_array: a mask/label file, a Volume, or an array of the reference's spatial shape (an
    array carries no geometry, so only its shape is checked). A 4D file with a single frame is
    accepted as 3D. A mask of the same voxels stored in another axis order or direction, or a Slicer segmentation
    cropped to a block of the same voxel lattice, is placed on the reference's voxels (exact).
    label: the region inside the file: a segment's name in a Slicer .seg.nrrd, or a label value (int or digits);
    None takes every nonzero voxel, and refuses a Slicer segmentation holding several segments (:mod:`.segments`).
    Errors name the mask: 4D, another grid, or empty.
    """
    from .segments import select, several_segments_message, slicer_segments

    if not isinstance(reference, Volume):
        raise InputError(f"the reference of mask '{name}' must be a Volume (the input whose grid the mask is on), "
                         f"got {type(reference).__name__}")
    if isinstance(path_or_array, Volume):
        vol, where = path_or_array, "given as a Volume"
    elif isinstance(path_or_array, (str, os.PathLike)):
        vol, where = read_volume(path_or_array), f"from '{path_or_array}'"
    else:
        arr = np.asarray(path_or_array)
        if arr.shape[:3] != reference.spatial_shape or arr.ndim not in (3, 4):
            raise InputError(f"mask '{name}' has shape {arr.shape} but the input grid is {reference.spatial_shape}; "
                             "resample the mask onto the input grid")
        vol, where = Volume(arr, reference.affine), "given as an array"
    data = vol.data
    segments = slicer_segments(path_or_array) if isinstance(path_or_array, (str, os.PathLike)) else []
    if label is not None:
        data = select(np.asarray(data), label, segments, name, where)
    elif len(segments) > 1:
        raise InputError(several_segments_message(name, where, segments))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"mask '{name}' ({where}) is 4D with shape {data.shape}; a mask must be a single 3D "
                         "volume (e.g. export one segment as a labelmap in Slicer)")
    grid = Volume(data, vol.affine)
    reoriented = _on_reference_lattice(grid, reference, block=bool(segments))
    if reoriented is not None:  # the same lattice in another axis order or direction, or a crop: placed exactly
        grid = Volume(reoriented, reference.affine)
        data = reoriented
    if not reference.same_grid(grid):
        # One line for the user; both affines go to the log (the CLI shows it with --verbose).
        _log.info("mask %r affine:\n%s\ninput affine:\n%s", name, grid.affine, reference.affine)
        raise InputError(
            f"mask '{name}' ({where}) is not on the input's voxel grid ({describe_grids(grid, reference)}); "
            "resample it onto the input with nearest-neighbour interpolation, e.g. in Slicer with Resample "
            "Scalar/Vector/DWI Volume (the input as reference volume) or SimpleITK's sitk.Resample"
        )
    mask = data != 0
    if np.issubdtype(data.dtype, np.floating):
        mask &= ~np.isnan(data)
    if not mask.any():
        raise InputError(f"mask '{name}' is empty ({where}): it has no nonzero voxels. Draw or select the region again")
    return mask
