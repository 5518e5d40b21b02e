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


#: Environment variable that caps the threads of this library's own pools (row blocks, deconvolution and PHAE
#: chunks). `bbbanomaly bids --n-jobs N` sets it to cores // N in each participant's process, so that N runs at
#: once do not each start a pool the size of the machine.
THREADS_ENV = "BBBANOMALY_THREADS"


def block_workers() -> int:
    """Threads for row blocks of whole-brain array work: the CPUs this process may use (its affinity), at most 4,
    and at most ``$BBBANOMALY_THREADS`` where that is set."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = os.environ.get(THREADS_ENV, "").strip()
    if limit:
        try:
            cpus = min(cpus, int(limit))
        except ValueError:
            raise InputError(f"{THREADS_ENV}={limit!r} is not a whole number: set it to the threads this "
                             "program may use (e.g. 1), or unset it") from None
        if cpus < 1:
            raise InputError(f"{THREADS_ENV}={limit!r}: set it to at least 1, or unset it")
    return max(1, min(cpus, 4))


def thread_budget_env(jobs: int) -> dict:
    """The environment for one of ``jobs`` processes run at once on this machine: this library's pools and the
    numeric libraries' threads (OpenMP, MKL, OpenBLAS; torch reads OMP_NUM_THREADS) each held to cores // jobs.
    Variables the user set are kept."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = str(max(1, cpus // max(int(jobs), 1)))
    names = (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {name: share for name in names if not os.environ.get(name)}


def map_blocks(function, total: int, block: int, workers: int | None = None) -> list:
    """``[function(rows) for rows in slices of `block` over range(total)]``, on a thread pool.

    For whole-brain passes that are independent per row block (the DSC conversion to ΔR2*, the
    BSW fit and correction, the checks): each block is a few MiB of numpy work, which releases the
    GIL, so two blocks really run on two cores and the results are the same as one after the other
    (each block is computed alone, in the same order of operations). ``function`` must write only
    its own rows. Serial where there is one block or one CPU."""
    slices = [slice(start, min(start + block, total)) for start in range(0, total, block)]
    workers = block_workers() if workers is None else max(int(workers), 1)
    if len(slices) < 2 or workers < 2:
        return [function(rows) for rows in slices]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(slices))) as pool:
        return list(pool.map(function, slices))
