"""The two networks of the seed, sized for CPU: a 3D VAE ("DAE") and RecDiscNet.

Both take (batch, K, gx, gy, gz) S/S0 on the model's canonical directions (K = 64) over a fixed
field of view (40 × 48 × 40 voxels of 4 mm by default) and give a reconstruction in [0, 1]
(sigmoid output, which the seed found better than a linear one).

* :class:`VAE`: three Conv3d k3 s2 levels (BatchNorm, LeakyReLU 0.01) → a 1×1×1 squeeze → linear
  latent (μ, log σ², size a parameter) → mirror with ConvTranspose3d → 1×1×1 conv to K channels.
  Loss: squared error summed per volume + β·KL (β = 1.22e-5 as in the seed; see :func:`vae_loss`).
  The seed's widths (64-128-256-512, four levels, latent up to 512) would be ~40 M parameters;
  these are ~0.66 M so that the bundled weights stay small and a CPU trains them in minutes.
* :class:`RecDiscNet` (DRAEM-style): a reconstruction network (three levels, no skips) trained to
  give the clean image from one with synthetic anomalies, and a discriminative U-Net (16 filters;
  a 1×1×1 conv mixes its 2K input channels first) on concat(reconstruction, input) giving one
  anomaly logit per voxel. Loss 5·MSE + BCE
  (positive weight 20).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

KL_WEIGHT = 1.22e-5  # the seed's β


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm does not mix the volumes of a batch. With BatchNorm and 2 volumes per step the
    # running statistics used at inference drifted from the batch statistics of training: the
    # RecDiscNet's validation loss jumped from 0.29 to 0.76 between two epochs and its probabilities
    # rose everywhere (measured on the phantoms). "batch" is kept for old weights.
    return nn.BatchNorm3d(channels) if kind == "batch" else nn.GroupNorm(min(8, channels), channels)


def _down(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=2, padding=1), _norm(norm, cout), nn.LeakyReLU(0.01))


def _up(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, stride=2), _norm(norm, cout), nn.LeakyReLU(0.01))


def _check_grid(grid: tuple[int, int, int], levels: int) -> tuple[int, int, int]:
    factor = 2 ** levels
    if any(n % factor for n in grid):
        raise ValueError(f"grid {grid} must be divisible by {factor} for {levels} levels")
    return tuple(n // factor for n in grid)


class VAE(nn.Module):
    def __init__(self, channels: int = 64, grid=(40, 48, 40), widths=(24, 48, 64), latent: int = 128,
                 squeeze: int = 8, norm: str = "batch"):
        super().__init__()
        self.config = {"channels": channels, "grid": list(grid), "widths": list(widths), "latent": latent,
                       "squeeze": squeeze, "norm": norm}
        self.bottom = _check_grid(tuple(grid), len(widths))
        sizes = [channels, *widths]
        self.encoder = nn.Sequential(*[_down(a, b, norm) for a, b in zip(sizes[:-1], sizes[1:])],
                                     nn.Conv3d(widths[-1], squeeze, 1), nn.LeakyReLU(0.01))
        flat = squeeze * self.bottom[0] * self.bottom[1] * self.bottom[2]
        self.to_latent = nn.Linear(flat, 2 * latent)
        self.from_latent = nn.Linear(latent, flat)
        self.expand = nn.Sequential(nn.Conv3d(squeeze, widths[-1], 1), nn.LeakyReLU(0.01))
        rev = list(widths[::-1]) + [widths[0]]
        self.decoder = nn.Sequential(*[_up(a, b, norm) for a, b in zip(rev[:-1], rev[1:])])
        self.head = nn.Conv3d(widths[0], channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_latent(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(z.shape[0], -1, *self.bottom)
        return torch.sigmoid(self.head(self.decoder(self.expand(h))))

    def forward(self, x: torch.Tensor, sample: bool | None = None):
        """(reconstruction, μ, log σ²); samples z only in training mode unless ``sample`` says otherwise."""
        mu, logvar = self.encode(x)
        sample = self.training if sample is None else sample
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode(z), mu, logvar


def vae_loss(x, recon, mu, logvar, mask=None) -> torch.Tensor:
    """(squared error summed over the brain's voxels and directions + β·KL) per volume, averaged over
    the batch, divided by the mean element count so that the number reads like a per-voxel MSE.

    The sum matters: with a per-element mean MSE the seed's β = 1.22e-5 outweighed the
    reconstruction's pull on the latent and the posterior collapsed (KL ≈ 10 nats, the decoder's
    output did not depend on z: measured on the phantoms). Summed, β only regularises.
    """
    err = (recon - x) ** 2
    if mask is not None:
        err = err * mask
        elements = (mask.flatten(1).sum(1) * x.shape[1]).clamp_min(1)
    else:
        elements = torch.full((x.shape[0],), float(x[0].numel()), device=x.device)
    sse = err.flatten(1).sum(1)
    kl = -0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp(), dim=1)
    return ((sse + KL_WEIGHT * kl) / elements.mean()).mean()


class _ReconstructionNet(nn.Module):
    def __init__(self, channels: int, widths, norm: str = "batch"):
        super().__init__()
        sizes = [channels, *widths]
        self.encoder = nn.Sequential(*[_down(a, b, norm) for a, b in zip(sizes[:-1], sizes[1:])])
        rev = list(widths[::-1]) + [widths[0]]
        self.decoder = nn.Sequential(*[_up(a, b, norm) for a, b in zip(rev[:-1], rev[1:])])
        self.head = nn.Conv3d(widths[0], channels, 1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.decoder(self.encoder(x))))


class _DiscriminativeUNet(nn.Module):
    """Three-level U-Net with skips; ``base`` filters at full resolution."""

    def __init__(self, cin: int, base: int = 16, norm: str = "batch"):
        super().__init__()

        def block(a, b):
            return nn.Sequential(nn.Conv3d(a, b, 3, padding=1), _norm(norm, b), nn.ReLU(inplace=True))

        # 1×1×1 mixing of the 2K input channels first: a 3×3×3 conv on 128 channels at full
        # resolution would cost six times the rest of the network on a CPU.
        self.enc1 = nn.Sequential(nn.Conv3d(cin, base, 1), nn.ReLU(inplace=True), block(base, base))
        self.enc2, self.enc3 = block(base, 2 * base), block(2 * base, 4 * base)
        self.up2 = nn.ConvTranspose3d(4 * base, 2 * base, 2, stride=2)
        self.dec2 = block(4 * base, 2 * base)
        self.up1 = nn.ConvTranspose3d(2 * base, base, 2, stride=2)
        self.dec1 = block(2 * base, base)
        self.out = nn.Conv3d(base, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool3d(e1, 2))
        e3 = self.enc3(F.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)[:, 0]


class RecDiscNet(nn.Module):
    def __init__(self, channels: int = 64, grid=(40, 48, 40), widths=(24, 48, 64), disc_filters: int = 16,
                 norm: str = "batch"):
        super().__init__()
        self.config = {"channels": channels, "grid": list(grid), "widths": list(widths), "disc_filters": disc_filters,
                       "norm": norm}
        _check_grid(tuple(grid), len(widths))
        _check_grid(tuple(grid), 2)
        self.reconstruction = _ReconstructionNet(channels, widths, norm)
        self.discriminator = _DiscriminativeUNet(2 * channels, disc_filters, norm)

    def forward(self, x):
        """(reconstruction, anomaly logits (batch, gx, gy, gz))."""
        recon = self.reconstruction(x)
        return recon, self.discriminator(torch.cat([recon, x], 1))


def recdisc_loss(clean, recon, logits, labels, mask=None) -> torch.Tensor:
    err = (recon - clean) ** 2
    mse = (err * mask).sum() / (mask.sum() * clean.shape[1]).clamp_min(1) if mask is not None else err.mean()
    bce = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor(20.0, device=logits.device))
    return 5.0 * mse + bce


MODELS = {"vae": VAE, "recdisc": RecDiscNet}


def build(kind: str, config: dict) -> nn.Module:
    return MODELS[kind](**config)
