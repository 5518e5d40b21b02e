"""Shared training plumbing: DistributedDataParallel under ``torchrun``, checkpoints and resume.

Each model's training loop lives beside its pipeline (e.g. ``dce/training.py``); this package
holds only what every loop needs, so that `bbbanomaly train MODEL` behaves the same for all.
"""

from .checkpoints import load_checkpoint, require_finite, save_checkpoint
from .distributed import DistributedContext, all_reduce_mean, distributed_context

__all__ = ["DistributedContext", "distributed_context", "all_reduce_mean", "save_checkpoint", "load_checkpoint",
           "require_finite"]
