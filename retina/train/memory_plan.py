"""`plan_memory`: patch size, batch size, activation checkpointing, autocast and gradient accumulation
that train a model within a device-memory budget, found by measuring real training steps.

The search: patch sides from `max_patch` down to `min_patch` (halving, on the model's stride grid);
for each, the settings from fastest to leanest (float32, bfloat16 autocast, checkpointing, both) with
one image per batch; the first side and setting whose measured peak fits is the plan. Its batch is the
largest power of two up to the requested batch that still fits, and gradient accumulation makes up the
rest of the requested (effective) batch. Peaks are the CUDA allocator's during a forward, loss and
backward, plus the optimizer's state (AdamW: two tensors per parameter). Elsewhere pass `measure`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from ..inference.memory import budget_for, format_bytes, measured_peak
from ..models import named_outputs

# (checkpointing, autocast dtype), fastest first
SETTINGS: tuple[tuple[bool, Optional[str]], ...] = ((False, None), (False, "bfloat16"), (True, None), (True, "bfloat16"))

Measure = Callable[[int, int, bool, Optional[str]], int]  # (patch, batch, checkpointing, amp) -> peak bytes


@dataclass(frozen=True)
class MemoryPlan:
    """What to train with: `patch` x `patch` crops, `batch_size` per step, `accumulate` steps per
    optimizer update (batch_size x accumulate >= the requested batch), activation `checkpointing`,
    autocast `amp` (None or "bfloat16"); `peak` is the measured bytes of that setting, `budget` the limit."""

    patch: int
    batch_size: int
    accumulate: int
    checkpointing: bool
    amp: Optional[str]
    peak: int
    budget: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"patch {self.patch}, batch {self.batch_size} x {self.accumulate} accumulated, checkpointing "
                f"{'on' if self.checkpointing else 'off'}, autocast {self.amp or 'off'}: peak "
                f"{format_bytes(self.peak)} of {format_bytes(self.budget)}")


def _patch_sides(min_patch: int, max_patch: int, multiple: int) -> list[int]:
    sides, side = [], max_patch
    while side >= min_patch:
        aligned = side // multiple * multiple
        if aligned >= max(min_patch, multiple) and aligned not in sides:
            sides.append(aligned)
        side //= 2
    return sides


def training_step_peak(model: torch.nn.Module, loss: torch.nn.Module, in_channels: int, device: torch.device,
                       patch: int, batch: int, checkpointing: bool, amp: Optional[str]) -> int:
    """Measured peak device bytes of one training step (forward, loss, backward) plus the optimizer's
    state; an out-of-memory error counts as not fitting (returned as an infinite-like value)."""
    model.to(device).train()
    previous = getattr(model, "checkpointing", None)
    if previous is not None:
        model.checkpointing = checkpointing
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(amp or "")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer_state = 2 * sum(p.numel() * p.element_size() for p in parameters)
    image = torch.rand(batch, in_channels, patch, patch, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = next(iter(named_outputs(model(image)).values()))  # (the first of named outputs)
            target = (torch.rand(output.shape, device=device) > 0.9).float() if output.shape[1] == 1 else \
                torch.randint(0, output.shape[1], (batch, patch, patch), device=device)
            value = loss(output.float(), target)
        value.backward()

    try:
        peak = measured_peak(step, device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return 2**62
    finally:
        model.zero_grad(set_to_none=True)
        if previous is not None:
            model.checkpointing = previous
    if peak is None:
        raise ValueError(f"plan_memory measures training steps on a CUDA device, not {device}: pass measure= "
                         "(a function of patch, batch, checkpointing, amp giving bytes) to plan elsewhere")
    return peak + optimizer_state


def plan_memory(model: torch.nn.Module, loss: torch.nn.Module, *, in_channels: int, budget=None, min_patch: int = 64,
                max_patch: int = 512, batch_size: int = 1, device=None, allow_amp: bool = True,
                measure: Optional[Measure] = None) -> MemoryPlan:
    """The plan that trains `model` with `loss` within `budget` (bytes or "2GiB"; None: the device's free
    memory less 15%). `batch_size` is the effective batch wanted. `measure(patch, batch, checkpointing,
    amp) -> bytes` replaces the CUDA measurement (tests; planning for another card). Raises MemoryError
    when even `min_patch` with one image, checkpointing and autocast does not fit."""
    if min_patch < 8 or max_patch < min_patch:
        raise ValueError(f"need 8 <= min_patch <= max_patch, got {min_patch} and {max_patch}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    limit = budget_for(device, budget)
    if measure is None:
        def measure(patch, batch, checkpointing, amp):
            return training_step_peak(model, loss, in_channels, device, patch, batch, checkpointing, amp)
    settings = [s for s in SETTINGS if allow_amp or s[1] is None]
    if not hasattr(model, "checkpointing"):
        settings = [s for s in settings if not s[0]]
    multiple = int(getattr(model, "size_multiple", 1))
    smallest = None
    for patch in _patch_sides(min_patch, max_patch, multiple):
        for checkpointing, amp in settings:
            peak = measure(patch, 1, checkpointing, amp)
            smallest = peak if smallest is None else min(smallest, peak)
            if peak > limit:
                continue
            batch, batch_peak = 1, peak
            while batch * 2 <= batch_size:
                doubled = measure(patch, batch * 2, checkpointing, amp)
                if doubled > limit:
                    break
                batch, batch_peak = batch * 2, doubled
            return MemoryPlan(patch, batch, math.ceil(batch_size / batch), checkpointing, amp, batch_peak, limit)
    raise MemoryError(f"no patch of {min_patch} or more trains within {format_bytes(limit)}: one {min_patch}² image "
                      f"needs {format_bytes(smallest or 0)} at the leanest setting; lower min_patch or free memory")
