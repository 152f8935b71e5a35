"""Convolution layers shared by the models: conv-GN-ReLU (also of a channel concatenation, without making
it) and DSCNet's three-branch snake block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .concat_conv import conv2d_of_concatenation
from .dsconv import DSConv


def groups_for(channels: int) -> int:
    """GroupNorm groups: channels / 4 as in DSCNet, falling back to a divisor for odd widths."""
    groups = max(1, channels // 4)
    while channels % groups:
        groups -= 1
    return groups


NORMS = ("group", "batch", "instance", None)


def make_norm(norm: str | None, channels: int) -> nn.Module:
    """The normalisation layer by name: "group" (GroupNorm(groups_for(channels)): per-sample statistics,
    independent of the batch size, retina's default), "batch", "instance" (affine), or None (identity)."""
    if norm == "group":
        return nn.GroupNorm(groups_for(channels), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm is None:
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvNormAct(nn.Sequential):
    """Conv2d(k x k, same padding) -> norm (GroupNorm(out/4) by default) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 norm: str | None = "group"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation),
            make_norm(norm, out_channels),
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
