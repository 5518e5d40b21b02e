"""How well each capillary transit shape explains a case's tissue curves, summed over many voxels (issue 14, round 16).

Why: per voxel at SNR 20-50 the transit shape is not identifiable (scripts/dsc_shape_identifiability.py: the
Cramér-Rao bound on log CBF grows 3-9x when the shape is free), but over ~100 voxels a maximum-likelihood fit under
each candidate shape picks the right one (docs/validation.md, issue 14 round 15). Round 14 gave the network a case
context made of median Tikhonov residues, which blur the shape at low SNR; this module gives it the likelihood
itself: for each candidate shape, each curve's least-squares fit over a grid of MTT x delay (CBF in closed form),
and the case's summed residual.

Model of one curve under a shape: C = F·(Ca ⊛ R) with the residue R of a gamma transit-time distribution of
shape k (R(t) = 1 - P(k, k·t/MTT); k = 1 is the exponential, ``box`` plug flow), integrated exactly over each frame
bin and convolved with the sampled AIF (the PHAE decoder's discretisation, physics.py). ∫₀ᵗ R for the gamma
family in closed form: t - t·P(k, x) + MTT·P(k + 1, x), x = k·t/MTT.

Output, per shape s: log ΣRSS_s - min_s' log ΣRSS_s' (0 for the best shape; scale-free: the curves' units and
the AIF's do not matter), over the voxels with the larger half of the curve areas (noise-only voxels fit every
shape alike and would only dilute the sums).
"""

from __future__ import annotations

import math

import torch

from .physics import convolution_matrix

#: the candidate shapes (dsc_physics names): exponential (gamma k 1) ... plug flow
EVIDENCE_SHAPES = ("exponential", "gamma1.5", "gamma", "gamma8", "box")
#: the fit grid: MTT 0.7-30 s in 10 % steps, delay -3..+5 s in 0.25 s steps (the training prior's range)
MTT_GRID_S = (0.7, 30.0, 40)
DELAY_GRID_S = (-3.0, 5.0, 0.25)
MAX_VOXELS = 8192


def _gamma_k(shape: str) -> float | None:
    """k of a shape name: exponential 1, gamma 3, gamma<k>, box None (plug flow)."""
    if shape == "exponential":
        return 1.0
    if shape == "box":
        return None
    if shape == "gamma":
        return 3.0
    if shape.startswith("gamma"):
        k = float(shape[5:])
        if not k >= 1.0:
            raise ValueError(f"gamma shape k must be >= 1, not {k:g}")
        return k
    raise ValueError(f"unknown transit shape {shape!r}: exponential, gamma, gamma<k> or box")


def homogeneity_code(shape: str) -> float:
    """The code a shape-told network reads (round 16): 1/k of the gamma transit shape (exponential 1, gamma k 3
    1/3, plug flow 0). The Lorentzian residue, which the evidence takes for the exponential, codes as 1."""
    if shape == "lorentzian":
        return 1.0
    k = _gamma_k(shape)
    return 0.0 if k is None else 1.0 / k


def best_shape(curves: torch.Tensor, aif: torch.Tensor, dt: float, shapes=EVIDENCE_SHAPES) -> str:
    """The candidate shape whose fits leave the least summed residual over the case's informative curves."""
    return shapes[int(evidence(curves, aif, dt, shapes).argmin())]


def residue_integral(shape: str, t: torch.Tensor, mtt: torch.Tensor) -> torch.Tensor:
    """∫₀ᵗ R(s) ds for t >= 0 (broadcasting t and mtt [same units]) under ``shape``."""
    k = _gamma_k(shape)
    if k is None:
        return torch.minimum(t, mtt)
    x = k * t / mtt
    kk = torch.full_like(x, k)
    return t - t * torch.special.gammainc(kk, x) + mtt * torch.special.gammainc(kk + 1.0, x)


def templates(aif: torch.Tensor, dt: float, shape: str, mtt_grid=MTT_GRID_S, delay_grid=DELAY_GRID_S) -> torch.Tensor:
    """(n, M·D) model curves per unit flow (float64) for the (n,) sampled AIF on the MTT x delay grid."""
    a = aif.reshape(-1).double()
    n = a.numel()
    mtt = torch.exp(torch.linspace(math.log(mtt_grid[0]), math.log(mtt_grid[1]), int(mtt_grid[2]), dtype=torch.float64))
    delay = torch.arange(delay_grid[0], delay_grid[1] + 1e-9, delay_grid[2], dtype=torch.float64)
    lead = int(math.ceil(max(-delay_grid[0], 0.0) / dt)) + 1
    edges = (torch.arange(-lead, n + 1, dtype=torch.float64) - 0.5) * dt  # bin edges [s]
    mm, dd = (v.reshape(-1) for v in torch.meshgrid(mtt, delay, indexing="ij"))
    s = (edges[None, :] - dd[:, None]).clamp_min(0.0)
    cum = residue_integral(shape, s, mm[:, None].expand_as(s))
    kernel = (cum[:, 1:] - cum[:, :-1]) / dt  # mean of R over each bin: the decoder's binned residue, in frames
    return (kernel @ convolution_matrix(a, lead).T).T  # (n, M·D)


def voxel_rss(curves: torch.Tensor, aif: torch.Tensor, dt: float, shapes=EVIDENCE_SHAPES,
              chunk: int = 1024, echo_time: float | None = None) -> torch.Tensor:
    """(n, len(shapes)) float64: each curve's least residual sum of squares over the MTT x delay grid, per shape.

    ``echo_time`` [s] (ΔR2* curves): weighted least squares with frame weights exp(-2·TE·ΔR2*(t)), the inverse of
    the variance of ΔR2* = -ln(S/S0)/TE under Gaussian noise on the signal (σ²/(TE·S)²): the frames at the bolus
    peak, where the signal is lowest, are the noisiest."""
    c = curves.reshape(-1, curves.shape[-1]).double()
    w = None if echo_time is None else torch.exp(-2.0 * float(echo_time) * c.clamp_min(0.0))
    out = torch.empty(c.shape[0], len(shapes), dtype=torch.float64)
    for j, shape in enumerate(shapes):
        unit = templates(aif, dt, shape)
        norm = (unit * unit).sum(dim=0).clamp_min(1e-300)
        for s in range(0, c.shape[0], chunk):
            x = c[s:s + chunk]
            if w is None:
                energy = (x * x).sum(dim=-1)
                proj = x @ unit  # (B, K): the flow of each template is proj / norm (clamped at 0)
                nrm = norm
            else:
                ws = w[s:s + chunk]
                energy = (ws * x * x).sum(dim=-1)
                proj = (ws * x) @ unit
                nrm = (ws @ (unit * unit)).clamp_min(1e-300)  # (B, K)
            flow = proj.clamp_min(0.0) / nrm
            rss = energy[:, None] - 2.0 * flow * proj + flow * flow * nrm
            out[s:s + chunk, j] = rss.amin(dim=1).clamp_min(1e-300)
    return out


def informative(curves: torch.Tensor, max_voxels: int = MAX_VOXELS) -> torch.Tensor:
    """The curves with the larger half of the areas, at most ``max_voxels`` (an even stride through them)."""
    c = curves.reshape(-1, curves.shape[-1])
    area = c.sum(dim=-1)
    keep = area >= area.median() if c.shape[0] > 1 else torch.ones(c.shape[0], dtype=torch.bool)
    c = c[keep]
    if c.shape[0] > max_voxels:
        c = c.index_select(0, torch.linspace(0, c.shape[0] - 1, max_voxels).long())
    return c


def evidence(curves: torch.Tensor, aif: torch.Tensor, dt: float, shapes=EVIDENCE_SHAPES,
             max_voxels: int = MAX_VOXELS, statistic: str = "sum", echo_time: float | None = None) -> torch.Tensor:
    """(len(shapes),) how much worse each shape explains the case's informative curves (``informative``) than the
    best shape, in the curves' dtype: ``statistic`` "sum": log ΣRSS_s - min log ΣRSS; "log": mean log RSS_s - min
    (a geometric mean: a few voxels of large misfit, such as leaky or partial-volume voxels, do not decide)."""
    rss = voxel_rss(informative(curves, max_voxels), aif, dt, shapes, echo_time=echo_time)
    if statistic == "sum":
        logs = torch.log(rss.sum(dim=0))
    elif statistic == "log":
        logs = torch.log(rss).mean(dim=0)
    else:
        raise ValueError(f"statistic must be 'sum' or 'log', not {statistic!r}")
    return (logs - logs.min()).to(curves.dtype)
