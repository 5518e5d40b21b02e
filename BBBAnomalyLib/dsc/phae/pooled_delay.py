"""Bolus delay pooled over neighbouring voxels and removed before the network (issue 14, round 8).

Why: PHAE's per-voxel delay output drifts towards the training prior as contrast-to-noise falls. On the
project's own phantom with a 4 s tissue delay its GM Tmax was 4.02 / 3.23 / 2.35 / 1.17 s noiseless / at
SNR 100 / 50 / 20, and the MTT absorbed the missing delay, so CBF came out 13-47 % low. Arrival delay varies
slowly over the brain (it is set by the vascular territory), flow changes at every tissue boundary. So the
delay is estimated where the noise has been averaged away, from the mean curve of each block of about 8 mm
(64 voxels at 2 mm: ~8x the per-voxel contrast-to-noise), by the same network, and brought back to every
voxel by trilinear interpolation between block centres. Each voxel's curve is then moved earlier by its
pooled delay (linear interpolation, first and last values held) before the network sees it: the network
estimates only what is left (the tumour's own delay, a voxel that differs from its block), and Tmax =
pooled + residual. A shift does not change flow, so CBF needs no correction.

Blocks mix grey matter, white matter and CSF; that is harmless for the delay (shared by the block's
tissues) and is why flow is *not* pooled here (pooling flow over blocks made the maps worse: round 7).
"""

from __future__ import annotations

import numpy as np

#: edge of a pooling block in mm: large enough for ~8x the per-voxel CNR at 2 mm voxels, small against a
#: vascular territory
BLOCK_MM = 8.0
#: blocks with fewer brain voxels than this share of a full block take their delay from their neighbours
MIN_FILL = 0.25


def block_grid(brain: np.ndarray, voxel_sizes, block_mm: float = BLOCK_MM):
    """Per brain voxel (np.flatnonzero order) its block label, the block size (voxels per axis) and the
    block grid's shape."""
    brain = np.asarray(brain, bool)
    sizes = np.asarray(voxel_sizes, float)[: brain.ndim]
    block = np.clip(np.rint(block_mm / np.maximum(sizes, 1e-6)), 1, 8).astype(int)
    grid_shape = tuple(int(-(-s // b)) for s, b in zip(brain.shape, block))
    coords = np.nonzero(brain)
    labels = np.ravel_multi_index(tuple(c // b for c, b in zip(coords, block)), grid_shape).astype(np.int32)
    return labels, block, grid_shape


def block_means(curves: np.ndarray, labels: np.ndarray, n_blocks: int):
    """Mean curve of each non-empty block (one sparse product over all voxels) and its voxel count."""
    from scipy import sparse

    counts = np.bincount(labels, minlength=n_blocks)
    used = np.flatnonzero(counts)
    rows = np.searchsorted(used, labels)
    pool = sparse.csr_matrix((np.ones(labels.size, np.float32), (rows, np.arange(labels.size))),
                             shape=(used.size, labels.size))
    means = np.asarray(pool @ curves, dtype=np.float32) / counts[used, None].astype(np.float32)
    return means, used, counts[used]


def voxel_delays(block_delay: np.ndarray, used: np.ndarray, counts: np.ndarray, block: np.ndarray,
                 grid_shape: tuple, brain: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of the block delays at every brain voxel (np.flatnonzero order).

    Sparse blocks (under MIN_FILL of a full block) and empty ones take the count-weighted mean of their
    3x3x3 neighbours' reliable delays, repeatedly, so that interpolation never reads an unset block."""
    from scipy import ndimage

    value = np.zeros(int(np.prod(grid_shape)), np.float64)
    weight = np.zeros_like(value)
    reliable = counts >= MIN_FILL * float(np.prod(block))
    if not reliable.any():
        reliable = counts > 0
    value[used[reliable]] = block_delay[reliable]
    weight[used[reliable]] = counts[reliable]
    value, weight = value.reshape(grid_shape), weight.reshape(grid_shape)
    known = weight > 0
    filled = np.where(known, value, 0.0)
    kernel = np.ones((3,) * len(grid_shape))
    for _ in range(max(grid_shape)):  # grow the known region one block per pass until the grid is covered
        if known.all():
            break
        total = ndimage.convolve(np.where(known, filled * weight, 0.0), kernel, mode="constant")
        mass = ndimage.convolve(np.where(known, weight, 0.0), kernel, mode="constant")
        grow = ~known & (mass > 0)
        filled[grow] = total[grow] / mass[grow]
        weight[grow] = mass[grow] / kernel.size
        known |= grow
    return trilinear_at(filled, block, brain)


def _linear_weights(n_voxels: int, block: int, n_blocks: int) -> np.ndarray:
    """(n_voxels, n_blocks) linear interpolation weights along one axis: block centres sit at
    (i + 0.5) * block - 0.5 in voxel units; beyond the first and last centre the edge value is held."""
    weights = np.zeros((n_voxels, n_blocks))
    x = np.clip((np.arange(n_voxels) + 0.5) / block - 0.5, 0.0, n_blocks - 1)
    lo = np.minimum(np.floor(x).astype(int), max(n_blocks - 2, 0))
    frac = x - lo
    rows = np.arange(n_voxels)
    weights[rows, lo] = 1.0 - frac
    if n_blocks > 1:
        weights[rows, lo + 1] += frac
    return weights


def trilinear_at(grid_values: np.ndarray, block, brain: np.ndarray) -> np.ndarray:
    """Block-grid values linearly interpolated at every brain voxel (np.flatnonzero order), float32.

    What ``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` gives at the voxel positions, computed
    separably because the positions lie on a regular grid: the last axes are interpolated onto the voxel
    grid in small matrix products (a volume as large as the image over the first axis's block size), then
    each brain voxel combines its two neighbours along the first axis. A tenth of the time of
    map_coordinates' per-point loop on a million voxels (docs/benchmarks.md, issue 14 round 13)."""
    grid_values = np.asarray(grid_values, np.float64)
    if grid_values.ndim != brain.ndim:
        raise ValueError(f"a {grid_values.ndim}-D block grid for a {brain.ndim}-D brain mask")
    partial = grid_values
    for axis in range(brain.ndim - 1, 0, -1):  # last axes first: (g0, g1, g2) -> (g0, g1, Z) -> (g0, Y, Z)
        w = _linear_weights(brain.shape[axis], int(block[axis]), grid_values.shape[axis])
        partial = np.moveaxis(np.tensordot(partial, w, axes=([axis], [1])), -1, axis)
    g0 = grid_values.shape[0]
    x = np.clip((np.arange(brain.shape[0]) + 0.5) / int(block[0]) - 0.5, 0.0, g0 - 1)
    lo = np.minimum(np.floor(x).astype(np.intp), max(g0 - 2, 0))
    hi = np.minimum(lo + 1, g0 - 1)
    frac = x - lo
    # one slab of the first axis at a time: np.flatnonzero order is C order, so slab i's brain voxels are
    # the next run of the output
    out = np.empty(int(np.count_nonzero(brain)), np.float32)
    start = 0
    for i in range(brain.shape[0]):
        inside = brain[i]
        n = int(np.count_nonzero(inside))
        if n:
            out[start:start + n] = ((1.0 - frac[i]) * partial[lo[i]][inside] + frac[i] * partial[hi[i]][inside])
            start += n
    return out


def shift_earlier(x, frames):
    """Curves (n, T) torch tensor moved earlier by `frames` (n,) frames (may be fractional or negative):
    out[:, t] = x[:, t + frames], linear interpolation, the first and last values held beyond the ends."""
    import torch

    n_frames = x.shape[1]
    pos = (torch.arange(n_frames, dtype=x.dtype, device=x.device)[None, :] + frames[:, None]).clamp(0, n_frames - 1)
    lo = pos.floor().clamp(max=n_frames - 2).long()
    frac = pos - lo
    return torch.lerp(x.gather(1, lo), x.gather(1, lo + 1), frac)


def shift_whole_frames(x, frames):
    """:func:`shift_earlier` for whole frames (an integer tensor): one gather, nothing interpolated, and the curves
    themselves where no row moves."""
    import torch

    if not bool(frames.any()):
        return x
    n_frames = x.shape[1]
    index = (torch.arange(n_frames, device=x.device)[None, :] + frames.long()[:, None]).clamp_(0, n_frames - 1)
    return x.gather(1, index)
