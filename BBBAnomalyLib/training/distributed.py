"""DistributedDataParallel when launched by ``torchrun``, plain single-process training otherwise.

``torchrun --nproc-per-node 2 -m BBBAnomalyLib train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; the
same command without torchrun trains in one process. The backend is NCCL on CUDA and gloo on
CPU (gloo is what the tests use, with two CPU processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: object = None  # torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 prints progress and writes checkpoints and weights."""
        return self.rank == 0

    def wrap(self, model):
        """The model on this rank's device, inside DistributedDataParallel when distributed."""
        import torch

        model = model.to(self.device)
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sampler(self, dataset, shuffle: bool = True, seed: int = 0):
        """A DistributedSampler that gives each rank its share, or None in one process."""
        if not self.distributed:
            return None
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                # A DistributedDataParallel wrapper that is garbage but not yet collected (a reference cycle)
                # keeps the gloo process group alive into interpreter shutdown, where tearing down gloo's
                # threads can abort the process ("terminate called without an active exception"), seen under
                # load after the weights were written. Collect it while the interpreter is whole.
                import gc

                gc.collect()
                dist.destroy_process_group()


def distributed_context(device_choice: str = "auto") -> DistributedContext:
    """Initialise the process group when torchrun launched us; pick this rank's device."""
    import torch

    from ..core.devices import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice)
    if device.type == "cuda":
        device = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    backend = None
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return DistributedContext(rank, world, local, backend, device)


def all_reduce_mean(value: float, context: DistributedContext) -> float:
    """The mean of a per-rank number (a loss) over all ranks."""
    if not context.distributed:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], device=context.device)
    dist.all_reduce(t)
    return float(t.item()) / context.world_size
