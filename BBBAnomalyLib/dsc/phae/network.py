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

from .physics import RESIDUE_MODELS, area, convolution_matrix, decode, residue_kernel

MTT_RANGE_S = (0.5, 40.0)  # output bounds of MTT [s]: the training range 1-20 s with a margin
MTT_RANGE_FRAMES = (0.25, 40.0)  # bounds when the frame interval is not given
MAX_DELAY_FRAMES = 15.0  # output bound of the delay in frames


def normalise(curves: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) curves divided by their peak after a 3-frame moving average (a single noisy frame
    does not set the scale); returns (normalised, scale (B,))."""
    if curves.shape[-1] < 3:
        smooth = nn.functional.avg_pool1d(curves[:, None, :], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
        scale = smooth.abs().amax(dim=-1)
    else:  # the same 3-frame average without avg_pool1d's overhead (3x faster on a whole brain)
        inner = (curves[:, :-2] + curves[:, 1:-1] + curves[:, 2:]).abs().amax(dim=-1) / 3.0
        edges = torch.maximum((curves[:, 0] + curves[:, 1]).abs(), (curves[:, -2] + curves[:, -1]).abs()) / 2.0
        scale = torch.maximum(inner, edges)
    scale = scale.clamp_min(eps)
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
    """Encoder + physics decoder. forward(curves (B, n), aif (1 or B, n), dt) returns a dict with
    mtt, delay [frames], flow [1/frame, curve units], fitted (B, n) and the normalised MAE loss
    per curve (B,) (plus log_cbf_sd with an uncertainty output).

    ``encoder="conv"`` (the default, what older model cards hold) is the strided 1D CNN above;
    ``encoder="grid"`` is :class:`GridEncoder` (the MLP on a fixed time grid; needs dt) with the decoder's
    convolution as one (n, n + lead) matrix per case instead of per-curve FFTs."""

    def __init__(self, amplitude: str = "area", encoder: str = "conv", **encoder_config):
        super().__init__()
        if encoder == "grid":
            if amplitude != "area":
                raise ValueError("the grid encoder's decoder uses the area amplitude only")
            self.encoder = GridEncoder(**encoder_config)
        elif encoder == "conv":
            self.encoder = PHAEEncoder(**encoder_config)
        else:
            raise ValueError(f"encoder must be 'conv' or 'grid', not {encoder!r}")
        self.amplitude = amplitude

    @property
    def config(self) -> dict:
        return {**self.encoder.config, "amplitude": self.amplitude}

    @property
    def is_grid(self) -> bool:
        return isinstance(self.encoder, GridEncoder)

    @property
    def needs_context(self) -> bool:
        return self.is_grid and self.encoder.context is not None

    def case_context(self, curves: torch.Tensor, aif: torch.Tensor, dt: float) -> torch.Tensor | None:
        """The case context this network reads (``case_context`` over all of the case's curves), or None."""
        if not self.needs_context:
            return None
        return case_context(curves, aif, dt, self.encoder.context["thresholds"], self.encoder.context["grid"],
                            shape_evidence=self.encoder.context.get("shape_evidence"))

    @property
    def needs_shape(self) -> bool:
        """A network told the capillary transit shape (issue 14, round 16: ``GridEncoder(shape_code=True)``)."""
        return self.is_grid and self.encoder.shape_code

    def case_terms(self, aif: torch.Tensor, dt: float, context: torch.Tensor | None = None,
                   shape_code: float | None = None) -> dict:
        """Grid encoder: everything that is the same for every curve of a case (one AIF, one dt), computed
        once and passed to forward(case=...) for each chunk of curves. Must be recomputed after the
        weights change (training, adaptation). ``context``: the case's ``case_context`` (networks that read one)."""
        a_n, a_scale = normalise(aif.reshape(1, -1))
        lead = self.encoder.lead_frames(dt)
        op = convolution_matrix(a_n[0], lead)
        n = a_n.shape[-1]
        w = torch.ones(n, dtype=a_n.dtype, device=a_n.device)
        w[0] = w[-1] = 0.5
        return {"enc": self.encoder.case_terms(a_n, dt, context, shape_code), "op": op, "unit_area": op.T @ w, "lead": lead,
                "a_scale": a_scale, "aif": aif.reshape(1, -1), "dt": float(dt)}

    @torch.inference_mode()
    def fast_terms(self, case: dict, n: int) -> tuple:
        """infer()'s folded matrices for a case of n frames, built once and kept in ``case["fast"]``:
        [W₁·M | second differences | trapezoid weights (| the deconvolution's columns)] and [convolution | unit
        areas], with the AIF's area. Called before chunks run on threads, so that no two threads build them."""
        fast = case.get("fast")
        if fast is None:
            ref = case["op"]
            eye = torch.eye(n, dtype=ref.dtype, device=ref.device)
            d2 = eye[:, 2:] - 2.0 * eye[:, 1:-1] + eye[:, :-2]
            w = torch.ones(n, 1, dtype=ref.dtype, device=ref.device)
            w[0] = w[-1] = 0.5
            cols = [case["enc"]["w_curve"].T, d2, w] + ([case["enc"]["w_max"]] if self.encoder.deconv else [])
            fast = case["fast"] = (torch.cat(cols, dim=1).contiguous(),
                                   torch.cat([case["op"].T, case["unit_area"][:, None]], dim=1).contiguous(),
                                   float(area(case["aif"])[0]))
        return fast

    @torch.inference_mode()
    def infer(self, curves: torch.Tensor, case: dict, fitted_out: torch.Tensor | None = None) -> dict:
        """Grid encoder, inference only: forward()'s outputs (mtt, delay [frames], flow, log_cbf_sd, loss) plus
        fit_error = ||Ĉ - C|| / ||C||, with the per-case linear maps folded into two matrix products per chunk
        (the encoder's first layer, the curve's area and second differences in one; the model curves and their
        areas in the other) and nothing normalised in memory: the same numbers in fewer passes over the
        (B, n) curves. ``fitted_out`` (B, n), if given, receives the model curves."""
        enc, dt = self.encoder, case["dt"]
        if enc.shape_code and not case["enc"].get("shape_folded"):
            raise ValueError("this network is told the capillary transit shape: pass shape_code to case_terms")
        first, decoder, aif_area = self.fast_terms(case, curves.shape[-1])
        hidden = case["enc"]["w_curve"].shape[0]
        n_frames = curves.shape[-1]
        _, scale = normalise(curves)
        inv = 1.0 / scale
        lin = curves @ first  # (B, hidden + n - 2 + 1 [+ K·W])
        c_area = lin[:, hidden + n_frames - 2]
        extra = torch.stack([torch.log(scale / case["a_scale"].reshape(-1)[:1]),
                             torch.log((c_area / aif_area).clamp_min(1e-4)),
                             torch.log(lin[:, hidden:hidden + n_frames - 2].abs().mean(dim=-1) * inv / math.sqrt(6.0)
                                       + 1e-3)], dim=1)
        h = torch.addmm(case["enc"]["bias"], extra, case["enc"]["w_extra"].T)
        if enc.deconv:  # the deconvolved curves' MTT-like numbers (scale-invariant: raw curves give the same)
            h.addmm_(enc.deconv_features(lin[:, hidden + n_frames - 1:], c_area * dt), case["enc"]["w_mtt"].T)
        h.addcmul_(lin[:, :hidden], inv[:, None])
        z = enc.head(enc.body(nn.functional.leaky_relu(h, enc.slope, inplace=True)))
        lo, hi = (math.log(v) for v in MTT_RANGE_S)
        mtt = torch.exp(lo + (hi - lo) * torch.sigmoid(z[:, 0])) / dt
        d_lo, d_hi = enc.delay_range
        delay = (d_lo + (d_hi - d_lo) * torch.sigmoid(z[:, 1] - 1.0)) / dt
        box = enc.box_weight(z)
        unit = residue_kernel(curves.shape[-1], mtt, delay, case["lead"], box) @ decoder
        flow_raw = c_area / unit[:, -1].clamp_min(1e-6)
        fitted = torch.mul(unit[:, :-1], flow_raw[:, None], out=fitted_out) if fitted_out is not None \
            else unit[:, :-1] * flow_raw[:, None]
        diff = fitted - curves
        res = {"mtt": mtt, "delay": delay, "flow": flow_raw / case["a_scale"].reshape(-1)[0], "fitted": fitted,
               "loss": diff.abs().mean(dim=-1) * inv,
               "fit_error": torch.linalg.vector_norm(diff, dim=1) / torch.linalg.vector_norm(curves, dim=1).clamp_min(1e-12)}
        if enc.uncertainty:
            res["log_cbf_sd"] = nn.functional.softplus(z[:, 2]) + 0.02
        if box is not None:
            res["box_weight"] = box
        return res

    def forward(self, curves: torch.Tensor, aif: torch.Tensor, dt: float | None = None, case: dict | None = None,
                context: torch.Tensor | None = None, shape_code: torch.Tensor | None = None) -> dict:
        """dt [s]: bounds MTT to MTT_RANGE_S (without it, to MTT_RANGE_FRAMES frames). Why bound in
        seconds: an unbounded short MTT in a noise-dominated voxel makes CBF = CBV/MTT explode, and
        ROI means of CBF are dominated by those voxels (seen on the reference object at SNR 50).
        ``context``: a context network's case context; if omitted it is computed from ``curves`` (the case's curves
        must all be here then: training passes the whole case's context with each batch)."""
        c_n, c_scale = normalise(curves)
        if self.is_grid:
            if dt is None:
                raise ValueError("the grid encoder needs the frame interval dt")
            if case is None:
                if context is None and self.needs_context:
                    context = self.case_context(curves, aif, dt)
                case = self.case_terms(aif, dt, context)
            extra = curve_features(curves, c_n, c_scale, case["aif"], case["a_scale"])
            out = self.encoder(c_n, extra, case["enc"], dt=dt, shape_code=shape_code)
            mtt, delay = out[0] / dt, out[1] / dt
            box = out[-1] if self.encoder.box_mix else None
            kernel = residue_kernel(curves.shape[-1], mtt, delay, case["lead"], box)
            unit = kernel @ case["op"].T
            flow_n = area(c_n) / (kernel @ case["unit_area"]).clamp_min(1e-6)
            fitted_n = flow_n[:, None] * unit
            a_scale = case["a_scale"]
        else:
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
        if self.encoder.uncertainty:
            res["log_cbf_sd"] = out[2]
        if self.is_grid and self.encoder.box_mix:
            res["box_weight"] = out[-1]
        return res


# ---------------------------------------------------------------------------------------------------
# The grid encoder (issue 14: whole brain no slower than oSVD)
# ---------------------------------------------------------------------------------------------------
#: the fixed time grid [s] the grid encoder reads, relative to the AIF's peak: start, stop, step
GRID_S = (-20.0, 70.0, 0.75)
DELAY_RANGE_S = (-5.0, 12.0)  # delay output bounds [s]: training draws -3..+5 s
#: the residue grid [s] (lag after the AIF: start, stop, step) on which a ``deconv`` grid encoder reads the tissue
#: curve deconvolved by the case's own AIF (issue 14, round 4)
RESIDUE_GRID_S = (-6.0, 36.0, 1.0)
RESIDUE_SCALE_S = 5.0  # the deconvolved residue (1/s, per unit of the peak-normalised curve) x this: O(1) inputs


def deconvolution_operators(a_n: torch.Tensor, dt: float, thresholds, lead: int) -> torch.Tensor:
    """(K, n, lead + n) real matrices D_k such that ``c @ D_k`` is the curve c (n frames) deconvolved by the AIF
    with a Tikhonov filter conj(A) / (|A|² + (θ_k·max|A|)²) on the zero-padded (2n) rfft, for the relative
    thresholds θ_k; column j is the residue at lag (j - lead) frames (negative lags wrap to the end of the padded
    transform). The AIF is first scaled to unit area in seconds, so a curve c = Ca ⊛ (F·R) gives ≈ ∫Ca·F·R(t)
    (a regularised estimate, as a Tikhonov SVD method would make at that threshold) and ∫c / max r is the MTT
    such a method reports, whatever the AIF's size. Computed in float64, returned in a_n's dtype."""
    a = a_n.reshape(-1).double()
    n = a.numel()
    big = 2 * n
    w = torch.ones(n, dtype=torch.float64, device=a.device)
    w[0] = w[-1] = 0.5
    a_unit = a / ((a * w).sum() * dt).clamp_min(1e-12)  # unit area in seconds
    spec = torch.fft.rfft(a_unit * dt, n=big)
    power = spec.abs() ** 2
    lam2 = (torch.as_tensor([float(t) for t in thresholds], dtype=torch.float64, device=a.device)[:, None]
            * spec.abs().max()) ** 2
    filt = spec.conj()[None, :] / (power[None, :] + lam2)  # (K, big/2 + 1)
    eye = torch.fft.rfft(torch.eye(n, dtype=torch.float64, device=a.device), n=big)  # (n, big/2 + 1)
    resp = torch.fft.irfft(filt[:, None, :] * eye[None, :, :], n=big)  # (K, n, big)
    ops = torch.cat([resp[..., big - lead:], resp[..., :n]], dim=-1) if lead else resp[..., :n]
    return ops.to(a_n.dtype)


#: default case context (issue 14, round 5): the voxel-median of the peak-normalised Tikhonov residues at these
#: thresholds on this lag grid [s], plus the median log noise level
CONTEXT_THRESHOLDS = (0.07, 0.025)
CONTEXT_GRID_S = (-6.0, 12.0, 1.0)
CONTEXT_MAX_VOXELS = 32768
#: the shape evidence (log ΣRSS ratios, 0.01-0.5 at SNR 20-50 on 700 curves) times this: O(1) inputs
SHAPE_EVIDENCE_SCALE = 10.0


def case_context(curves: torch.Tensor, aif: torch.Tensor, dt: float, thresholds=CONTEXT_THRESHOLDS,
                 grid=CONTEXT_GRID_S, max_voxels: int = CONTEXT_MAX_VOXELS, shape_evidence=None) -> torch.Tensor:
    """One case's context (K·G + 1,): for each threshold θ_k, the median over the case's voxels of its tissue curve
    deconvolved by the AIF (``deconvolution_operators``) on the lag grid and divided by its maximum there, then the
    median over voxels of log(mean |second difference| / max |C|) (a relative noise level), then, with
    ``shape_evidence`` (a list of transit shapes; issue 14, round 16), SHAPE_EVIDENCE_SCALE x each shape's
    ``shape_evidence.evidence`` (how much worse it explains the case's curves than the best shape). Scale-free (neither
    the curves' nor the AIF's units matter). A measured AIF more dispersed than the tissue's true input gives
    residues that start before lag 0 and fall faster (issue 14, round 5: on TRAINING_WIDE cases a linear map of
    this vector predicts the AIF's dispersion τ with cross-validated R² 0.78). At most ``max_voxels`` voxels, an
    even stride through the given order, enter the medians. Computed in float64, returned in the curves' dtype."""
    c = curves.reshape(-1, curves.shape[-1])
    if c.shape[0] > max_voxels:
        c = c.index_select(0, torch.linspace(0, c.shape[0] - 1, max_voxels, device=c.device).long())  # = c[idx], 9x faster
    c = c.double()
    n = c.shape[-1]
    lo, hi, step = (float(v) for v in grid)
    lead = int(math.ceil(max(-lo, 0.0) / dt)) + 1
    a_n, _ = normalise(aif.reshape(1, -1).double())
    ops = deconvolution_operators(a_n, dt, thresholds, lead)  # (K, n, lead + n)
    offs = torch.arange(lo, hi + 1e-9, step, dtype=torch.float64)
    m = interpolation_matrix(ops.shape[-1], dt, offs, lead * dt).to(c.device)  # (G, lead + n)
    r = c @ torch.einsum("knl,gl->ngk", ops, m).reshape(n, -1)  # (B, G·K), grid-major
    r = r.reshape(c.shape[0], offs.numel(), len(thresholds))
    peak = r.amax(dim=1)  # (B, K)
    out = []
    for k in range(len(thresholds)):
        ok = peak[:, k] > 0
        if bool(ok.all()):  # the usual case: no boolean gather
            rk = r[:, :, k] / peak[:, k:k + 1]
        else:
            rk = r[ok, :, k] / peak[ok, k:k + 1] if bool(ok.any()) else torch.zeros(1, offs.numel(), dtype=torch.float64)
        out.append(rk.median(dim=0).values)
    # mean |second difference| / max |C|, with fewer temporaries: c₂ + (−2)·c₁ is c₂ − 2·c₁ exactly (2·c₁ is exact)
    d2 = torch.add(c[:, 2:], c[:, 1:-1], alpha=-2.0).add_(c[:, :-2]).abs_()
    big = torch.maximum(c.amax(dim=-1), -c.amin(dim=-1))  # = max |C|
    noise = torch.log(d2.mean(dim=-1) / big.clamp_min(1e-30) + 1e-6).median()
    if shape_evidence:
        from .shape_evidence import evidence

        out.append(noise.reshape(1))
        return torch.cat(out + [SHAPE_EVIDENCE_SCALE * evidence(curves.reshape(-1, n), aif, dt, tuple(shape_evidence))
                                .double()]).to(curves.dtype)
    return torch.cat(out + [noise.reshape(1)]).to(curves.dtype)


def interpolation_matrix(n_frames: int, dt: float, offsets_s: torch.Tensor, anchor_s: float) -> torch.Tensor:
    """(L, n) linear-interpolation weights from frames k·dt onto the times anchor + offsets (held at the
    first / last frame outside the acquisition, like np.interp), so that grid values = M @ curve."""
    pos = ((anchor_s + offsets_s) / dt).clamp(0.0, n_frames - 1.0)
    lo = pos.floor().clamp(max=max(n_frames - 2, 0)).long()
    frac = pos - lo.to(pos.dtype)
    m = torch.zeros(offsets_s.numel(), n_frames, dtype=offsets_s.dtype)
    rows = torch.arange(offsets_s.numel())
    m[rows, lo] = 1.0 - frac
    m[rows, (lo + 1).clamp(max=n_frames - 1)] += frac
    return m


class GridEncoder(nn.Module):
    """(C, Ca) → (MTT [s], delay [s], SD of log CBF) by a small MLP on a fixed time grid (seconds, anchored
    at the AIF's peak), whatever the frame interval and frame count.

    Each normalised tissue curve is linearly interpolated onto the grid (GRID_S: -20..70 s around the AIF
    peak, 0.75 s) and fed, with a few per-curve numbers (log peak ratio C/Ca, log CBV = ∫C/∫Ca, log of a
    noise estimate), to an MLP whose other inputs are the same for every curve of a case (the AIF on the
    grid, which grid points the acquisition covers, log Δt). Both linear steps are folded per case: the
    first layer becomes one (hidden × n_frames) matrix W₁·M and one bias, so a voxel costs
    n_frames·hidden + hidden² + 3·hidden multiply-adds (≈ 8k at 60 frames; the conv encoder ≈ 0.45 M).
    """

    def __init__(self, hidden: int = 64, depth: int = 2, slope: float = 0.02, grid=GRID_S,
                 delay_range=DELAY_RANGE_S, uncertainty: bool = True, deconv=None, residue_grid=RESIDUE_GRID_S,
                 context=None, residue: str = "lorentzian", shape_code: bool = False):
        super().__init__()
        if residue not in RESIDUE_MODELS:
            raise ValueError(f"residue must be one of {', '.join(RESIDUE_MODELS)}, not {residue!r}")
        self.config = {"encoder": "grid", "hidden": hidden, "depth": depth, "slope": slope, "grid": list(grid),
                       "delay_range": list(delay_range), "uncertainty": bool(uncertainty)}
        #: "lorentzian+box": one more output, the decoder residue's box weight (physics.residue_kernel; round 12)
        self.box_mix = residue == "lorentzian+box"
        if self.box_mix:  # written only when not the default: older cards and their checksums stay as they are
            self.config["residue"] = residue
        #: relative Tikhonov thresholds of the deconvolved-curve inputs (None: the encoder of rounds 1-3)
        self.deconv = tuple(float(t) for t in deconv) if deconv else ()
        if self.deconv:
            if any(not 0.0 < t < 1.0 for t in self.deconv):
                raise ValueError("deconv thresholds are fractions of the AIF spectrum's maximum, in (0, 1)")
            self.config.update({"deconv": list(self.deconv), "residue_grid": list(residue_grid)})
            self.register_buffer("res_offsets", torch.arange(residue_grid[0], residue_grid[1] + 1e-9, residue_grid[2],
                                                             dtype=torch.float32), persistent=False)
            k = len(self.deconv)
            # the deconvolved curves on the residue grid (folded into the first layer) + one MTT-like number each
            self.deconv_in = nn.Linear(k * self.res_offsets.numel() + k, hidden, bias=False)
        #: case context (issue 14, round 5): None, or {"thresholds": [...], "grid": [lo, hi, step]} (``case_context``)
        self.context = None
        if context is not None and context is not False:  # {} or True: the defaults
            context = context if isinstance(context, dict) else {}
            ctx = {"thresholds": [float(t) for t in context.get("thresholds", CONTEXT_THRESHOLDS)],
                   "grid": [float(v) for v in context.get("grid", CONTEXT_GRID_S)]}
            if context.get("shape_evidence"):  # round 16: only written when used, so older cards load unchanged
                from .shape_evidence import _gamma_k

                ctx["shape_evidence"] = [str(v) for v in context["shape_evidence"]]
                for name in ctx["shape_evidence"]:
                    _gamma_k(name)  # an unknown shape fails here, not at the first case
            if any(not 0.0 < t < 1.0 for t in ctx["thresholds"]):
                raise ValueError("context thresholds are fractions of the AIF spectrum's maximum, in (0, 1)")
            self.context = ctx
            self.config["context"] = ctx
            lo, hi, step = ctx["grid"]
            n_ctx = len(ctx["thresholds"]) * len(torch.arange(lo, hi + 1e-9, step)) + 1 + len(ctx.get("shape_evidence", []))
            self.context_in = nn.Linear(n_ctx, hidden, bias=False)
            nn.init.zeros_(self.context_in.weight)  # starts as the encoder without context
        #: round 16: the network is TOLD the capillary transit shape, as a homogeneity code 1/k per curve (training: the
        #: simulated truth; inference: the case's best shape by shape_evidence.evidence), through one more input column
        self.shape_code = bool(shape_code)
        if self.shape_code:  # written only when used: older cards and their checksums stay as they are
            self.config["shape_code"] = True
            self.shape_in = nn.Linear(1, hidden, bias=False)
        self.register_buffer("offsets", torch.arange(grid[0], grid[1] + 1e-9, grid[2], dtype=torch.float32),
                             persistent=False)
        n_grid = self.offsets.numel()
        self.uncertainty = bool(uncertainty)
        self.delay_range = tuple(float(v) for v in delay_range)
        self.slope = slope
        self.curve_in = nn.Linear(n_grid + 3, hidden)  # tissue curve on the grid + 3 per-curve numbers
        self.case_in = nn.Linear(2 * n_grid + 1, hidden, bias=False)  # AIF on the grid, coverage, log dt
        self.body = nn.Sequential(*[m for _ in range(depth - 1) for m in (nn.Linear(hidden, hidden), nn.LeakyReLU(slope))])
        self.head = nn.Linear(hidden, 2 + int(self.uncertainty) + int(self.box_mix))

    def lead_frames(self, dt: float) -> int:
        return int(math.ceil(-min(self.delay_range[0], 0.0) / dt)) + 1

    def case_terms(self, a_n: torch.Tensor, dt: float, context: torch.Tensor | None = None,
                   shape_code: float | None = None) -> dict:
        """What every curve of a case shares: the folded first layer (hidden, n) and its bias (hidden,) (with a
        context encoder, the case's ``case_context`` enters the bias)."""
        n = a_n.shape[-1]
        a = a_n.reshape(-1)[:n]
        smooth = nn.functional.avg_pool1d(a[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
        anchor = float(torch.argmax(smooth)) * dt
        m = interpolation_matrix(n, dt, self.offsets.cpu().double(), anchor).to(a_n.dtype).to(a_n.device)
        t = anchor + self.offsets.to(a_n.dtype)
        covered = ((t >= 0) & (t <= (n - 1) * dt)).to(a_n.dtype)
        case_x = torch.cat([m @ a, covered, torch.tensor([math.log(dt)], dtype=a_n.dtype, device=a_n.device)])
        n_grid = self.offsets.numel()
        w_curve = self.curve_in.weight[:, :n_grid] @ m  # (hidden, n): interpolation folded into the first layer
        bias = self.curve_in.bias + self.case_in(case_x)
        if self.context is not None:
            if context is None:
                raise ValueError("this encoder reads a case context: pass the case's curves (case_context)")
            bias = bias + self.context_in(context.to(bias.dtype).reshape(-1))
        if self.shape_code and shape_code is not None:  # one shape for the whole case: folded into the bias
            bias = bias + float(shape_code) * self.shape_in.weight[:, 0]
        out = {"w_curve": w_curve, "w_extra": self.curve_in.weight[:, n_grid:], "bias": bias,
               "shape_folded": shape_code is not None}
        if self.deconv:
            out.update(self._deconv_terms(a_n, dt))
            out["w_curve"] = w_curve + out.pop("w_fold")
        return out

    def _deconv_terms(self, a_n: torch.Tensor, dt: float) -> dict:
        """The deconvolution inputs' per-case linear maps: ``w_fold`` (hidden, n), the residue-grid part of the first
        layer composed with interpolation and deconvolution (added to w_curve: no cost per voxel); ``w_max`` (n, K·W),
        the residue at the W frames whose lag lies in the delay range, for the per-curve maximum; ``w_mtt`` (hidden,
        K), the first-layer weights of the K MTT-like numbers log(∫C / max R_k) [s]."""
        n = a_n.shape[-1]
        k = len(self.deconv)
        lead = int(math.ceil(-min(float(self.res_offsets[0]), self.delay_range[0], 0.0) / dt)) + 1
        ops = deconvolution_operators(a_n, dt, self.deconv, lead)  # (K, n, lead + n)
        n_lag = ops.shape[-1]
        m = interpolation_matrix(n_lag, dt, self.res_offsets.cpu().double(), lead * dt).to(a_n.dtype).to(a_n.device)
        n_res = self.res_offsets.numel()
        w_res = self.deconv_in.weight[:, :k * n_res].reshape(-1, k, n_res)  # (hidden, K, n_res)
        w_lag = torch.einsum("hkr,rl->khl", w_res, m)  # (K, hidden, lead + n): the small products first
        w_fold = RESIDUE_SCALE_S * torch.bmm(w_lag, ops.transpose(1, 2)).sum(dim=0)  # (hidden, n)
        lags = (torch.arange(n_lag, device=a_n.device) - lead) * dt
        sel = (lags >= self.delay_range[0] - 1e-9) & (lags <= self.delay_range[1] + 1e-9)
        w_max = ops[:, :, sel].permute(1, 0, 2).reshape(n, -1)  # (n, K·W), threshold-major
        return {"w_fold": w_fold, "w_max": w_max.contiguous(), "window": int(sel.sum()),
                "w_mtt": self.deconv_in.weight[:, k * n_res:]}

    def deconv_features(self, r_window: torch.Tensor, c_area_s: torch.Tensor) -> torch.Tensor:
        """(B, K) log of the MTT-like ratio ∫C dt / max R_k [s] over the delay window, clamped to 0.3-60 s (a curve
        with a non-positive area or residue maximum gets 60 s): the central-volume MTT a Tikhonov deconvolution at
        each threshold would report. Invariant to the curve's scale (so the same on raw and normalised curves)."""
        peak = r_window.reshape(r_window.shape[0], len(self.deconv), -1).amax(dim=-1)
        q = torch.where((c_area_s[:, None] > 0) & (peak > 0), peak / c_area_s[:, None].clamp_min(1e-30),
                        torch.full_like(peak, 1.0 / 60.0))
        return -torch.log(q.clamp(1.0 / 60.0, 1.0 / 0.3))

    def forward(self, c_n: torch.Tensor, extra: torch.Tensor, case: dict, mtt_range=MTT_RANGE_S, dt=None,
                shape_code: torch.Tensor | None = None):
        h = torch.addmm(case["bias"], c_n, case["w_curve"].T)
        h = torch.addmm(h, extra, case["w_extra"].T)
        if self.shape_code:  # per curve (training: each curve's own shape), unless the case's was folded in
            if shape_code is not None:
                h = h + shape_code.to(h.dtype).reshape(-1, 1) * self.shape_in.weight[:, 0]
            elif not case.get("shape_folded"):
                raise ValueError("this network is told the capillary transit shape: pass shape_code")
        if self.deconv:
            if dt is None:
                raise ValueError("a deconv grid encoder needs the frame interval dt")
            feats = self.deconv_features(c_n @ case["w_max"], area(c_n) * dt)
            h = torch.addmm(h, feats, case["w_mtt"].T)
        h = nn.functional.leaky_relu(h, self.slope, inplace=not torch.is_grad_enabled())
        z = self.head(self.body(h))
        lo, hi = (math.log(v) for v in mtt_range)
        mtt = torch.exp(lo + (hi - lo) * torch.sigmoid(z[:, 0]))
        d_lo, d_hi = self.delay_range
        delay = d_lo + (d_hi - d_lo) * torch.sigmoid(z[:, 1] - 1.0)
        out = (mtt, delay) + ((nn.functional.softplus(z[:, 2]) + 0.02,) if self.uncertainty else ())
        return out + ((self.box_weight(z),) if self.box_mix else ())

    def box_weight(self, z: torch.Tensor) -> torch.Tensor | None:
        """The decoder residue's box weight in [0, 1] from the head's last output (None without the mixture)."""
        return torch.sigmoid(z[:, -1]) if self.box_mix else None


def curve_features(curves: torch.Tensor, c_n: torch.Tensor, c_scale: torch.Tensor, aif: torch.Tensor,
                   a_scale: torch.Tensor) -> torch.Tensor:
    """(B, 3): log peak ratio C/Ca, log of the blood-volume ratio ∫C/∫Ca (clamped, a noisy curve can have a
    negative area) and log of a noise estimate of the normalised curve (mean |second difference| / √6)."""
    ratio = torch.log(c_scale / a_scale.reshape(-1)[:1])
    cbv = torch.log((area(curves) / area(aif).reshape(-1)[:1]).clamp_min(1e-4))
    noise = torch.log((c_n[:, 2:] - 2.0 * c_n[:, 1:-1] + c_n[:, :-2]).abs().mean(dim=-1) / math.sqrt(6.0) + 1e-3)
    return torch.stack([ratio, cbv, noise], dim=1)
