"""Bundled model weights and their registry.

Each model ships as two files in this folder: ``<name>.pt`` (a state dict saved with
``torch.save``) and ``<name>.json``, its registry entry and model card::

    {
      "name": "dce-rls-phantom",               # what code asks for
      "file": "dce-rls-phantom.pt",
      "sha256": "...",                         # checked before every load
      "model": "BBBAnomalyLib.dce.rls:RLSAutoencoder",  # the class the state dict belongs to
      "config": {...},                         # constructor arguments of that class
      "trained_on": "what data, honestly (e.g. simulated phantoms, not patients)",
      "command": "the exact command that reproduces the file",
      "metrics": {...},                        # measured on held-out data, with where
      "intended_use": "...", "limitations": "..."
    }

Weights are loaded with ``torch.load(weights_only=True)`` after the checksum matches, so a
tampered or truncated file is refused instead of unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def available() -> list[str]:
    """Names of the bundled models."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def entry(name: str) -> dict:
    """The registry entry (model card) of a bundled model."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise InputError(f"no bundled weights named {name!r}; available: {', '.join(available()) or 'none'}")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_state_dict(name_or_path: str | Path, expected_sha256: str | None = None, map_location="cpu") -> dict:
    """A state dict from a bundled name (checksum from the registry) or from a file path
    (checksum checked when ``expected_sha256`` is given)."""
    import torch

    path = Path(name_or_path)
    if not path.suffix and not path.exists():  # a registry name
        card = entry(str(name_or_path))
        path = WEIGHTS_DIR / card["file"]
        expected_sha256 = card["sha256"]
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise InputError(f"weights file {path} does not match its registry checksum; reinstall the extension "
                         "or retrain it with the command in its registry entry")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint
    return state


def write_entry(card: dict, weights_file: str | Path) -> Path:
    """Write ``<name>.json`` beside ``weights_file`` with its sha256 filled in (used by training scripts)."""
    weights_file = Path(weights_file)
    card = dict(card, file=weights_file.name, sha256=sha256(weights_file))
    out = weights_file.with_suffix(".json")
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    return out
