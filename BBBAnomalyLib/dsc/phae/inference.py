"""PHAE inference and per-case self-supervised adaptation: the DeconvolutionModel of the learned method.

``PHAEModel(aif, dt).fit(curves)`` mirrors ``DeconvolutionModel``: one AIF and frame interval, all
voxels in memory-bounded chunks, a Fit with ``cbf`` [1/s] and ``tmax`` [s] that ``run_dsc`` scales
exactly like the classic methods', plus ``mtt`` [s], ``delay`` [s] and the decoder's model curves.
``adapt`` fine-tunes a copy of the encoder on the case's own curves with the same self-supervised
loss (no labels exist to use), for a fixed number of steps.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError

DEFAULT_WEIGHTS = "dsc-phae-sim"


@dataclass
class PHAEFit:
    """Per voxel: cbf = flow F [1/s] (× 6000·kH/ρ for ml/100 g/min, like DeconvolutionFit.cbf),
    tmax = delay [s] (the Lorentzian residue peaks at the delay), mtt [s] (the encoder's, the
    Lorentzian's ∫R), loss = normalised MAE of the fit, fitted = model curves (n, T) in ΔR2* [1/s]."""

    cbf: np.ndarray
    tmax: np.ndarray
    mtt: np.ndarray
    loss: np.ndarray
    fitted: np.ndarray | None = None
    regularisation: np.ndarray = field(default=None)  # API parity with DeconvolutionFit: zeros
    unmet: np.ndarray = field(default=None)  # API parity: all False
    adaptation: dict | None = None

    def __post_init__(self):
        if self.regularisation is None:
            self.regularisation = np.zeros_like(self.cbf)
        if self.unmet is None:
            self.unmet = np.zeros(self.cbf.shape, bool)

    @property
    def delay(self) -> np.ndarray:
        return self.tmax


def load_network(weights: str | None = None, device: str = "cpu"):
    """The PHAE network from a bundled name (default) or a .pt path, checksum-verified, in eval mode."""
    from ...weights import entry, load_state_dict
    from .network import PHAE

    name = str(weights or DEFAULT_WEIGHTS)
    if name.endswith(".pt"):
        card_path = Path(name).with_suffix(".json")
        if not card_path.is_file():
            raise InputError(f"PHAE weights {name} need their model card {card_path.name} beside them "
                             "(written by `bbbanomaly train phae`)")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        state = load_state_dict(name, expected_sha256=card.get("sha256"))
    else:
        card = entry(name)
        state = load_state_dict(name)
    net = PHAE(**card["config"])
    net.load_state_dict(state)
    return net.to(device).eval(), card


class PHAEModel:
    """PHAE bound to one AIF and frame interval (dipy-style Model -> Fit, like DeconvolutionModel).

    >>> model = PHAEModel(aif, dt=1.5)           # bundled weights, CPU
    >>> fit = model.fit(curves)                   # (n_voxels, n_frames) ΔR2* [1/s]
    >>> fit.cbf, fit.mtt, fit.tmax
    """

    def __init__(self, aif: np.ndarray, dt: float, weights: str | None = None, device: str = "cpu",
                 chunk_voxels: int = 8192, threads: int | None = None, network=None):
        import torch

        from ...devices import resolve_device

        self.aif = np.asarray(aif, dtype=np.float32)
        if self.aif.ndim != 1 or self.aif.size < 8:
            raise InputError("PHAE needs an AIF of at least 8 frames")
        if not np.isfinite(self.aif).all() or not self.aif.max() > 0:
            raise InputError("the AIF has no positive peak (or non-finite values): nothing to deconvolve")
        self.dt = float(dt)
        self.device = resolve_device(device)
        self.chunk_voxels = int(chunk_voxels)
        if threads:
            torch.set_num_threads(int(threads))
        if network is None:
            network, self.card = load_network(weights, str(self.device))
        else:
            self.card = {"name": "in-memory", "config": network.config}
        self.network = network.to(self.device).eval()
        self._aif_t = torch.as_tensor(self.aif[None, :], device=self.device)

    # ------------------------------------------------------------------------------------
    def fit(self, curves: np.ndarray, keep_curves: bool = True, progress=None) -> PHAEFit:
        """Encode and decode (n_voxels, N) curves in chunks; returns a PHAEFit."""
        import torch

        curves = np.asarray(curves, dtype=np.float32)
        if curves.ndim != 2 or curves.shape[1] != self.aif.size:
            raise ValueError(f"curves must be (n_voxels, {self.aif.size}); got {curves.shape}")
        n = curves.shape[0]
        out = {k: np.empty(n, np.float32) for k in ("flow", "delay", "mtt", "loss")}
        fitted = np.empty(curves.shape, np.float32) if keep_curves else None
        with torch.inference_mode():
            for start in range(0, n, self.chunk_voxels):
                sl = slice(start, min(start + self.chunk_voxels, n))
                res = self.network(torch.as_tensor(curves[sl], device=self.device), self._aif_t, self.dt)
                for key in out:
                    out[key][sl] = res[key].float().cpu().numpy()
                if keep_curves:
                    fitted[sl] = res["fitted"].float().cpu().numpy()
                if progress is not None:
                    progress(sl.stop / max(n, 1))
        return PHAEFit(cbf=out["flow"] / self.dt, tmax=out["delay"] * self.dt, mtt=out["mtt"] * self.dt,
                       loss=out["loss"], fitted=fitted)

    # ------------------------------------------------------------------------------------
    def adapt(self, curves: np.ndarray, steps: int = 150, batch: int = 1024, lr: float = 3e-4,
              max_voxels: int = 50000, seed: int = 0, time_limit_s: float = 45.0) -> dict:
        """Fine-tune a copy of the encoder on this case's curves (self-supervised MAE), in place.

        BatchNorm statistics stay frozen (eval mode): a case is one protocol and one AIF, and
        re-estimating them from its curves would shift every voxel; only the weights move. Stops at
        ``steps`` or ``time_limit_s``. Returns {"steps", "seconds", "loss_before", "loss_after"}.
        """
        import torch

        curves = np.asarray(curves, dtype=np.float32)
        rng = np.random.default_rng(seed)
        pick = rng.choice(curves.shape[0], size=min(max_voxels, curves.shape[0]), replace=False)
        data = torch.as_tensor(curves[pick], device=self.device)
        net = copy.deepcopy(self.network).to(self.device)
        net.eval()  # BatchNorm keeps its running statistics; gradients still flow (see PHAEEncoder.forward)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        probe = data[: min(8192, data.shape[0])]

        def mean_loss():
            with torch.inference_mode():
                return float(net(probe, self._aif_t, self.dt)["loss"].mean())

        before = mean_loss()
        start, done = time.perf_counter(), 0
        for done in range(1, steps + 1):
            idx = torch.randint(0, data.shape[0], (min(batch, data.shape[0]),), generator=gen)
            loss = net(data[idx], self._aif_t, self.dt)["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if time.perf_counter() - start > time_limit_s:
                break
        after = mean_loss()
        self.network = net
        return {"steps": done, "seconds": round(time.perf_counter() - start, 2), "loss_before": before,
                "loss_after": after}

