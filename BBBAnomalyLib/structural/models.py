"""Loading the T1/FLAIR networks from a bundled name or a trained .pt (+ its .json card)."""

from __future__ import annotations


from ..core.errors import InputError
from .. import weights as registry


def read_card(name_or_path: str) -> tuple[dict, str]:
    """(model card, what load_state_dict takes) for a bundled name or a .pt path (card beside it)."""
    card, _ = registry.read_card(str(name_or_path))
    return card, str(name_or_path)


def _kind_phrase(kind) -> str:
    """'a cae model', or for a card of another pipeline (no 'kind') 'weights of another pipeline'."""
    return f"a {kind} model" if kind else "weights of another pipeline"


def load(name_or_path: str, kind: str, device):
    """(model on device in eval mode, card). ``kind``: diffusion, identifier, cae or enhancer."""
    from .cae import ConvAutoencoder3D
    from .diffusion import ConditionalUNet
    from .enhancer import EnhancerEnsemble
    from .identification import IdentificationCNN

    classes = {"diffusion": ConditionalUNet, "identifier": IdentificationCNN, "cae": ConvAutoencoder3D,
               "enhancer": EnhancerEnsemble}
    card, source = read_card(name_or_path)
    if card.get("kind") != kind:
        raise InputError(f"weights {name_or_path!r} are {_kind_phrase(card.get('kind'))}, not a {kind} model; "
                         "give weights trained for this step")
    model = registry.instantiate(classes[kind], card, registry.load_state_dict(source), name_or_path)
    return model.to(device).eval(), card
