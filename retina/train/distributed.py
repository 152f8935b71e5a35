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

    def _all_reduce(self, values: list[float], op) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes."""
        if not self.enabled:
            return value
        return self._all_reduce([value], dist.ReduceOp.SUM)[0] / self.world

    def any(self, *flags: bool) -> Any:
        """Each flag true on every process when it is true on one (a time budget read off different clocks,
        a stop signal that reached one process first): a bool for one flag, a list for several; one
        collective for all of them."""
        if self.enabled:
            flags = tuple(v > 0 for v in self._all_reduce([float(bool(f)) for f in flags], dist.ReduceOp.MAX))
        return bool(flags[0]) if len(flags) == 1 else [bool(f) for f in flags]

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
