"""`backends()`: what serves each op on each device, listed from the ops' own registrations
(`retina_kernels.registry`). It sits above the ops: importing it imports them, so every op has
registered before it is asked."""

from __future__ import annotations

import torch

from . import ops  # noqa: F401  (importing the ops registers their backends)
from ._extension import cpu_threads, extension_error, triton_available
from .registry import registered_backends


def backends() -> dict[str, str]:
    """Which implementation serves each device: "C++" / "CUDA" compiled kernels, "Triton", or the
    plain-PyTorch "reference"; plus the extension's state, the CPU kernels' threads and triton.

    One line per device ("cpu", "cuda") for the ops its compiled kernels serve, and a "<device> <op>" line
    for each op registered on its own line (a Triton kernel, say). Where the device's ops disagree, the
    device line lists each op's name."""
    lines: dict[str, str] = {"extension": "loaded" if extension_error is None else f"missing: {extension_error}"}
    device_ops: dict[str, dict[str, str]] = {}
    own_lines: dict[str, str] = {}
    for backend in registered_backends():
        if backend.own_line:
            own_lines[f"{backend.device} {backend.op}"] = backend.name
        else:
            device_ops.setdefault(backend.device, {})[backend.op] = backend.name
    for device, names in device_ops.items():
        distinct = set(names.values())
        lines[device] = distinct.pop() if len(distinct) == 1 else ", ".join(f"{op}: {n}" for op, n in names.items())
        if device == "cpu":
            lines["cpu threads"] = f"{cpu_threads()} of torch.get_num_threads() = {torch.get_num_threads()}"
    lines.update(own_lines)
    lines["triton"] = "available" if triton_available() else "not installed"
    return lines
