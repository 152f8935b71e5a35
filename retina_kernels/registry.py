"""What serves each op on each device, as the ops themselves declare it at import.

Each op module calls `register_backend(op, device, name)` once per device it knows ("C++", "CUDA",
"Triton" or "reference"); `retina_kernels.info.backends()` lists the registrations, so a new op adds its
own lines there without editing any central table. This module sits below the ops and imports nothing of
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._extension import has_kernel

NO_CUDA = "unavailable (torch has no CUDA device)"


@dataclass(frozen=True)
class Backend:
    """One registration: `name` serves `op` on `device`. `own_line`: `backends()` reports it as
    "<device> <op>" rather than folding it into the device's line (for ops whose implementation on that
    device is a different technology from the device's compiled kernels, e.g. Triton on CUDA)."""

    op: str
    device: str
    name: str
    own_line: bool = False


_registry: dict[tuple[str, str], Backend] = {}


def register_backend(op: str, device: str, name: str, *, own_line: bool = False) -> None:
    """Declares that `name` serves `retina::<op>` on `device` ("cpu", "cuda"). A later registration for
    the same (op, device) replaces the earlier one. On "cuda" without a CUDA device the name is replaced
    by `NO_CUDA`, so what is reported never claims a kernel that cannot run."""
    if device == "cuda" and not torch.cuda.is_available():
        name = NO_CUDA
    _registry[(op, device)] = Backend(op, device, name, own_line)


# What a compiled kernel of the extension is called on each device.
COMPILED = {"cpu": "C++", "cuda": "CUDA"}


def register_compiled_backends(op: str, *, kernel: str | None = None, devices: tuple[str, ...] = tuple(COMPILED)) -> None:
    """Registers, for each of `devices`, the extension's compiled kernel where it has one and the
    plain-PyTorch reference where it has not. `kernel`: the `retina::` op that does the work, when it is
    not named like the user-facing `op` (differentiable_skeleton runs skeleton_factors)."""
    for device in devices:
        register_backend(op, device, COMPILED[device] if has_kernel(kernel or op, device) else "reference")


def registered_backends() -> list[Backend]:
    """Every registration, in registration order."""
    return list(_registry.values())
