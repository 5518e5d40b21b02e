"""The PHAE decoder: Lorentzian residue × flow, convolved with the AIF on the data's own sampled window.

Everything here is plain torch on (batch, frames) tensors, in *frame units* (time t = k·Δt, MTT and
delay in frames). Why frame units: the indicator-dilution relation C = CBF·Δt·(Ca ⊛ R) is the same
equation at any frame interval once times are counted in frames, so the encoder, which only sees
sampled curves, never needs to know Δt; the caller multiplies MTT and delay by Δt.

Decoder (seed, Fayolle et al. ISBI 2025, eq. 4-6), with two changes measured in docs/validation.md:
* R(t) = 1 / (1 + (π(t - Td) / (2·MTT))²) for t >= Td, 0 before: a delay Td (output of the encoder)
  so that Tmax = Td exists and a late bolus is not mistaken for a long MTT.
* The flow amplitude F makes the model curve's area on the sampled window equal the data's:
  F = ∫C / ∫(Ca ⊛ R). On an infinite window ∫(Ca ⊛ R) = MTT·∫Ca and this is the seed's
  CBF = CBV/MTT with CBV = ∫C/∫Ca; on a finite window it also accounts for the Lorentzian's heavy
  tail (2 % of MTT lost at 4 s, 9 % at 20 s) and the AIF's tail, which the seed's amplitude does not.
Discretisation: the residue is integrated exactly over each frame bin [(j - ½), (j + ½)] (closed form,
arctan), then convolved with the sampled AIF by FFT on a zero-padded 2N grid (no wrap-around).
Sampling R at the frames instead (with the classic methods' linear AIF weights) gives R(0) a full
bin where the continuous integral gives it half, which biased MTT by +25 % at MTT 3 s, Δt 1.5 s in
the decoder test (Testing/test_dsc_phae_physics.py); bin integration also makes the model curve a
continuous function of the delay, so its gradient exists.
"""

from __future__ import annotations

import math

import torch


def lorentzian_residue(n_frames: int, mtt: torch.Tensor, delay: torch.Tensor) -> torch.Tensor:
    """R(k) at frames k = 0..n-1 for (B,) MTT and delay [frames]; shape (B, n). R(Td) = 1, ∫R = MTT."""
    k = torch.arange(n_frames, dtype=mtt.dtype, device=mtt.device)[None, :]
    s = k - delay[:, None]
    r = 1.0 / (1.0 + (math.pi * s / (2.0 * mtt[:, None])) ** 2)
    return torch.where(s >= 0, r, torch.zeros_like(r))


def lorentzian_kernel(n_frames: int, mtt: torch.Tensor, delay: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """∫ R over each frame bin [k - ½, k + ½] for k = -lead .. n-1 (frame units), (B, n + lead).

    ∫_Td^t R = (2·MTT/π)·arctan(π(t - Td)/(2·MTT)) for t >= Td, 0 before. ``lead`` > 0 leaves room for a
    negative delay (the tissue curve leads the measured AIF, e.g. an AIF measured downstream)."""
    edges = torch.arange(-lead, n_frames + 1, dtype=mtt.dtype, device=mtt.device)[None, :] - 0.5
    if not torch.is_grad_enabled():  # inference: the same arithmetic in place (fewer passes over memory)
        q = (math.pi / 2.0) / mtt[:, None]
        s = (edges - delay[:, None]).clamp_min_(0.0).mul_(q).atan_().div_(q)
        return s[:, 1:] - s[:, :-1]
    s = (edges - delay[:, None]).clamp_min(0.0)
    m = mtt[:, None]
    integral = (2.0 * m / math.pi) * torch.atan(math.pi * s / (2.0 * m))
    return integral[:, 1:] - integral[:, :-1]


def box_kernel(n_frames: int, mtt: torch.Tensor, delay: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """The box (plug-flow) residue R = 1 on [Td, Td + MTT), 0 elsewhere, integrated over each frame bin
    [k - ½, k + ½] for k = -lead .. n-1 (frame units), (B, n + lead): ∫_Td^t R = clamp(t - Td, 0, MTT)."""
    edges = torch.arange(-lead, n_frames + 1, dtype=mtt.dtype, device=mtt.device)[None, :] - 0.5
    s = torch.minimum((edges - delay[:, None]).clamp_min(0.0), mtt[:, None])
    return s[:, 1:] - s[:, :-1]


#: the decoder's residue families: the seed's Lorentzian alone, or a mixture of it with a box of the same MTT
RESIDUE_MODELS = ("lorentzian", "lorentzian+box")


def residue_kernel(n_frames: int, mtt: torch.Tensor, delay: torch.Tensor, lead: int = 0,
                   box_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's binned residue, (B, n + lead): the Lorentzian, or with ``box_weight`` w (B,) in [0, 1]
    (1 - w)·Lorentzian + w·box, both with the same delay and MTT, so R(Td) = 1 and ∫R = MTT for every w.

    Why a mixture (issue 14, round 12): a Lorentzian (or exponential) residue cannot take the flat start of a
    capillary-bed residue (gamma transit times) or plug flow (box). Fitting one to such a curve, the shorter
    MTT and later delay that reproduce its shape give a flow 40-86 % too high on noiseless curves (the training
    generator's gamma and box residues). The box weight lets the decoder reproduce a flat start at the right
    MTT, so that the reconstruction no longer pulls the flow away from the truth."""
    kernel = lorentzian_kernel(n_frames, mtt, delay, lead)
    if box_weight is None:
        return kernel
    w = box_weight[:, None]
    return kernel * (1.0 - w) + box_kernel(n_frames, mtt, delay, lead) * w


def convolve(aif: torch.Tensor, kernel: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """Discrete convolution Σ_j aif[k - j]·kernel[j + lead] for j = -lead .. n-1 of (B, n) rows, frame units
    (causal for lead = 0; with lead > 0 the kernel's first ``lead`` bins reach AIF frames after k, none past
    the window). aif may be (1, n) (one AIF for every row) or (B, n)."""
    n = kernel.shape[-1] - lead
    size = 2 * (n + lead)
    spec = torch.fft.rfft(aif, size) * torch.fft.rfft(kernel, size)
    return torch.fft.irfft(spec, size)[..., lead:lead + n]


def convolution_matrix(aif: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """(n, n + lead) matrix T of one AIF (n,) with kernel @ T.T = convolve(aif[None], kernel, lead): the
    decoder's convolution as one matrix product per case (n·(n + lead) multiply-adds per curve, no FFTs)."""
    n = aif.shape[-1]
    k = torch.arange(n, device=aif.device)[:, None]
    col = torch.arange(n + lead, device=aif.device)[None, :]
    idx = k - col + lead  # AIF frame k - j for the kernel bin j = col - lead
    return torch.where((idx >= 0) & (idx < n), aif[idx.clamp(0, n - 1)], 0.0)


def area(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of (B, n) curves in frame units (multiply by Δt for seconds)."""
    return curves.sum(dim=-1) - 0.5 * (curves[..., 0] + curves[..., -1])


def decode(curves: torch.Tensor, aif: torch.Tensor, mtt: torch.Tensor, delay: torch.Tensor,
           amplitude: str = "area", eps: float = 1e-6, lead: int = 0):
    """Model curves and flow for (B, n) tissue curves, AIF (1 or B, n), MTT and delay (B,) [frames].

    Returns (fitted (B, n), flow (B,)) with flow in 1/frame (divide by Δt for 1/s) and in the
    units of curves/aif. amplitude='area' (default, see module docstring) or 'seed' (F = CBV/MTT with
    CBV = ∫C/∫Ca on the window, as the paper).
    """
    unit = convolve(aif, lorentzian_kernel(curves.shape[-1], mtt, delay, lead), lead)  # Ca ⊛ R for F = 1
    if amplitude == "area":
        denom = area(unit)
    elif amplitude == "seed":
        denom = area(aif).expand(curves.shape[0]) * mtt
    else:
        raise ValueError(f"amplitude must be 'area' or 'seed', not {amplitude!r}")
    flow = area(curves) / denom.clamp_min(eps)
    return flow[:, None] * unit, flow
