"""`skeletonize`: binary skeletons by Euler-characteristic boundary peeling (docs/skeletonize.md)."""

from __future__ import annotations

import torch

from .. import _checks
from .._extension import extension_loaded, has_kernel
from ..reference import skeletonize as reference
from ..registry import register_compiled_backends


def skeletonize(mask: torch.Tensor, *, max_iter: int | None = None) -> torch.Tensor:
    """Topology-preserving skeleton of binary masks.

    Args:
        mask: [N, 1, H, W] (2D: 8-connected foreground, 4-connected background) or [N, 1, D, H, W]
            (3D: 26 / 6), dtype bool, uint8 or floating, values exactly 0 or 1. Any strides.
        max_iter: None iterates until nothing changes; n stops after n outer iterations (each is one
            endpoint map and 4 (2D) or 8 (3D) parity sub-passes; n=5 matches the public reference's
            default). Must be >= 0.

    Returns:
        A new tensor of the mask's shape, dtype and device: 1 on the skeleton. Pixels with at most one
        foreground neighbour (endpoints) are kept, so branches keep their length; components, holes and
        the Euler number are those of the mask. Not differentiable (see `differentiable_skeleton`).

    Raises:
        TypeError: mask is not a tensor or has another dtype; max_iter is not an int.
        ValueError: wrong rank, a channel count other than 1, values other than 0/1 (or NaN),
            negative max_iter.
    """
    _checks.require_tensor("mask", mask)
    _checks.require_dtype("mask", mask, _checks.BINARY_DTYPES)
    if mask.dim() not in (4, 5):
        raise ValueError(f"mask must be [N, 1, H, W] or [N, 1, D, H, W], got shape {tuple(mask.shape)}")
    if mask.shape[1] != 1:
        raise ValueError(f"mask must have exactly 1 channel (dim 1), got {mask.shape[1]}")
    max_iter = _checks.require_optional_int("max_iter", max_iter, minimum=0)
    _checks.require_binary("mask", mask)

    as_bytes = mask if mask.dtype == torch.uint8 else mask.to(torch.uint8)
    if has_kernel("skeletonize", mask.device.type):
        out = torch.ops.retina.skeletonize(as_bytes, max_iter)
    else:
        out = reference.skeletonize(as_bytes, max_iter=max_iter)
    return out if mask.dtype == torch.uint8 else out.to(mask.dtype)


if extension_loaded():

    @torch.library.register_fake("retina::skeletonize")
    def _skeletonize_fake(mask: torch.Tensor, max_iter: int | None = None) -> torch.Tensor:
        torch._check(mask.dim() in (4, 5) and mask.shape[1] == 1,
                     lambda: f"mask must be [N, 1, H, W] or [N, 1, D, H, W], got {tuple(mask.shape)}")
        torch._check(mask.dtype == torch.uint8, lambda: f"mask must be uint8, got {mask.dtype}")
        return torch.empty_like(mask, memory_format=torch.contiguous_format)


register_compiled_backends("skeletonize")
