"""Synthetic just-out-of-distribution (JOOD) anomalies for RecDiscNet, drawn inside the brain.

As in the seed: 0, 1 or 2 ellipsoids per sample (P 0.2 / 0.6 / 0.2), radius 12–26 mm (the seed's
5–11 voxels of 2.4 mm), semi-axes r·U(0.5, 1) in a random orientation. Values are Normal or
Uniform with mean = the sample's brain-mean S/S0 ("full") or half of it, sd 0.12, drawn per voxel
and channel ("random"), once per ellipsoid for all its voxels ("directional", a K-vector), or
once per voxel for all channels ("isotropic"); "mix" draws the kind per ellipsoid.

Unlike the public code, anomalies are redrawn for every batch (a fresh generator per epoch and
step) and the ellipsoid is cut to the brain mask with its centre on a brain voxel, so the
discriminator never learns "anomalies live outside the head".
"""

from __future__ import annotations

import math

import torch

DISTRIBUTIONS = ("normal", "uniform")
MEANS = ("full", "half")
MODES = ("random", "directional", "isotropic")
VALUE_SD = 0.12


def draw_anomalies(x: torch.Tensor, brain: torch.Tensor, generator: torch.Generator, voxel_mm: float = 4.0,
                   radius_mm=(12.0, 26.4), kind: str = "mix") -> tuple[torch.Tensor, torch.Tensor]:
    """(x with anomalies, labels) for a batch x (B, K, gx, gy, gz) and brain (B, gx, gy, gz) bool.

    ``kind`` is "mix" or "<distribution>-<mean>-<mode>", e.g. "normal-full-directional". x is not modified.
    """
    out = x.clone()
    labels = torch.zeros(brain.shape, dtype=x.dtype, device=x.device)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in brain.shape[1:]],
                                      indexing="ij"), -1).to(x.device)
    for b in range(x.shape[0]):
        count = int(torch.multinomial(torch.tensor([0.2, 0.6, 0.2]), 1, generator=generator))
        inside = torch.nonzero(brain[b])
        if inside.numel() == 0:
            continue
        brain_mean = float(x[b][:, brain[b]].mean())
        for _ in range(count):
            centre = inside[int(torch.randint(len(inside), (1,), generator=generator))].float()
            r = _uniform(generator, *radius_mm) / voxel_mm
            semi = r * torch.tensor([_uniform(generator, 0.5, 1.0) for _ in range(3)])
            rotation = _random_rotation(generator)
            local = (grid - centre) @ rotation  # coordinates along the ellipsoid's axes
            region = ((local / semi) ** 2).sum(-1) <= 1.0
            region &= brain[b]
            n = int(region.sum())
            if n == 0:
                continue
            dist, mean, mode = _pick(kind, generator)
            centre_value = brain_mean if mean == "full" else 0.5 * brain_mean
            shape = {"random": (x.shape[1], n), "directional": (x.shape[1], 1), "isotropic": (1, n)}[mode]
            values = _values(dist, centre_value, shape, generator).expand(x.shape[1], n)
            out[b][:, region] = values.clamp(0.0, 1.0).to(x.dtype)
            labels[b][region] = 1.0
    return out, labels


def _pick(kind: str, generator) -> tuple[str, str, str]:
    if kind == "mix":
        return tuple(choices[int(torch.randint(len(choices), (1,), generator=generator))]
                     for choices in (DISTRIBUTIONS, MEANS, MODES))
    dist, mean, mode = kind.split("-")
    if dist not in DISTRIBUTIONS or mean not in MEANS or mode not in MODES:
        raise ValueError(f"unknown anomaly kind {kind!r}")
    return dist, mean, mode


def _values(dist: str, centre: float, shape, generator) -> torch.Tensor:
    if dist == "normal":
        return centre + VALUE_SD * torch.randn(shape, generator=generator)
    half_width = VALUE_SD * math.sqrt(3.0)  # a uniform distribution with the same sd
    return centre + half_width * (2 * torch.rand(shape, generator=generator) - 1)


def _uniform(generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _random_rotation(generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    return q * torch.sign(torch.diagonal(r))[None, :]
