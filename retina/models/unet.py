"""`UNet`: the plain U-Net baseline (Ronneberger et al., 2015) with GroupNorm."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import ConvNormAct, SegmentationHead
from .base import SegmentationModel
from .blocks import encoder_decoder


class UNet(SegmentationModel):
    """U-Net: `depth` max-pool stages, widths width·2^level, two conv-GN-ReLU per block, bilinear
    upsampling with skip concatenation, 1x1 head.

    Shapes: [B, in_channels, H, W] (any H, W: padded to 2^depth internally, cropped back) ->
    logits [B, num_classes, H, W]. `checkpointing=True` recomputes block activations in backward.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, width: int = 32, depth: int = 4,
                 checkpointing: bool = False):
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.depth, self.checkpointing = depth, checkpointing
        self.encoder = nn.ModuleList(
            nn.Sequential(ConvNormAct(c_in, c_out), ConvNormAct(c_out, c_out))
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(ConvNormAct(widths[level + 1] + widths[level], widths[level]),
                          ConvNormAct(widths[level], widths[level]))
            for level in reversed(range(depth))
        )
        self.pool = nn.MaxPool2d(2)
        self.head = SegmentationHead(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encoder_decoder(x, self.encoder, self.decoder, self.pool, self.head, 2**self.depth, self.checkpointing)
