"""Spatial helpers of the models: padding an image up to the network's stride (replicating its border)
and bilinear upsampling to a skip connection's size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padding_to_multiple(size: int, multiple: int) -> int:
    """How much to add to `size` to reach a multiple of `multiple`. Written with floor division, not
    `(-size) % multiple`: under torch.compile with dynamic shapes (which it turns on by itself once an
    input size changes) a Python modulo of a symbolic size makes inductor fail (torch 2.13:
    "TensorReferenceAnalysis has no attribute python_mod")."""
    return (size + multiple - 1) // multiple * multiple - size


def replicate_pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """F.pad(x, (0, right, 0, bottom), mode="replicate"): the last row repeated `bottom` times below, the
    last column `right` times to the right. Written as concatenation because torch.compile fails on the
    padding op's backward on the CPU: its kernel returns a channels-last gradient for a channels-last
    input (inductor's layout there) where its meta function promises a contiguous one (torch 2.13)."""
    *lead, h, w = x.shape
    x = torch.cat([x, x[..., h - 1 :, :].expand(*lead, bottom, w)], -2)
    return torch.cat([x, x[..., w - 1 :].expand(*lead, h + bottom, right)], -1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pads H and W up to a multiple of `multiple`; returns the padded tensor and the original
    (H, W) to crop back to."""
    h, w = x.shape[-2:]
    return replicate_pad(x, padding_to_multiple(h, multiple), padding_to_multiple(w, multiple)), (h, w)


def upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 (align_corners=True, as DSCNet) to the spatial size of `like`."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)
