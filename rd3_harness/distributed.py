"""torch.distributed for `torchrun`: process group set-up (each rank bound to its device), the
rank's share of a list, and collectives. A single process is the world of size 1 and pays nothing.

Two modes: `jobs` (the default) gives each rank whole (student, seed) evaluations; `data` trains
every student with DistributedDataParallel over all ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

MODES = ("jobs", "data")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mode: str = "jobs"

    @property
    def main(self) -> bool:
        """Rank 0: synthesizes, trains teachers, writes the run document, shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def data_parallel(self) -> bool:
        """Students are trained with DDP over all ranks (`--parallel data`)."""
        return self.distributed and self.mode == "data"

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

    def gather(self, value: object) -> list[object]:
        """Every rank's value, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[object] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; the tensor itself when alone."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


_world = World()


def world() -> World:
    return _world


def init_from_env(device: torch.device, mode: str = "jobs") -> World:
    """Join the process group torchrun describes (WORLD_SIZE set): NCCL on CUDA with this process
    bound to cuda:LOCAL_RANK before the group exists (else every rank's first collective lands on
    cuda:0), gloo on the CPU."""
    global _world
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return _world
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            bound = torch.device("cuda", local_rank)
            torch.cuda.set_device(bound)
            dist.init_process_group(backend="nccl", device_id=bound)
        else:
            dist.init_process_group(backend="gloo")
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank, mode)
    return _world


def shutdown(wait: bool = True) -> None:
    """Leave the process group (after a barrier unless this rank is failing)."""
    global _world
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _world = World()
