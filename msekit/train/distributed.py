"""Data-parallel training under ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1).

The process group is initialised from the environment, the adapter alone is wrapped in DDP
(the frozen LLM needs no gradient sync), every rank reads its share of each global batch
(:func:`epoch_indices`), validation is sharded and gathered, and only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def setup_distributed(device: str | None) -> Distributed:
    """Initialises the process group from torchrun's environment when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return Distributed(rank=rank, world=world, local_rank=local)


class AdapterDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP around the adapter that still answers ``.config`` etc. like the adapter itself."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def epoch_indices(pool: list[int], seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's sample order for an epoch, as DistributedSampler makes it: one permutation
    seeded by (seed + epoch), padded by repetition to a multiple of the world size, every
    world-th element from ``rank`` on. Consecutive micro-batches of the ranks together are then
    exactly the consecutive batches a single process with a world-times larger batch sees."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
    order += order[: (-len(order)) % world]
    return order[rank::world]
