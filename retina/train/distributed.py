"""Data-parallel training under `torchrun`: the process group, and the few collectives the trainer needs.

`torchrun --nproc_per_node N -m retina train CONFIG` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE in their environment; `Distributed.from_environment()` joins them into a process group (NCCL
on GPUs, gloo on CPU). A single process (no WORLD_SIZE, or 1) gets a `Distributed` whose collectives are
identities, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in the run: `rank` of `world` processes (1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @classmethod
    def from_environment(cls, device_type: str) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        initialized_here = not dist.is_initialized()
        if initialized_here:
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend)
        return cls(rank, world, local_rank, initialized_here)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one (a time budget read off different clocks)."""
        if not self.enabled:
            return flag
        return any(self.gather(bool(flag)))

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        objects: list[Any] = [None] * self.world
        dist.all_gather_object(objects, obj)
        return objects

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
