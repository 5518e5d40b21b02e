"""Reading the analysed voxels' curves out of a DSC series: the gather step of ``run_dsc``.

Held apart from :mod:`.pipeline` because it is about memory layout and I/O, not perfusion: the voxel
order (brain first, then arterial voxels outside it), the one-pass float32 gather from an in-memory
array (C- or F-ordered) or from a series left in its file (:class:`..core.volume.FrameSource`, read
frame block by frame block, optionally prefetched on a thread), the finiteness check of the gathered
curves, a background drop for an AIF search region, and header-only stand-ins for the input checks.
The block sizes (``GATHER_BLOCK``, ``FRAME_BLOCK_BYTES``, ``STAGE_FRAMES``, ``PREFETCH_FRAMES``) are
read at call time from this module.
"""

from __future__ import annotations

import numpy as np

from ..core.devices import map_blocks
from ..core.errors import InputError
from ..core.volume import FrameSource, Volume


def _voxels(volume: Volume):
    """The series' voxels as they are: an array, or the FrameSource of a series left in its file."""
    return volume.source if volume.source is not None else volume.data


def _header_only(volume: Volume) -> Volume:
    """The volume for checks that read only its shape, dtype, times and metadata: a lazily read
    series gets a stand-in whose data is one broadcast zero of its dtype (nothing is read)."""
    if volume.source is None:
        return volume
    data = np.broadcast_to(np.zeros((), volume.dtype), volume.shape)
    return Volume(data, volume.affine, volume.times, volume.acquisition)


def _voxel_order(brain: np.ndarray, arterial: np.ndarray | None) -> np.ndarray:
    """Flat (C-order) indices of the analysed voxels: the brain's, then arterial voxels outside it."""
    order = np.flatnonzero(brain)
    if arterial is not None:
        order = np.concatenate([order, np.flatnonzero(arterial & ~brain)])
    return order


def _curves(data, order: np.ndarray, resample) -> np.ndarray:
    """(len(order), T) float32 curves of the voxels at flat (C-order) indices `order`, gathered in
    one pass (no intermediate copy in the input's dtype, which may be the size of the whole series).
    ``data``: a 4D array, or a FrameSource read frame block by frame block (never whole)."""
    if isinstance(data, FrameSource):
        return _curves_from_frames(data, order, resample)
    spatial, frames = data.shape[:3], data.shape[3]
    out = np.empty((order.size, frames), np.float32)
    if data.flags.c_contiguous or data.flags.f_contiguous:
        layout = "C" if data.flags.c_contiguous else "F"
        flat = data.reshape((-1, frames), order=layout)  # a view for either memory layout
        if flat.dtype == out.dtype and layout == "C":  # straight into the output: no temporary block
            # (np.take would first copy a non-contiguous view whole: F-ordered input goes by blocks)
            np.take(flat, order, axis=0, out=out, mode="clip")  # "raise" would buffer a whole copy; rows are valid
        else:
            by_frame = flat.T if layout == "F" else None  # (T, voxels), C-ordered: each frame contiguous
            for start in range(0, order.size, GATHER_BLOCK):  # a non-float32 input casts a block at a time
                block = slice(start, start + GATHER_BLOCK)
                if layout == "C":
                    out[block] = flat[order[block]]
                else:  # a frame-major gather (contiguous reads per frame), then a small transpose
                    out[block] = np.take(by_frame, _f_order(order[block], spatial), axis=1).T
    else:
        out[:] = data.reshape(-1, frames)[order]
    return resample(out) if resample is not None else out


#: Voxels gathered per block from an in-memory series, and the frame block read from a file.
GATHER_BLOCK = 8192
FRAME_BLOCK_BYTES = 16 * 2**20
#: Frames staged frame-major before they are transposed into the rows of the curves (64 bytes a row).
STAGE_FRAMES = 16
#: Read the next frame block on a thread while this one is gathered: a .nii.gz inflates on one
#: core while the other gathers. (Through nibabel's gzip reader this did not pay: it inflates
#: ~8 KiB per call and the reading thread's Python loop and the gathers handed the GIL back and
#: forth; the series' own zlib reader, io.nifti._GzipFrames, inflates 256 KiB per call.)
PREFETCH_FRAMES = True


def _f_order(order: np.ndarray, spatial) -> np.ndarray:
    """Fortran-order (x fastest, as NIfTI stores a frame) flat indices of C-order flat indices."""
    x, rest = np.divmod(order, spatial[1] * spatial[2])
    y, z = np.divmod(rest, spatial[2])
    return x + spatial[0] * (y + spatial[1] * z)


def _curves_from_frames(source: FrameSource, order: np.ndarray, resample) -> np.ndarray:
    """The gather of :func:`_curves` from a series left in its file: frame blocks are read in
    order (one pass; a .nii.gz is decompressed once) and each frame's voxels gathered into a frame-major staging buffer of STAGE_FRAMES frames,
    which is then transposed into the rows: every row then receives 64 contiguous bytes at once
    (writing each block's few frames straight into the rows touched every cache line of the
    curves once per block: 3x slower at 1 M voxels). Memory: the float32 curves, the staging
    buffer (16 frames of the analysed voxels) and a frame block (at most 1/32 of the series and
    16 MiB) with nibabel's read buffer."""
    spatial, frames = source.shape[:3], source.shape[3]
    out = np.empty((order.size, frames), np.float32)
    rows = np.empty(order.size, np.intp)
    for start in range(0, order.size, 2**20):  # in blocks: no unravelled index triples for every voxel
        rows[start:start + 2**20] = _f_order(order[start:start + 2**20], spatial)
    width = min(STAGE_FRAMES, frames)
    stage = np.empty((width, order.size), np.float32)
    chunk = 4 * GATHER_BLOCK
    staged, stage_first = 0, 0

    def flush():
        # Parts of 8192 rows (4 MiB at 120 frames): in cache whichever order numpy copies in, and
        # few enough calls not to wait for the GIL that the reading thread holds between reads.
        for start in range(0, order.size, GATHER_BLOCK):
            part = slice(start, start + GATHER_BLOCK)
            out[part, stage_first:stage_first + staged] = stage[:staged, part].T

    for first, block in source.blocks(min(FRAME_BLOCK_BYTES, max(source.nbytes // 32, 1)), prefetch=PREFETCH_FRAMES):
        k = block.shape[3]
        by_frame = block.reshape((-1, k), order="F").T  # (k, voxels), each frame contiguous: a view
        done = 0
        while done < k:
            m = min(k - done, width - staged)
            for start in range(0, order.size, chunk):
                part = slice(start, start + chunk)
                stage[staged:staged + m, part] = np.take(by_frame[done:done + m], rows[part], axis=1)
            staged, done = staged + m, done + m
            if staged == width:
                flush()
                stage_first, staged = stage_first + staged, 0
        del block, by_frame
    if staged:
        flush()
    return resample(out) if resample is not None else out


def _check_finite(curves: np.ndarray, block: int = 8192) -> None:
    if not all(map_blocks(lambda rows: bool(np.isfinite(curves[rows]).all()), curves.shape[0], block)):
        bad = int((~np.isfinite(curves)).any(axis=1).sum())
        raise InputError(
            f"{bad} voxels inside the analysed region contain NaN or infinite values; replace them "
            "(e.g. with 0) or exclude them with --mask"
        )


def _drop_background(data, region: np.ndarray) -> np.ndarray:
    """A search region without its background voxels (a box near the skull reaches into the air,
    whose zero signal has no ΔR2*): voxels whose temporal mean is below 5 % of the region's largest.
    ``data``: the series array, or its FrameSource (the region's voxels are then read in one pass)."""
    if isinstance(data, FrameSource):
        mean = _curves(data, np.flatnonzero(region), None).mean(axis=1)
    else:
        mean = data[region].mean(axis=1)
    keep = np.zeros_like(region)
    keep[region] = mean > 0.05 * mean.max() if mean.size and mean.max() > 0 else False
    if not keep.any():
        raise InputError("the AIF region holds no voxel with signal; draw it on an artery")
    return keep
