"""Which float32 precision PyTorch allows for convolutions on CUDA, which `dsconv2d` follows (it is one).

PyTorch lets float32 convolutions run on TF32 tensor cores by default (`torch.backends.cudnn.conv.
fp32_precision == "tf32"`; before torch 2.9 `torch.backends.cudnn.allow_tf32`), and float32 matrix
products not (`torch.backends.cuda.matmul.fp32_precision`). The compiled CUDA `dsconv2d` reads the
convolution setting per call, as cuDNN does: TF32 where allowed (sm_80 and newer), exact float32 otherwise.
The plain-PyTorch reference contracts with a matrix product, so it follows the matmul setting;
`allow_tf32(...)` sets both, so that the two are compared under the same precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def _new_api() -> bool:
    """Whether this torch has the per-operator fp32_precision settings (torch >= 2.9)."""
    return hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def tf32_convolutions_allowed() -> bool:
    """Whether float32 convolutions (and so `dsconv2d`) may use TF32 on CUDA now. A setting of "none"
    inherits from the level above it (cuDNN, then the global one), as in PyTorch."""
    if not _new_api():
        return bool(torch.backends.cudnn.allow_tf32)
    for precision in (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.fp32_precision,
                      torch.backends.fp32_precision):
        if precision != "none":
            return precision == "tf32"
    return False


@contextlib.contextmanager
def allow_tf32(enabled: bool) -> Iterator[None]:
    """Within the block, float32 convolutions (so `dsconv2d`) and matrix products (so the reference)
    may use TF32 on CUDA (`enabled`) or must stay exact float32; the previous settings are restored after."""
    if _new_api():
        settings = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
        previous = [s.fp32_precision for s in settings]
        try:
            for s in settings:
                s.fp32_precision = "tf32" if enabled else "ieee"
            yield
        finally:
            for s, p in zip(settings, previous):
                s.fp32_precision = p
    else:
        previous = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        try:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
