"""3D convolutional autoencoder anomaly map (seed cae-brain-anomaly), trained on normal anatomy.

Input: the normalised T1 and FLAIR inside the brain's bounding box, resampled to the network's
shape; output: their reconstruction. The voxel anomaly map is the channel-mean absolute
residual (smoothed, σ = 1 network voxel) mapped back to the native T1 grid; the patient-level
score is the mean of the top 1 % of residuals in the brain, also given as a z-score against the
training cases' own scores (stored with the weights).

Reshape: ``global`` resizes every case to one shape; ``clustered`` (the seed's "clustered
reshape") groups the training cases by their bounding-box size (k-means) and resizes each case to
its group's modal shape instead, so that similar-sized volumes are distorted least; at inference
the nearest group's shape is used. Shapes are multiples of 8 (three stride-2 levels).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .preprocessing import interpolation_matrix, resample_separable

TOP_FRACTION = 0.01


class ConvAutoencoder3D(nn.Module):
    def __init__(self, channels: int = 2, width: int = 8):
        super().__init__()
        self.config = {"channels": channels, "width": width}
        w = width
        self.encoder = nn.Sequential(
            nn.Conv3d(channels, w, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv3d(w, 2 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv3d(2 * w, 4 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv3d(4 * w, 4 * w, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.ConvTranspose3d(4 * w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.ConvTranspose3d(2 * w, w, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.ConvTranspose3d(w, w, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv3d(w, channels, 3, padding=1))  # linear: a tanh saturates on the -1 background and stalls
        # normal-training statistics of the patient score (mean, sd), filled in by training
        self.register_buffer("score_stats", torch.tensor([0.0, 1.0]))

    def forward(self, x):
        # inputs are on [-1, 1] with -1 as background: work on x + 1 so that the untrained
        # network already outputs background and learning goes to the brain
        return self.decoder(self.encoder(x + 1.0)) - 1.0


def brain_box(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = np.argwhere(brain)
    return coords.min(axis=0), coords.max(axis=0) + 1


def _round8(v) -> list[int]:
    return [int(max(8, 8 * round(float(x) / 8))) for x in v]


def plan_reshape(box_shapes, mode: str = "global", shape=(48, 56, 48), clusters: int = 3, seed: int = 0) -> dict:
    """The reshape policy stored with the weights: one shape, or k-means groups of box shapes
    with each group's modal (most common, rounded to 8) shape."""
    if mode == "global":
        return {"mode": "global", "shape": [int(v) for v in shape]}
    if mode != "clustered":
        raise ValueError("reshape mode is 'global' or 'clustered'")
    boxes = np.asarray(box_shapes, np.float64)
    k = int(min(clusters, len(np.unique(boxes, axis=0))))
    rng = np.random.default_rng(seed)
    centres = boxes[rng.choice(len(boxes), k, replace=False)]
    for _ in range(50):  # Lloyd's k-means on the three box sides
        assign = np.argmin(((boxes[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.array([boxes[assign == j].mean(0) if np.any(assign == j) else centres[j] for j in range(k)])
    shapes = []
    for j in range(k):
        members = [tuple(_round8(np.asarray(b) / 2)) for b in boxes[assign == j]]  # half resolution, like the seed's downsizing
        values, counts = np.unique(np.asarray(members), axis=0, return_counts=True)
        shapes.append([int(v) for v in values[int(np.argmax(counts))]])
    return {"mode": "clustered", "centres": centres.tolist(), "shapes": shapes}


def target_shape(policy: dict, box_shape) -> list[int]:
    if policy["mode"] == "global":
        return list(policy["shape"])
    d = ((np.asarray(policy["centres"]) - np.asarray(box_shape, np.float64)[None]) ** 2).sum(-1)
    return list(policy["shapes"][int(np.argmin(d))])


def _box_matrices(lo, hi, shape):
    return [interpolation_matrix(int(n), int(h - l), 0.0, (h - l) / n) for l, h, n in zip(lo, hi, shape)]


def to_network(channels: list[np.ndarray], brain: np.ndarray, shape) -> np.ndarray:
    """(c, *shape) float32: each [-1, 1] channel's brain box resampled (sample centres span the box)."""
    lo, hi = brain_box(brain)
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    mats = []
    for l, h, n in zip(lo, hi, shape):
        step = (h - l) / n
        mats.append(interpolation_matrix(int(n), int(h - l), 0.5 * step - 0.5, step))
    return np.stack([resample_separable(c[box] + 1.0, mats) - 1.0 for c in channels])


def to_native(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A (*shape) network-grid map back onto the native grid (0 outside the brain)."""
    lo, hi = brain_box(brain)
    mats = []
    for l, h, n in zip(lo, hi, volume.shape):
        step = (h - l) / n  # native voxels per network voxel
        mats.append(interpolation_matrix(int(h - l), int(n), (0.5 - 0.5 * step) / step, 1.0 / step))
    out = np.zeros(brain.shape, np.float32)
    out[tuple(slice(l, h) for l, h in zip(lo, hi))] = resample_separable(volume, mats)
    out[~brain] = 0.0  # as np.where(brain, out, 0.0), without two more volumes (issue 17)
    return out


@torch.no_grad()
def anomaly(model, channels: list[np.ndarray], brain: np.ndarray, policy: dict, device=None, affine=None):
    """(voxel anomaly map on the native grid, patient score, patient z-score).

    ``affine`` (the native grid's): the arrays are read in the storage order the weights were trained on --
    left-right, anterior-posterior, superior-inferior, the top of the head last (preprocessing.canonical_axes) --
    and the map is returned in the caller's order. The network's box is resampled to a fixed shape axis by axis,
    so a brain stored sagittally or upside down would otherwise be squeezed into the wrong axes. Without it (or
    for BraTS / phantom storage) the arrays are used as they are."""
    if affine is not None:
        from .preprocessing import canonical_axes

        order, flip = canonical_axes(np.asarray(affine, np.float64))
        if order != (0, 1, 2) or flip:
            def view(a):
                a = np.transpose(np.asarray(a), order)
                return a[:, :, ::-1] if flip else a

            native, score, z = anomaly(model, [view(c) for c in channels], view(brain), policy, device)
            native = native[:, :, ::-1] if flip else native
            return np.ascontiguousarray(np.transpose(native, np.argsort(order))), score, z
    device = device or torch.device("cpu")
    model.eval()
    lo, hi = brain_box(brain)
    shape = target_shape(policy, hi - lo)
    x = torch.as_tensor(to_network(channels, brain, shape))[None].to(device)
    recon = model(x)
    residual = (recon - x).abs().mean(dim=1)[0].cpu().numpy()
    residual = ndimage.gaussian_filter(residual, 1.0)
    native = to_native(residual, brain)
    values = np.sort(native[brain])[::-1]
    score = float(values[: max(1, int(TOP_FRACTION * values.size))].mean())
    mean, sd = (float(v) for v in model.score_stats)
    return native, score, (score - mean) / max(sd, 1e-6)
