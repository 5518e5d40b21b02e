"""Loading a diffusion anomaly model (bundled name or trained file) and scoring a prepared volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from .preprocessing import ModelInput


@dataclass
class LoadedModel:
    network: object  # torch.nn.Module in eval mode on ``device``
    kind: str  # "vae" | "recdisc"
    card: dict
    spec: ModelInput
    device: object

    def fixed_threshold(self, vae_score: str = "abs-mean") -> float:
        """The card's label-free threshold (from healthy validation brains) for this score."""
        value = self.card.get("fixed_threshold", 0.5)
        if isinstance(value, dict):
            if vae_score not in value:
                raise InputError(f"weights {self.card.get('name')!r} have no fixed threshold for the {vae_score!r} "
                                 "score; give --threshold-value or another --threshold")
            value = value[vae_score]
        return float(value)


def read_card(weights: str) -> tuple[dict, str]:
    """(model card, what to give weights.load_state_dict) for a bundled name or a .pt path (card beside it)."""
    from .. import weights as registry

    card, _ = registry.read_card(str(weights))
    return card, str(weights)


def load_model(weights: str, kind: str, device="auto") -> LoadedModel:
    from .. import weights as registry
    from ..core.devices import resolve_device
    from .models import build

    card, source = read_card(weights)
    if card.get("kind") != kind:
        raise InputError(f"weights {weights!r} hold a {card.get('kind')!r} model, not {kind!r}; pick the matching "
                         "--model or other --weights")
    state = registry.load_state_dict(source)
    try:
        network = build(kind, card["config"])
        network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"the weights {weights} do not fit the {kind} network ({type(exc).__name__}); give "
                         "weights trained with `bbbanomaly train dmri-*` for this model") from None
    dev = resolve_device(device)
    network.to(dev).eval()
    return LoadedModel(network, kind, card, ModelInput.from_json(card["input"]), dev)


VAE_SCORES = ("abs-mean", "rms")


def score(model: LoadedModel, network_input: np.ndarray, mask: np.ndarray,
          vae_score: str = "abs-mean") -> tuple[np.ndarray, np.ndarray]:
    """(anomaly score on the model grid, reconstruction (K, gx, gy, gz)) for one prepared volume.

    VAE: "abs-mean" = |mean over directions of (input − reconstruction)| (the seed's code): the
    direction-dependent part of the white-matter signal, which a model of healthy brains cannot
    predict for a new subject's fibre orientations, averages out, and a change of the mean
    diffusivity (edema, necrosis, cellular tumor) stays; opposite-sign changes between directions
    (anisotropy loss at constant MD) cancel. "rms" = root mean square over directions: sees those
    too, but also every orientation mismatch of healthy white matter. RecDiscNet: the
    discriminator's probability. Zero outside the model-grid brain mask.
    """
    return _score(model, [network_input], mask, vae_score)


def score_prepared(model: LoadedModel, prepared, vae_score: str = "abs-mean") -> tuple[np.ndarray, np.ndarray]:
    """:func:`score` of ``prepared.network_input``, which it takes off ``prepared`` (set to None) and lets go
    as soon as the network has read it (issue 17: the VAE's decoder and the RecDiscNet's discriminator run
    without the 64-channel input alive, unless the "rms" score needs it at the end)."""
    inputs = [prepared.network_input]
    prepared.network_input = None
    return _score(model, inputs, prepared.network_mask, vae_score)


def _score(model: LoadedModel, inputs: list, mask: np.ndarray, vae_score: str):
    """The network with bounded memory (issue 17): ``inputs`` holds the (K, gx, gy, gz) array and is emptied,
    the networks' ``infer`` let the input go once read and apply activations in place; no tensor of the
    input's size besides the reconstruction (the VAE residual: see below)."""
    import torch

    from .models import SLAB

    if vae_score not in VAE_SCORES:
        raise InputError(f"VAE score {vae_score!r} is not one of {', '.join(VAE_SCORES)}")
    with torch.inference_mode():
        array = inputs.pop()
        held = [torch.from_numpy(np.ascontiguousarray(array[None])).to(model.device)]
        del array
        if model.kind == "vae" and vae_score == "abs-mean":
            # |mean_k(x) − mean_k(recon)|: the mean of the residual by linearity, with the input's channel mean
            # taken before the decoder so that the input is not needed (nor alive) after the encoder. Not the
            # same float32 operations as mean_k(x − recon): equal within a few float32 ulps of mean_k|x|+|recon|
            recon, x_mean = model.network.infer(held)
            anomaly = (x_mean - recon.mean(dim=1)).abs_()[0]
            del x_mean
        elif model.kind == "vae":  # "rms" needs every direction's residual: by slabs of the first axis
            x = held[0]
            recon, _ = model.network.infer(held)
            anomaly = torch.empty(x.shape[2:], dtype=recon.dtype, device=recon.device)
            for s in range(0, x.shape[2], SLAB):
                residual = x[:, :, s:s + SLAB] - recon[:, :, s:s + SLAB]
                anomaly[s:s + SLAB] = torch.sqrt((residual ** 2).mean(dim=1))[0]
            del x, residual
        else:
            recon, logits = model.network.infer(held)
            anomaly = torch.sigmoid_(logits)[0]
        out = anomaly.float().cpu().numpy() * mask
        return out.astype(np.float32), recon[0].float().cpu().numpy()
