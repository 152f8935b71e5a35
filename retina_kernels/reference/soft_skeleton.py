"""Reference of docs/soft_skeleton.md: Shit et al.'s soft skeleton, written plainly with PyTorch pooling (autograd
gives the max-pool gradient rule the kernels reproduce). Oracle and fallback."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Min of the per-axis 3-wide min-pools (the outside never erodes)."""
    if x.dim() == 4:
        p1 = -F.max_pool2d(-x, (3, 1), (1, 1), (1, 0))
        p2 = -F.max_pool2d(-x, (1, 3), (1, 1), (0, 1))
        return torch.min(p1, p2)
    p1 = -F.max_pool3d(-x, (3, 1, 1), (1, 1, 1), (1, 0, 0))
    p2 = -F.max_pool3d(-x, (1, 3, 1), (1, 1, 1), (0, 1, 0))
    p3 = -F.max_pool3d(-x, (1, 1, 3), (1, 1, 1), (0, 0, 1))
    return torch.min(torch.min(p1, p2), p3)


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3 (3x3x3) max-pool."""
    if x.dim() == 4:
        return F.max_pool2d(x, (3, 3), (1, 1), (1, 1))
    return F.max_pool3d(x, (3, 3, 3), (1, 1, 1), (1, 1, 1))


def soft_skeleton(x: torch.Tensor, num_iter: int = 10) -> torch.Tensor:
    """Soft skeleton of [B, C, H, W] or [B, C, D, H, W] maps: num_iter erosions past the first opening."""
    if x.numel() == 0:  # torch's pools reject zero channels or extents; there is nothing to skeletonise
        return x * 0
    skel = F.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(num_iter):
        x = soft_erode(x)
        delta = F.relu(x - soft_dilate(soft_erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel
