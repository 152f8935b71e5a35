"""`DSCNet` (Qi et al., ICCV 2023): a U-Net whose every block runs a plain conv and two snake
convolutions side by side."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import SegmentationHead, SnakeBlock
from .base import SegmentationModel
from .blocks import encoder_decoder


class DSCNet(SegmentationModel):
    """DSCNet: 3 max-pool stages, widths n, 2n, 4n, 8n; each block = [conv 3x3 | DSConv morph 0 | DSConv
    morph 1] -> concat -> fuse conv 3x3; bilinear x2 up (align_corners=True) with skip concatenation;
    1x1 head. Returns logits (apply sigmoid/softmax in the loss).

    Shapes: [B, in_channels, H, W] (any H, W; padded to 8 internally, cropped back) -> [B, num_classes, H, W].
    `checkpointing=True` recomputes each block's activations in backward (for small GPUs).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, width: int = 16, kernel_size: int = 9,
                 extend_scope: float = 1.0, checkpointing: bool = False):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.checkpointing = checkpointing
        self.encoder = nn.ModuleList(
            SnakeBlock(c_in, c_out, kernel_size, extend_scope) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.decoder = nn.ModuleList(
            SnakeBlock(widths[level + 1] + widths[level], widths[level], kernel_size, extend_scope)
            for level in reversed(range(3))
        )
        self.pool = nn.MaxPool2d(2)
        self.head = SegmentationHead(width, num_classes)

    @property
    def size_multiple(self) -> int:
        return 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encoder_decoder(x, self.encoder, self.decoder, self.pool, self.head, 8, self.checkpointing)
