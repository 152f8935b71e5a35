"""Loads the compiled extension once and answers whether it has a kernel for an op on a device.

If `retina_kernels._C` is missing (not built, or built against another torch), every op still works
through its plain-PyTorch reference, after one RuntimeWarning. Set RETINA_KERNELS_DISABLE_EXTENSION=1
to force that path (the tests use it to check the fallback). What serves each op is listed by
`retina_kernels.info.backends()`, from the ops' own registrations (`retina_kernels.registry`).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

_DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

extension_error: Exception | None = None
if os.environ.get("RETINA_KERNELS_DISABLE_EXTENSION", "0") == "1":
    extension_error = ImportError("disabled by RETINA_KERNELS_DISABLE_EXTENSION=1")
else:
    try:
        from . import _C  # noqa: F401  (loading it registers torch.ops.retina.*)
    except ImportError as exc:  # not built, or an ABI mismatch with the installed torch
        extension_error = exc

if extension_error is not None:
    warnings.warn(
        f"retina_kernels: the compiled extension is not available ({extension_error}); every op falls "
        "back to its plain-PyTorch reference, which is correct but much slower. Build it with "
        "`pip install --no-build-isolation .` against the torch you use.",
        RuntimeWarning,
        stacklevel=2,
    )


def extension_loaded() -> bool:
    """Whether `retina_kernels._C` was imported."""
    return extension_error is None


# (op, device type) pairs known to have a kernel. Only positive answers are kept: a kernel registered
# later (the Triton ones are registered at import) must still be found, and none is ever removed. The
# dispatcher query costs about 4 µs, paid on every op call otherwise.
_served: set[tuple[str, str]] = set()


# torch.compile cannot trace the dispatcher query; what it answers is fixed once the ops are imported (a
# kernel is never removed), so a compiled graph may keep the answer it found.
@torch.compiler.assume_constant_result
def has_kernel(op: str, device_type: str) -> bool:
    """Whether `retina::<op>` has a kernel for this device type ("cpu", "cuda"): compiled, or Triton."""
    if (op, device_type) in _served:
        return True
    key = _DEVICE_KEYS.get(device_type)
    if extension_error is not None or key is None:
        return False
    found = torch._C._dispatch_has_kernel_for_dispatch_key(f"retina::{op}", key)
    if found:
        _served.add((op, device_type))
    return found


def triton_available() -> bool:
    """Whether triton can be imported (it is optional; it serves the Triton-written CUDA kernels)."""
    return importlib.util.find_spec("triton") is not None


def cpu_threads() -> int:
    """How many threads the compiled CPU kernels run on now: torch.get_num_threads() where the extension
    was built with OpenMP (setup.py adds it on Linux), 1 where it was not; 0 without the extension."""
    if extension_error is not None:
        return 0
    from . import _C

    return _C.parallel_threads()
