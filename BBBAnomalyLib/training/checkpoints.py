"""Checkpoints that survive interruption: written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def save_checkpoint(path: str | Path, model, optimizer=None, epoch: int = 0, **extra) -> Path:
    """Save model (+ optimizer) state and the epoch just finished; replaces ``path`` atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": _unwrap(model).state_dict(), "epoch": int(epoch), **extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model, optimizer=None, map_location="cpu") -> dict:
    """Restore a checkpoint into ``model`` (and ``optimizer``); returns the rest (epoch, extras)."""
    import torch

    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    _unwrap(model).load_state_dict(state.pop("state_dict"))
    opt_state = state.pop("optimizer", None)
    if optimizer is not None and opt_state is not None:
        optimizer.load_state_dict(opt_state)
    return state
