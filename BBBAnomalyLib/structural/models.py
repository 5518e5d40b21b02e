"""Loading the three T1/FLAIR networks from a bundled name or a trained .pt (+ its .json card)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .. import weights as registry


def read_card(name_or_path: str) -> tuple[dict, str]:
    """(model card, what load_state_dict takes) for a bundled name or a .pt path."""
    path = Path(str(name_or_path))
    if path.suffix == ".pt":
        card_path = path.with_suffix(".json")
        if not path.is_file():
            raise InputError(f"weights file {path} does not exist")
        if not card_path.is_file():
            raise InputError(f"{path} has no model card {card_path.name} beside it (training writes both)")
        with open(card_path, encoding="utf-8") as fh:
            card = json.load(fh)
        return card, str(path)
    return registry.entry(str(name_or_path)), str(name_or_path)


def load(name_or_path: str, kind: str, device):
    """(model on device in eval mode, card). ``kind``: diffusion, identifier or cae."""
    from .cae import ConvAutoencoder3D
    from .diffusion import ConditionalUNet
    from .identification import IdentificationCNN

    classes = {"diffusion": ConditionalUNet, "identifier": IdentificationCNN, "cae": ConvAutoencoder3D}
    card, source = read_card(name_or_path)
    if card.get("kind") != kind:
        raise InputError(f"weights {name_or_path!r} are a {card.get('kind', 'unknown')} model, not a {kind} model")
    expected = card.get("sha256") if Path(source).suffix == ".pt" else None
    state = registry.load_state_dict(source, expected_sha256=expected)
    model = classes[kind](**card["config"])
    model.load_state_dict(state)
    return model.to(device).eval(), card
