"""Compute resources: the torch device (``auto`` = CUDA when available, else CPU; ``cpu``;
``cuda``) and the number of BLAS threads a block of work may use.

torch is imported only when a device is needed, so the DSC classic methods, the I/O and the
Slicer panel work without it.
"""

from __future__ import annotations

import contextlib
import enum

from .errors import InputError


class DeviceChoice(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def resolve_device(choice: str | DeviceChoice = "auto"):
    """The ``torch.device`` for a user's choice; a clear error when CUDA is asked for and absent.

    MPS is never picked automatically: nothing here is tested on it.
    """
    import torch

    try:
        choice = DeviceChoice(str(getattr(choice, "value", choice)).lower())
    except ValueError:
        raise InputError(f"device {choice!r} is not one of auto, cpu, cuda") from None
    if choice is DeviceChoice.CPU:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice is DeviceChoice.CUDA:
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU here; use --device auto or cpu")
    return torch.device("cpu")


def describe_devices() -> dict:
    """What this machine offers, for the panel's device line and for reports.

    ``{"torch": "2.13.0" | None, "cuda": bool, "gpus": ["NVIDIA H200", ...], "auto": "cpu" | "cuda"}``
    """
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda": False, "gpus": [], "auto": "cpu"}
    cuda = bool(torch.cuda.is_available())
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"torch": torch.__version__, "cuda": cuda, "gpus": gpus, "auto": "cuda" if cuda else "cpu"}


def device_summary(info: dict | None = None) -> str:
    """One line: 'CUDA: NVIDIA H200 (torch 2.13.0)', 'CPU only (torch 2.13.0)' or 'torch not installed'."""
    info = info or describe_devices()
    if info["torch"] is None:
        return "torch not installed"
    if info["cuda"]:
        return f"CUDA: {', '.join(info['gpus'])} (torch {info['torch']})"
    return f"CPU only, no CUDA GPU (torch {info['torch']})"


@contextlib.contextmanager
def blas_threads(limit: int | None):
    """Hold BLAS to ``limit`` threads inside the block (threadpoolctl, when installed; None = as is).

    Shared by the DSC and DCE fits: their products are small (an N x N SVD, 3 x 3 systems) or
    memory-bound (matrix-vector products over the curves), so BLAS threads gain nothing there, and
    on a shared, loaded machine their spin waits made a 60 x 60 SVD take seconds. threadpoolctl is
    not bundled with Slicer: without it BLAS keeps its own threading."""
    if limit is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield
