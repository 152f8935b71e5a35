"""Building blocks shared by the models: conv-GN-ReLU (also of a concatenation, without making it), the
three-branch snake block, padding to the stride, optional activation checkpointing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..nn import DSConv
from .concat_conv import conv2d_of_concatenation


def groups_for(channels: int) -> int:
    """GroupNorm groups: channels / 4 as in DSCNet, falling back to a divisor for odd widths."""
    groups = max(1, channels // 4)
    while channels % groups:
        groups -= 1
    return groups


class ConvNormAct(nn.Sequential):
    """Conv2d(k x k, same padding) -> GroupNorm(out/4) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation),
            nn.GroupNorm(groups_for(out_channels), out_channels),
            nn.ReLU(inplace=True),
        )


class ConcatConvNormAct(ConvNormAct):
    """ConvNormAct of the channel concatenation of `parts`, keeping the parts for backward instead of the
    concatenation (concat_conv.py): that would be a second copy of every part, which their own ReLUs keep
    anyway; S3-OCTA's step stores a fifth less. Same parameters and state-dict keys as
    ConvNormAct(sum of the parts' channels, out_channels), and the same single convolution.

    Shapes: parts [B, C_i, H, W] (ΣC_i = in_channels) -> [B, out_channels, H, W]. With a 1x1 kernel, a
    part may be [B, C_i, 1, 1]: it stands for its value at every pixel (image pooling).
    """

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        conv, norm, act = self
        sizes = [part.shape[1] for part in parts]
        if sum(sizes) != conv.in_channels:
            raise ValueError(f"parts must have {conv.in_channels} channels in all, got {sizes}")
        # (No sorting or branching on sizes beyond these checks: under torch.compile's dynamic sizes they
        # are symbolic, and sorting on them breaks the graph.)
        shapes = [tuple(part.shape[-2:]) for part in parts]
        full = [shape for shape in shapes if shape != (1, 1)]
        if any(shape != full[0] for shape in full) or (len(full) < len(shapes) and full and conv.kernel_size != (1, 1)):
            raise ValueError(f"parts must all have one size (or be 1x1 under a 1x1 kernel), got {shapes}")
        return act(norm(conv2d_of_concatenation(parts, conv.weight, conv.bias, conv.stride, conv.padding,
                                                conv.dilation)))


class SnakeBlock(nn.Module):
    """DSCNet's block: [conv 3x3 | DSConv morph 0 | DSConv morph 1] side by side, concatenated, fused by a
    3x3 conv. [B, in, H, W] -> [B, out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, extend_scope: float,
                 order: tuple[int, int] = (0, 1)):
        super().__init__()
        self.conv = ConvNormAct(in_channels, out_channels)
        self.snakes = nn.ModuleList(DSConv(in_channels, out_channels, kernel_size, extend_scope, m) for m in order)
        self.fuse = ConcatConvNormAct(3 * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse([self.conv(x), *(snake(x) for snake in self.snakes)])


def run_block(block: nn.Module, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """block(x), recomputed in backward instead of stored when checkpointing (and grad is on). Whether or
    not x requires grad: the first block's input is the image, which does not, and that full-resolution
    block stores the most (non-reentrant checkpointing gives its parameters their gradients)."""
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(block, x, use_reentrant=False)
    return block(x)


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


def encoder_decoder(x: torch.Tensor, encoder: nn.ModuleList, decoder: nn.ModuleList, pool: nn.Module, head: nn.Module,
                    multiple: int, checkpointing: bool) -> torch.Tensor:
    """The U-shape both DSCNet and UNet share: pad to `multiple`, encoder blocks with pooling between
    them, decoder blocks on [upsampled, skip], 1x1 head, crop back."""
    x, (h, w) = pad_to_multiple(x, multiple)
    skips = []
    for level, block in enumerate(encoder):
        x = run_block(block, x if level == 0 else pool(x), checkpointing)
        skips.append(x)
    for block, skip in zip(decoder, reversed(skips[:-1])):
        x = run_block(block, torch.cat([upsample_to(x, skip), skip], 1), checkpointing)
    return head(x)[..., :h, :w]
