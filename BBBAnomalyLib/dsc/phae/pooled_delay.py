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
    # block centres sit at (i + 0.5) * block - 0.5 in voxel units
    coords = [(c + 0.5) / b - 0.5 for c, b in zip(np.nonzero(brain), block)]
    return ndimage.map_coordinates(filled, coords, order=1, mode="nearest").astype(np.float32)


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
