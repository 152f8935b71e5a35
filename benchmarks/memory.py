"""Peak memory of one call, next to its time.

CUDA: torch's allocator high-water mark above what was allocated before the call.
CPU: the process's resident-set high-water mark (Linux VmHWM, reset through /proc/self/clear_refs)
above the RSS before the call. For that one call glibc is told to serve every block of 64 KiB or more
with mmap (and cached memory is trimmed first), so the call cannot hide allocations in memory that an
earlier call freed; timed calls run with glibc's default behaviour. NaN where this is not Linux/glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
from collections.abc import Callable

import torch

MIB = 2.0**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TIMING_THRESHOLD = 32 * 1024 * 1024  # glibc's dynamic threshold grows to this; keep timing runs there
# Setting the mmap threshold turns glibc's dynamic thresholds off, leaving the heap trimmed whenever 128 KiB
# are free at its top: every timed call would then fault its output's pages in afresh (1.7 ms of a 5 ms
# 3->72 dsconv layer). Timing runs get the trim threshold glibc's dynamic rule pairs with that mmap one.
_TIMING_TRIM_THRESHOLD = 2 * _TIMING_THRESHOLD


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def resident_mib() -> float:
    """The process's resident set now (VmRSS), MiB."""
    return _status_kib("VmRSS") / 1024.0


def reset_resident_peak() -> None:
    """Sets the resident-set high-water mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def resident_peak_mib() -> float:
    """The resident-set high-water mark (VmHWM) since the last reset, MiB."""
    return _status_kib("VmHWM") / 1024.0


@contextlib.contextmanager
def allocations_visible():
    """Inside: glibc serves every block of 64 KiB or more with mmap (cached memory trimmed first), so
    freed memory leaves the resident set and a later allocation cannot hide in it. Yields False where
    this is not Linux/glibc (the resident-set figures then mean nothing)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        yield False
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    libc.malloc_trim(0)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _TIMING_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TIMING_TRIM_THRESHOLD)


def _cpu_peak_mib(fn: Callable[[], object]) -> float:
    with allocations_visible() as visible:
        if not visible:
            return math.nan
        reset_resident_peak()
        before = resident_mib()
        fn()
        return resident_peak_mib() - before


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Runs fn once and returns the memory it added at its peak, in MiB."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
    return _cpu_peak_mib(fn)
