"""The PHAE network: a small 1D fully convolutional encoder on the (C, Ca) pair and the physics decoder.

Seed (Fayolle et al., ISBI 2025): 4 blocks of Conv1d(k3, s1, p1) + BatchNorm + LeakyReLU(0.02) with
32 → 64 → 128 → 256 maps, average pooling, a linear layer → MTT. That encoder costs ~15 MFLOP per
voxel at 60 frames, about a minute per whole brain on 2 CPU cores, so the default here is narrower and
strided (16 → 16 → 32 → 32 maps, strides 2, 1, 2, 1: a 19-frame receptive field, 1/30 of the cost),
pools by mean *and* max, and has a second output, the bolus delay. Widths and strides are
constructor arguments (stored in the weights' model card), so the seed's encoder is one config away.

Inputs are normalised per voxel (C / its peak, Ca / its peak) rather than by the subject's maximum
as in the seed: MTT and delay depend on the shapes only, the flow amplitude comes from areas in the
decoder, and per-voxel scaling keeps tissue curves (a few % of the arterial peak) at unit size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .physics import decode

MTT_RANGE_S = (0.5, 40.0)  # output bounds of MTT [s]: the training range 1-20 s with a margin
MTT_RANGE_FRAMES = (0.25, 40.0)  # bounds when the frame interval is not given
MAX_DELAY_FRAMES = 15.0  # output bound of the delay in frames


def normalise(curves: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) curves divided by their peak after a 3-frame moving average (a single noisy frame
    does not set the scale); returns (normalised, scale (B,))."""
    smooth = nn.functional.avg_pool1d(curves[:, None, :], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    scale = smooth.abs().amax(dim=-1).clamp_min(eps)
    return curves / scale[:, None], scale


class PHAEEncoder(nn.Module):
    """(B, 2, n) normalised (C, Ca) → (MTT, delay) in frames, each (B,)."""

    def __init__(self, widths=(16, 16, 32, 32), strides=(2, 1, 2, 1), kernel: int = 3, hidden: int = 32,
                 slope: float = 0.02, min_delay_frames: float = 0.0, uncertainty: bool = False):
        super().__init__()
        self.config = {"widths": list(widths), "strides": list(strides), "kernel": kernel, "hidden": hidden,
                       "slope": slope}
        if min_delay_frames:  # only written when used, so older model cards keep loading unchanged
            self.config["min_delay_frames"] = float(min_delay_frames)
        self.min_delay = float(min_delay_frames)
        if uncertainty:  # a third output: the predicted SD of log CBF (trained by a Gaussian NLL on simulated truth)
            self.config["uncertainty"] = True
        self.uncertainty = bool(uncertainty)
        # softplus(z + shift) - min_delay starts near 0.13 frames at z = 0 for any min_delay (as before: softplus(z - 2))
        self.delay_shift = math.log(math.expm1(self.min_delay + 0.127)) if self.min_delay else -2.0
        layers, channels = [], 2
        for width, stride in zip(widths, strides):
            layers += [nn.Conv1d(channels, width, kernel, stride=stride, padding=kernel // 2),
                       nn.BatchNorm1d(width), nn.LeakyReLU(slope)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * channels, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, 3 if uncertainty else 2))

    def forward(self, x: torch.Tensor, mtt_range=MTT_RANGE_FRAMES):
        if self.training or torch.is_grad_enabled():
            # Training or adaptation: the live layers (BatchNorm uses batch statistics in train mode,
            # its running statistics in eval mode); the weights may change, so drop the folded copy.
            self.__dict__["_fused"] = None
            h = self.features(x)
        else:
            # Inference: BatchNorm folded into the convolutions, cached outside the module tree
            # (so it is not part of the state dict).
            if self.__dict__.get("_fused") is None:
                self.__dict__["_fused"] = fuse_batchnorm(self.features)
            h = self.__dict__["_fused"](x)
        z = self.head(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))
        lo, hi = (math.log(v) for v in mtt_range)
        mtt = torch.exp(lo + (hi - lo) * torch.sigmoid(z[:, 0]))
        delay = (nn.functional.softplus(z[:, 1] + self.delay_shift) - self.min_delay).clamp(max=MAX_DELAY_FRAMES)
        if self.uncertainty:
            return mtt, delay, nn.functional.softplus(z[:, 2]) + 0.02
        return mtt, delay


def fuse_batchnorm(features: nn.Sequential) -> nn.Sequential:
    """An inference copy with each eval-mode BatchNorm folded into the preceding Conv1d and the
    LeakyReLUs applied in place: the same function, two passes over memory less per block
    (inference is memory-bound at these widths; in place cut a whole brain from ~1.9 to ~1.45 s)."""
    out, modules, i = [], list(features), 0
    while i < len(modules):
        m = modules[i]
        if isinstance(m, nn.Conv1d) and i + 1 < len(modules) and isinstance(modules[i + 1], nn.BatchNorm1d):
            bn = modules[i + 1]
            fused = nn.Conv1d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                              dilation=m.dilation, bias=True)
            with torch.no_grad():
                gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                fused.weight.copy_(m.weight * gain[:, None, None])
                bias = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
                fused.bias.copy_((bias - bn.running_mean) * gain + bn.bias)
            out.append(fused)
            i += 2
        elif isinstance(m, nn.LeakyReLU):
            out.append(nn.LeakyReLU(m.negative_slope, inplace=True))  # its input is the fresh conv output
            i += 1
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out).eval().requires_grad_(False)


class PHAE(nn.Module):
    """Encoder + physics decoder. forward(curves (B, n), aif (1 or B, n)) returns a dict with
    mtt, delay [frames], flow [1/frame, curve units], fitted (B, n) and the normalised MAE loss
    per curve (B,)."""

    def __init__(self, amplitude: str = "area", **encoder_config):
        super().__init__()
        self.encoder = PHAEEncoder(**encoder_config)
        self.amplitude = amplitude

    @property
    def config(self) -> dict:
        return {**self.encoder.config, "amplitude": self.amplitude}

    def forward(self, curves: torch.Tensor, aif: torch.Tensor, dt: float | None = None) -> dict:
        """dt [s]: bounds MTT to MTT_RANGE_S (without it, to MTT_RANGE_FRAMES frames). Why bound in
        seconds: an unbounded short MTT in a noise-dominated voxel makes CBF = CBV/MTT explode, and
        ROI means of CBF are dominated by those voxels (seen on the reference object at SNR 50)."""
        c_n, c_scale = normalise(curves)
        a_n, a_scale = normalise(aif)
        x = torch.stack([c_n, a_n.expand_as(c_n)], dim=1)
        bounds = MTT_RANGE_FRAMES if dt is None else (MTT_RANGE_S[0] / dt, MTT_RANGE_S[1] / dt)
        out = self.encoder(x, bounds)
        mtt, delay = out[0], out[1]
        lead = int(math.ceil(self.encoder.min_delay)) + 1 if self.encoder.min_delay else 0
        fitted_n, flow_n = decode(c_n, a_n, mtt, delay, self.amplitude, lead=lead)
        loss = (fitted_n - c_n).abs().mean(dim=-1)
        ratio = c_scale / a_scale
        res = {"mtt": mtt, "delay": delay, "flow": flow_n * ratio, "fitted": fitted_n * c_scale[:, None], "loss": loss}
        if len(out) > 2:
            res["log_cbf_sd"] = out[2]
        return res
