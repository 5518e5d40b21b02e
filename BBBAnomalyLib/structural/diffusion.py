"""Enhancement-type-guided conditional diffusion (seed cbsi-contrast-free-bbb-status), sized for a CPU.

* The network sees the noisy T1Gd x_t concatenated with the T1 and the FLAIR (all on [-1, 1]) and
  predicts x0 directly (tanh output), as the seed does.
* The ET label (0 non-enhancing / intact BBB, 1 enhancing / disrupted) is embedded and added to
  the time-step embedding; the sum modulates every residual block by scale and shift (FiLM).
* An auxiliary head segments the whole tumor from the decoder's features (Dice loss, weight 0.1).
* Cosine noise schedule over T = 1000 steps; inference is a deterministic DDIM (η = 0) with a few
  steps, both ET labels in one batch and the *same* starting noise for both, so the two
  syntheses differ only by the label. A seed fixes the noise: same seed, same images.

The x0 head adds the network's output to atanh(T1) before the tanh: still an x0 prediction, but
one that starts from the T1 and learns the contrast change, which a few CPU minutes of training can
reach (without it, a briefly trained model reproduced the normal brain worse than the T1 itself).

Differences from the seed, for CPU time: U-Net width 16 (three levels, no self-attention),
~0.5 M parameters instead of ~9 M; 4 sampler steps instead of 100; slices of 64-128 px.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

T_STEPS = 1000


def cosine_alpha_bar(t: torch.Tensor | np.ndarray, steps: int = T_STEPS, s: float = 0.008):
    """ᾱ(t) of the cosine schedule (Nichol & Dhariwal 2021), t in [0, steps]."""
    t = torch.as_tensor(t, dtype=torch.float64)
    f = torch.cos(((t / steps) + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return (f / f0).clamp(1e-5, 1.0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class FiLMBlock(nn.Module):
    """Residual block; the (time + ET) embedding scales and shifts its first convolution's output."""

    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb, 2 * c_out)
        self.norm2 = nn.GroupNorm(math.gcd(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + scale) + shift
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ConditionalUNet(nn.Module):
    """x0 = f(x_t, T1, FLAIR, t, ET); plus a whole-tumor logit map."""

    def __init__(self, width: int = 16, mults=(1, 2, 4), emb: int = 64, conditions: int = 2, t1_residual: bool = True):
        super().__init__()
        self.config = {"width": width, "mults": list(mults), "emb": emb, "conditions": conditions,
                       "t1_residual": t1_residual}
        self.t1_residual = t1_residual
        self.emb_dim = emb
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.et_embedding = nn.Embedding(2, emb)
        chans = [width * m for m in mults]
        self.stem = nn.Conv2d(1 + conditions, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = chans[0]
        for i, ch in enumerate(chans):
            self.down.append(FiLMBlock(c, ch, emb))
            c = ch
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(chans) - 1 else nn.Identity())
        self.mid = FiLMBlock(c, c, emb)
        self.up = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            self.up.append(FiLMBlock(c + ch, ch, emb))
            c = ch
        self.out = nn.Sequential(nn.GroupNorm(math.gcd(8, c), c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))
        self.seg_head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 1, 1))

    def forward(self, x_t, cond, t, et):
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.et_embedding(et.long())
        h = self.stem(torch.cat([x_t, cond], dim=1))
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        out = self.out(h)
        if self.t1_residual:  # x0 = tanh(atanh(T1) + correction): an untrained network starts from the T1
            out = out + torch.atanh(cond[:, :1].clamp(-0.999, 0.999))
        return torch.tanh(out), self.seg_head(h)


def q_sample(x0, t, noise):
    """x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε."""
    ab = cosine_alpha_bar(t).to(x0.dtype).to(x0.device)[:, None, None, None]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def sampler_timesteps(steps: int) -> list[int]:
    """Evenly spaced DDIM steps from T-1 down (e.g. 4 -> [999, 749, 500, 250])."""
    if steps < 1:
        raise ValueError("the sampler needs at least one step")
    return [int(round(v)) for v in np.linspace(T_STEPS - 1, 0, steps + 1)[:-1]]


def dice_loss(logits, target, eps: float = 1.0):
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + eps)).mean()


def training_loss(model, t1gd, cond, tumor, et, generator=None, tumor_weight: float = 4.0,
                  enhancement_weight: float = 0.0, seg_weight: float = 0.1):
    """L1 on x0 + 0.1 Dice. Pixels are weighted up in the tumor (1-2 % of a slice, where the ET
    acts) and by the true contrast change |T1Gd - T1| (the enhancement itself, rarer still)."""
    n = t1gd.shape[0]
    t = torch.randint(0, T_STEPS, (n,), generator=generator).to(t1gd.device)
    noise = torch.randn(t1gd.shape, generator=generator).to(t1gd.device)
    x0_hat, seg_logits = model(q_sample(t1gd, t, noise), cond, t, et)
    weight = 1.0 + tumor_weight * tumor + enhancement_weight * (t1gd - cond[:, :1]).abs()
    l1 = (weight * (x0_hat - t1gd).abs()).sum() / weight.sum()
    return l1 + seg_weight * dice_loss(seg_logits, tumor), float(l1.detach())


@torch.no_grad()
def sample_both_labels(model, cond: torch.Tensor, steps: int = 4, seed: int = 0, chunk: int = 16,
                       device=None, progress=None):
    """Deterministic DDIM synthesis with ET = 0 and ET = 1 for every slice.

    cond: (n, 2, H, W) T1 and FLAIR on [-1, 1] (CPU tensor). Each chunk of ``chunk`` slices is one
    batch of 2 x chunk (both labels). The starting noise is drawn once for all n slices from
    ``seed``, so the result does not depend on ``chunk``. Returns (x0 (2, n, H, W) float32 with
    [0] = non-enhancing, [1] = enhancing; tumor probability (n, H, W), the mean of both labels'
    last-step segmentation).
    """
    device = device or torch.device("cpu")
    model.eval()
    n, _, h, w = cond.shape
    noise = torch.randn((n, 1, h, w), generator=torch.Generator().manual_seed(int(seed)))
    ts = sampler_timesteps(steps)
    out = torch.empty((2, n, h, w))
    seg = torch.empty((n, h, w))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        c = cond[start:stop].to(device)
        m = stop - start
        c2 = torch.cat([c, c])
        et = torch.cat([torch.zeros(m), torch.ones(m)]).to(device)
        x = torch.cat([noise[start:stop], noise[start:stop]]).to(device)
        for i, t in enumerate(ts):
            tt = torch.full((2 * m,), t, device=device)
            x0, seg_logits = model(x, c2, tt, et)
            if i + 1 < len(ts):
                ab, ab_next = float(cosine_alpha_bar(t)), float(cosine_alpha_bar(ts[i + 1]))
                eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
                x = math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next) * eps
        out[0, start:stop] = x0[:m, 0].cpu()
        out[1, start:stop] = x0[m:, 0].cpu()
        seg[start:stop] = torch.sigmoid(seg_logits[:, 0]).view(2, m, h, w).mean(0).cpu()
        if progress is not None:
            progress(stop / n, f"synthesising T1Gd ({stop}/{n} slices, {steps} steps, both labels)")
    return out.numpy(), seg.numpy()
