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

from ..core.memory import release_freed_memory

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


def _apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for inference with the activations applied in place (issue 17: no second tensor of each
    activation's size). Recurses into Sequentials; LeakyReLU/ReLU/Sigmoid run their in-place kernels (the same
    element-wise operations, so the same values); any other module runs as itself. ``x`` may be overwritten:
    pass a tensor nobody else needs."""
    if isinstance(module, nn.Sequential):
        for m in module:
            x = _apply(m, x)
        return x
    if isinstance(module, nn.LeakyReLU):
        return F.leaky_relu_(x, module.negative_slope)
    if isinstance(module, nn.ReLU):
        return torch.relu_(x)
    if isinstance(module, nn.Sigmoid):
        return torch.sigmoid_(x)
    if isinstance(module, nn.Conv3d):
        return _conv3d(module, x)
    return module(x)


#: Bytes of the per-conv temporaries that one slab of a convolution may make (see :func:`_conv3d`).
SLAB_BYTES = 4 * 2 ** 20


def _conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with bounded temporaries (:func:`_conv`); a conv with other padding, groups or dilation runs as
    itself."""
    if (isinstance(conv.padding, str) or conv.padding_mode != "zeros" or conv.groups != 1
            or set(conv.dilation) != {1}):
        return conv(x)
    return _conv(x, conv.weight, conv.bias, conv.stride, conv.padding)


def _onednn(x: torch.Tensor, weight: torch.Tensor, strided: bool) -> bool:
    """Whether torch 2.x runs this float32 CPU conv (batch of one, no groups, no dilation) with oneDNN rather than
    natively (``ConvParams::use_mkldnn``)."""
    n, c, d, h = x.shape[:4]
    k = weight.shape[2:]
    return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and (strided or k[-1] != 1 or k[-2] != 1 or torch.get_num_threads() > 1)
            and ((k[-1] > 3 and k[-2] > 3) or n * c * d * h > 20480))


def _conv(x: torch.Tensor, weight: torch.Tensor, bias, stride=1, padding=0) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride, padding)``, by slabs of output planes (first spatial axis) where one
    call would make temporaries of more than :data:`SLAB_BYTES` beside its output (issue 17):

    * a strided conv (the first level of each encoder, on the 64-channel input): oneDNN copies its whole input
      into its blocked layout (18.75 MiB for the model-grid input), torch's native path unfolds it into im2col
      columns (63 MiB);
    * a conv that torch runs natively, which unfolds its whole input into im2col columns (the discriminator's
      second level: 15.8 MiB);
    * a 1×1×1 conv that torch runs with oneDNN (more than one thread, a large input): the input copied into
      oneDNN's blocked layout and the output out of it (26 MiB for the VAE's output conv): it runs natively by
      slabs thin enough that torch does so (a plain matrix product per slab, no columns).

    Each output voxel is the same dot product over the same inputs (zeros where the padding is); where a slab
    runs on another path than the whole conv (oneDNN or native) only the float32 summation order differs
    (Testing/test_dmri_memory.py). Full-resolution 3×3×3 convs on oneDNN (16 channels) run whole: natively
    they cost ~9× the time. Other devices, dtypes and batches run whole."""
    stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    n, c, d, h, w = x.shape
    k = tuple(weight.shape[2:])
    if x.device.type != "cpu" or x.dtype != torch.float32 or n != 1:
        return F.conv3d(x, weight, bias, stride, padding)
    d_out = (d + 2 * padding[0] - k[0]) // stride[0] + 1
    h_out = (h + 2 * padding[1] - k[1]) // stride[1] + 1
    w_out = (w + 2 * padding[2] - k[2]) // stride[2] + 1
    strided = max(stride) > 1
    onednn = _onednn(x, weight, strided)
    columns = c * k[0] * k[1] * k[2] * h_out * w_out * x.element_size() if k != (1, 1, 1) else 0  # per plane
    planes_native = max(1, 20480 // (n * c * h))  # input planes per slab that torch runs natively
    if strided:
        per_plane = max(stride[0] * c * h * w * x.element_size(), 0 if onednn else columns)
        max_planes = d_out
    elif not onednn:
        per_plane, max_planes = columns, d_out
    elif k == (1, 1, 1):
        per_plane = (c + weight.shape[0]) * h * w * x.element_size()
        max_planes = planes_native
    else:
        return F.conv3d(x, weight, bias, stride, padding)
    if d_out * per_plane <= SLAB_BYTES or d_out < 2:
        return F.conv3d(x, weight, bias, stride, padding)
    planes = max(1, min(SLAB_BYTES // max(per_plane, 1), max_planes))
    out = None
    for start in range(0, d_out, planes):
        stop = min(start + planes, d_out)
        first, last = start * stride[0] - padding[0], (stop - 1) * stride[0] - padding[0] + k[0]  # input planes
        lo, hi = max(first, 0), min(last, d)
        slab = x[:, :, lo:hi]
        if lo > first or hi < last:  # the zero padding of the first axis, where the slab has none
            slab = F.pad(slab, (0, 0, 0, 0, lo - first, last - hi))
        part = F.conv3d(slab, weight, bias, stride, (0, padding[1], padding[2]))
        if out is None:
            out = x.new_empty((n, part.shape[1], d_out, h_out, w_out))
        out[:, :, start:stop] = part
        del part, slab
    return out


def _take(inputs: list) -> torch.Tensor:
    """The input batch out of its one-element list (the list is emptied: see :meth:`VAE.infer`)."""
    if len(inputs) != 1:
        raise ValueError("infer() takes a list holding exactly one input batch")
    return inputs.pop()


#: Planes (along the first grid axis) per slab of the VAE's "rms" residual: no temporary of the input's size.
SLAB = 4


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

    def infer(self, inputs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction from μ, mean of the input over its channels (batch, gx, gy, gz)) for inference, with
        bounded memory (issue 17): ``inputs`` is a one-element list holding the batch, emptied once the
        encoder and the channel mean have read it, so that a caller passing its only reference lets the input
        go before the decoder runs; activations and the output sigmoid in place. The same operations in the
        same order as ``forward(x, sample=False)[0]``: the same values."""
        x = _take(inputs)
        mu = self.to_latent(_apply(self.encoder, x).flatten(1)).chunk(2, dim=1)[0]
        x_mean = x.mean(dim=1)
        del x
        release_freed_memory()  # the encoder's temporaries (issue 17)
        h = self.from_latent(mu).view(mu.shape[0], -1, *self.bottom)
        h = _apply(self.decoder, _apply(self.expand, h))
        release_freed_memory()  # the decoder's temporaries, before the full-resolution output
        return torch.sigmoid_(_conv3d(self.head, h)), x_mean

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

    def first_conv_parts(self, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(weight on the reconstruction's channels, weight on the input's, bias) of the first 1×1×1 conv, whose
        input is cat([reconstruction, input], 1) with ``channels`` each."""
        first = self.enc1[0]
        return first.weight[:, :channels], first.weight[:, channels:], first.bias

    def infer_after_first(self, e1: torch.Tensor) -> torch.Tensor:
        """The logits from the first conv's output (see :meth:`RecDiscNet.infer`), activations in place, each
        skip tensor let go after its use; the full-resolution decoder conv as the sum of its two inputs' halves
        (no concatenation at full resolution)."""
        e1 = _apply(self.enc1[1:], e1)
        release_freed_memory()
        e2 = _apply(self.enc2, F.max_pool3d(e1, 2))
        e3 = _apply(self.enc3, F.max_pool3d(e2, 2))
        up = self.up2(e3)
        del e3
        d2 = _apply(self.dec2, torch.cat([up, e2], 1))
        del up, e2
        up = self.up1(d2)
        del d2
        release_freed_memory()  # the lower levels' temporaries, before the full-resolution tail
        # dec1's conv on cat([up, e1], 1) as the sum of its two halves (no 32-channel full-resolution input)
        conv, rest = self.dec1[0], self.dec1[1:]
        half = up.shape[1]
        d1 = _conv(up, conv.weight[:, :half], conv.bias, conv.stride, conv.padding)
        del up
        d1.add_(_conv(e1, conv.weight[:, half:], None, conv.stride, conv.padding))
        del e1
        return self.out(_apply(rest, d1))[:, 0]


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

    def infer(self, inputs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() for inference with bounded memory (issue 17). ``inputs`` is a one-element list holding the
        batch, emptied, so that a caller passing its only reference lets the input go once it is read: the
        discriminator's first 1×1×1 conv on cat([recon, x], 1) is split into its two halves of weights,
        conv(recon, W_r) + conv(x, W_x), and conv(x, W_x) is taken with the reconstruction's first level
        before the rest of the reconstruction runs; no concatenation of the whole input with its
        reconstruction (2 × 64 channels) and no input alive during the decoder. The reconstruction is the
        same operations as forward()'s (the same values); the logits differ from forward()'s by the
        float32 rounding of summing the 128 channels' products as 64 + 64 (Testing/test_dmri_memory.py)."""
        x = _take(inputs)
        w_recon, w_input, bias = self.discriminator.first_conv_parts(x.shape[1])
        x_part = _conv(x, w_input, None)
        net = self.reconstruction
        h = _apply(net.encoder[0], x)
        del x
        h = _apply(net.decoder, _apply(net.encoder[1:], h))
        release_freed_memory()  # the decoder's temporaries, before the full-resolution output
        recon = torch.sigmoid_(_conv3d(net.head, h))
        del h
        release_freed_memory()  # the decoder's full-resolution temporaries, before the discriminator's (issue 17)
        e1 = _conv(recon, w_recon, bias).add_(x_part)
        del x_part
        release_freed_memory()
        return recon, self.discriminator.infer_after_first(e1)


def recdisc_loss(clean, recon, logits, labels, mask=None) -> torch.Tensor:
    err = (recon - clean) ** 2
    mse = (err * mask).sum() / (mask.sum() * clean.shape[1]).clamp_min(1) if mask is not None else err.mean()
    bce = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor(20.0, device=logits.device))
    return 5.0 * mse + bce


MODELS = {"vae": VAE, "recdisc": RecDiscNet}


def build(kind: str, config: dict) -> nn.Module:
    return MODELS[kind](**config)
