"""torch.distributed for `torchrun`: process group set-up, the rank's share of a batch, and
reductions. A single process is the world of size 1 and pays nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: synthesizes, trains teachers, writes results, shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (the first n % size ranks get one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def broadcast(self, value: object) -> object:
        """Rank 0's value on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; the tensor itself when alone."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


_world = World()


def world() -> World:
    return _world


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on CUDA, gloo on the CPU."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if size > 1:
        _world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return _world


def shutdown(wait: bool = True) -> None:
    """Leave the process group (after a barrier unless this rank is failing)."""
    global _world
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _world = World()
