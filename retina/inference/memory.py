"""Memory budgets: "2GiB"-style sizes, what a device has free, and the measured peak of a computation."""

from __future__ import annotations

import os
import re
from typing import Callable, Optional, Union

import torch

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

# What "free memory" leaves to the allocator's fragmentation, cuDNN workspaces and other processes.
MARGIN = 0.15

Memory = Union[int, float, str, None]


def parse_memory(value: Memory, name: str = "max_memory") -> Optional[int]:
    """Bytes from an int, or a string such as "2GiB", "512 MiB", "1.5GB" (binary and decimal units);
    None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a byte count or a string such as '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{name} must be a byte count or a size such as '2GiB' or '512MiB', got {value!r}")
        number = float(match.group(1)) * _UNITS[unit]
    if not number > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return int(number)


def free_memory(device: torch.device) -> int:
    """Bytes that a computation on `device` may use: CUDA's free memory plus what PyTorch's allocator
    holds in reserve, or the host's available memory, less a margin."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + reserved) * (1 - MARGIN))
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: assume 8 GiB
        available = 8 * 2**30
    return int(available * (1 - MARGIN))


def budget_for(device: torch.device, max_memory: Memory) -> int:
    """The byte budget: `max_memory` parsed, or the device's free memory less a margin."""
    parsed = parse_memory(max_memory)
    return parsed if parsed is not None else free_memory(device)


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory (CUDA's OutOfMemoryError, or the CPU allocator's)."""
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in message or "can't allocate memory" in message


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} GiB"


def measured_peak(run: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak bytes that `run()` allocates on a CUDA device (the caching allocator's peak above what was
    allocated before), or None where no allocator can say (the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
