"""Checkpoints that survive interruption: written atomically, loaded with ``weights_only=True``.

A checkpoint (and, through :func:`require_finite`, the weights) is written only while the model is
made of finite numbers: a diverged training (``--lr`` too large: the loss becomes NaN) is an error,
not NaN weights with exit 0. A file that is not a checkpoint is one clear error on --resume.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.errors import InputError


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def require_finite(model, loss=None) -> None:
    """InputError (nothing written) when ``loss`` (a number, when given) or a floating-point entry of the
    model's state dict (parameters and buffers) is NaN or infinite: training diverged."""
    import torch

    if loss is not None:
        try:
            bad_loss = not math.isfinite(float(loss))
        except (TypeError, ValueError):
            bad_loss = True
        if bad_loss:
            raise InputError(f"training diverged: the loss is {loss} (not a finite number); lower --lr (e.g. by 10x) "
                             "or check the training cases for extreme values; no weights were written")
    for key, value in _unwrap(model).state_dict().items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(f"training diverged: the model's {key} holds NaN or infinite values; lower --lr (e.g. by "
                             "10x) or check the training cases for extreme values; no weights were written")


def save_checkpoint(path: str | Path, model, optimizer=None, epoch: int = 0, **extra) -> Path:
    """Save model (+ optimizer) state and the epoch just finished; replaces ``path`` atomically.

    Refused (InputError, nothing written) when the model or a ``loss`` extra is not finite."""
    import torch

    require_finite(model, extra.get("loss") if isinstance(extra.get("loss"), (int, float)) else None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": _unwrap(model).state_dict(), "epoch": int(epoch), **extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    from ..weights import replace_atomically

    # a unique temporary name beside it (a fixed one, checkpoint.pt.partial, could be a user's file), then linked into
    # place over the previous epoch's checkpoint (or an earlier training's), never over a user's file
    return replace_atomically(path, lambda tmp: torch.save(state, tmp), may_replace=is_checkpoint)


def is_checkpoint(path: str | Path) -> bool:
    """True when ``path`` loads (weights_only) as a checkpoint that :func:`save_checkpoint` writes."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- torch.load raises many types on a file that is not a checkpoint
        return False
    return isinstance(state, dict) and "state_dict" in state and "epoch" in state


def load_checkpoint(path: str | Path, model, optimizer=None, map_location="cpu", require=("epoch",)) -> dict:
    """Restore a checkpoint into ``model`` (and ``optimizer``); returns the rest (epoch, extras).

    A file that is not a checkpoint (damaged, someone else's, or of another model configuration) is one
    InputError; ``require``: the entries the caller reads from it."""
    import torch

    path = Path(path)
    fix = "move it away and train without --resume (or give the --out of that training)"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise InputError(f"--resume: cannot read the checkpoint {path} ({exc.strerror or exc}); {fix}") from None
    except Exception:  # noqa: BLE001 -- torch.load raises many types (struct.error, UnpicklingError, ...)
        state = None
    if not isinstance(state, dict) or "state_dict" not in state or not all(k in state for k in require):
        raise InputError(f"--resume: {path} is not a checkpoint written by `bbbanomaly train` (damaged or another "
                         f"file); {fix}")
    try:
        _unwrap(model).load_state_dict(state.pop("state_dict"))
        opt_state = state.pop("optimizer", None)
        if optimizer is not None and opt_state is not None:
            optimizer.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"--resume: the checkpoint {path} is of another model or configuration (its tensors do not "
                         f"fit); give the options of the training that wrote it, or {fix}") from None
    return state
