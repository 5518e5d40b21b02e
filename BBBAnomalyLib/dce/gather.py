"""The analysed voxels' curves as rows: the gather and scatter steps of ``run_dce``.

Held apart from :mod:`.pipeline` because it is about memory layout, not tracer kinetics (as :mod:`..dsc.gather` is
for DSC): the one-pass float32 gather of the analysed voxels' curves from a 4D array in either memory order
(:func:`_gather_curves`), their finiteness check (:func:`_check_finite`), the mean of some rows without copying them
(:func:`_rows_mean`), the brain's rows moved to the front in place (:func:`_brain_rows`), all by blocks of
``ROW_BLOCK`` rows (read at call time from this module), and the per-voxel values put back on the grid
(:func:`_scatter`). Issue 17's memory bound (one float32 copy of the curves) rests on these.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError


#: Rows handled per block by the gathers and reductions over the curves (bounds their temporaries).
ROW_BLOCK = 8192


def _gather_curves(data: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(len(order), T) float32 curves of the voxels at flat C-order indices ``order`` of a 4D array,
    gathered by blocks: no intermediate copy in the input's dtype, nor of a non-contiguous input."""
    frames = data.shape[3]
    out = np.empty((order.size, frames), np.float32)
    if data.flags.c_contiguous or data.flags.f_contiguous:
        layout = "C" if data.flags.c_contiguous else "F"
        flat = data.reshape((-1, frames), order=layout)  # a view for either memory layout
        by_frame = flat.T if layout == "F" else None  # (T, voxels), each frame contiguous; voxels in F order
        for start in range(0, order.size, ROW_BLOCK):
            rows = slice(start, start + ROW_BLOCK)
            if layout == "C":
                out[rows] = flat[order[rows]]
            else:  # a frame-major gather (contiguous reads per frame), then a small transpose
                spatial = data.shape[:3]
                order_f = np.ravel_multi_index(np.unravel_index(order[rows], spatial), spatial, order="F")
                out[rows] = np.take(by_frame, order_f, axis=1).T
    else:
        out[:] = data.reshape(-1, frames)[order]
    return out


def _check_finite(curves: np.ndarray) -> None:
    for start in range(0, curves.shape[0], ROW_BLOCK):
        if not np.isfinite(curves[start:start + ROW_BLOCK]).all():
            bad = sum(int((~np.isfinite(curves[s:s + ROW_BLOCK])).any(axis=1).sum())
                      for s in range(0, curves.shape[0], ROW_BLOCK))
            raise InputError(f"{bad} voxels inside the analysed region contain NaN or infinite values; replace them "
                             "(e.g. with 0) or exclude them with --mask")


def _rows_mean(curves: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """curves[rows].mean(axis=0) without gathering the rows into a copy: as it was when every row is
    taken, else summed in float64 by blocks (a float32 result)."""
    if rows.all():
        return curves.mean(axis=0)
    idx = np.flatnonzero(rows)
    total = np.zeros(curves.shape[1], np.float64)
    for start in range(0, idx.size, ROW_BLOCK):
        total += curves[idx[start:start + ROW_BLOCK]].sum(axis=0, dtype=np.float64)
    return (total / max(idx.size, 1)).astype(np.float32)


def _brain_rows(curves: np.ndarray, in_brain: np.ndarray, block: int = ROW_BLOCK) -> np.ndarray:
    """curves[in_brain] as the leading rows of ``curves`` itself (moved forward in place by
    blocks: each block is gathered before it is written, and a row never moves backwards, so no
    row is overwritten before it is read); a view of them is returned."""
    if in_brain.all():
        return curves
    idx = np.flatnonzero(in_brain)
    for start in range(0, idx.size, block):
        rows = idx[start:start + block]
        curves[start:start + rows.size] = curves[rows]
    return curves[:idx.size]


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, np.float32)
    out[mask] = values
    return out
