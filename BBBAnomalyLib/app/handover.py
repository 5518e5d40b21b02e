"""Arrays handed between the Slicer panel and its worker: raw ``.npy`` files in Slicer's memory order.

The panel's inputs and the worker's maps live for one run, between two processes on one computer.
They are written the way the memory already is, so that nothing is compressed, transposed or
stacked in Slicer's GUI thread:

* ``NAME.npy``: the voxels, uncompressed, in the order ``slicer.util.arrayFromVolume`` gives them:
  ``"kji"`` for a 3D volume, ``"tkji"`` for a volume sequence (the frames one after another, each
  copied once from its node), ``"kjic"`` for a multi-component volume (DWI, MultiVolume);
* ``NAME.json``: what the array means: its ``axes``, the voxel -> RAS ``affine`` (float64, exactly),
  the frame ``times`` in seconds and the ``acquisition`` (SI units), as :class:`~BBBAnomalyLib.core.volume.Volume`
  holds them.

:func:`read_volume` gives the library's :class:`Volume` ((x, y, z[, t]), C order, as the pipelines
are fastest with); the reordering of a series happens there, in the worker, a slab at a time on
two threads. :func:`read_slicer_array` gives a map in Slicer's order for ``updateVolumeFromArray``.
Job files name the ``.npy``; the header beside it is found by its suffix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.volume import Volume

FORMAT = "bbbanomaly-handover/1"
#: axes of the stored array -> number of dimensions
AXES = {"kji": 3, "tkji": 4, "kjic": 4}


def header_path(path) -> Path:
    return Path(path).with_suffix(".json")


def _storable_dtype(dtype) -> np.dtype:
    """float maps as float32, masks (bool) as uint8, integer series as they are."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f" and dtype != np.float32:
        return np.dtype(np.float32)
    return dtype


def write_arrays(path, parts, axes: str, affine, times=None, acquisition=None) -> Path:
    """Write ``parts`` as one ``.npy`` (and its ``.json`` header): a single array in ``axes`` order,
    or, for ``"tkji"``, a sequence of equally shaped (k, j, i) frames written one after another
    (each frame goes from its own memory to the file once; no stacked copy is made).

    affine: voxel (i, j, k) -> RAS; times: frame times [s] for a series; acquisition: an
    :class:`~BBBAnomalyLib.core.volume.Acquisition` (or None).
    """
    if axes not in AXES:
        raise ValueError(f"axes must be one of {', '.join(AXES)}, not {axes!r}")
    path = Path(path)
    parts = list(parts) if axes == "tkji" else [parts]
    if not parts:
        raise InputError(f"{path.stem}: no frames to write")
    first = np.asarray(parts[0])
    dtype = _storable_dtype(first.dtype)
    frame_shape = first.shape
    shape = (len(parts),) + frame_shape if axes == "tkji" else frame_shape
    if len(shape) != AXES[axes]:
        raise ValueError(f"{path.stem}: an array of shape {shape} cannot have axes {axes!r}")
    header = {"format": FORMAT, "axes": axes, "shape": list(shape), "dtype": dtype.str,
              "affine": np.asarray(affine, np.float64).tolist(),
              "times": None if times is None else [float(t) for t in np.asarray(times, np.float64).ravel()],
              "acquisition": acquisition.to_json() if acquisition is not None else {}}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
        for i, part in enumerate(parts):
            part = np.asarray(part)
            if part.shape != frame_shape:
                raise InputError(f"{path.stem}: frame {i} has shape {part.shape}, frame 0 {frame_shape}; all "
                                 "frames of a series must share one grid")
            # The node's memory as it is (a view), cast only where the type must change.
            fh.write(np.ascontiguousarray(part, dtype=dtype).data)
    with open(header_path(path), "w", encoding="utf-8") as fh:
        json.dump(header, fh)
    return path


def write_volume(volume: Volume, path) -> Path:
    """A library :class:`Volume` (a map, a mask) in Slicer's order: (k, j, i), or (t, k, j, i)."""
    data = np.asarray(volume.data)
    if data.ndim == 3:
        stored = np.ascontiguousarray(data.T, dtype=_storable_dtype(data.dtype))
        return write_arrays(path, stored, "kji", volume.affine, None, volume.acquisition)
    frames = [np.ascontiguousarray(data[..., t].T) for t in range(data.shape[3])]
    return write_arrays(path, frames, "tkji", volume.affine, volume.times, volume.acquisition)


def _read(path) -> tuple[np.ndarray, dict]:
    """(the stored array memory-mapped, its header), checked against each other."""
    from ..io._common import acquisition_from_dict, check_geometry, check_image_data

    path = Path(path)
    try:
        with open(header_path(path), encoding="utf-8") as fh:
            header = json.load(fh)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the handed-over array {path} (and its header {header_path(path).name}): "
                         f"{exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("axes") not in AXES:
        raise InputError(f"{header_path(path)} is not a {FORMAT} header")
    if array.ndim != AXES[header["axes"]] or list(array.shape) != header.get("shape"):
        raise InputError(f"{path}: the array's shape {array.shape} does not match its header ({header.get('axes')}, "
                         f"{header.get('shape')})")
    check_image_data(array, str(path))
    try:
        header["affine"] = check_geometry(np.array(header["affine"], np.float64).reshape(4, 4), str(path))
        times = header.get("times")
        header["times"] = None if times is None else np.array(times, np.float64)
        header["acquisition"] = acquisition_from_dict(header.get("acquisition") or {}, "its acquisition")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{header_path(path)}: {exc}") from None
    return array, header


def _frames_to_library(frames: np.ndarray) -> np.ndarray:
    """(t, k, j, i) -> (i, j, k, t) in C order, a k-slab at a time (each slab's reordering stays
    in cache; a whole-array transpose is ~3x slower here), on two threads (numpy releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    t, nk, nj, ni = frames.shape
    out = np.empty((ni, nj, nk, t), frames.dtype)

    def slabs(ks):
        for k in ks:
            out[:, :, k, :] = frames[:, k].transpose(2, 1, 0)

    step = max(1, math.ceil(nk / 2))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(slabs, [range(a, min(a + step, nk)) for a in range(0, nk, step)]))
    return out


def read_volume(path) -> Volume:
    """The library's :class:`Volume` ((x, y, z[, t]), C order) from a handed-over array."""
    array, header = _read(path)
    axes = header["axes"]
    if axes == "kji":
        data = np.ascontiguousarray(array.T)
    elif axes == "tkji":
        data = _frames_to_library(array)
    else:  # kjic
        data = np.ascontiguousarray(array.transpose(2, 1, 0, 3))
    del array
    times = header["times"] if data.ndim == 4 else None
    if times is not None and times.size != data.shape[3]:
        raise InputError(f"{header_path(path)}: {times.size} frame times for {data.shape[3]} frames")
    return Volume(data, header["affine"], times, header["acquisition"])


def read_slicer_array(path) -> tuple[np.ndarray, np.ndarray]:
    """(the array in Slicer's order, loaded into memory, affine) of a handed-over 3D map."""
    array, header = _read(path)
    if header["axes"] != "kji":
        raise InputError(f"{path} is not a 3D map (its axes are {header['axes']})")
    return np.array(array), header["affine"]
