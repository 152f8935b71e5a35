"""`S3OCTA`: snake convolutions plus a global-aggregation branch, for OCTA vessel segmentation from the
three projections (FULL, ILM-OPL, OPL-BM) as channels."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import SegmentationHead, SnakeBlock, make_aggregation, pad_to_multiple, upsample_to
from .base import SegmentationModel
from .blocks import run_block


class S3OCTA(SegmentationModel):
    """S3-OCTA: a U-shape of `depth` levels at constant `width`; every stage = [conv 3x3 | DSConv morph 1 |
    DSConv morph 0] -> concat -> fuse conv; at levels >= 1 a global-aggregation branch ("mit": one
    SegFormer layer, 8 heads, reduction 4; "swin"; "aspp"; None) runs on the stage's input and is
    concatenated into the skip; bilinear x2 up; 1x1 head. Returns logits. (The published configuration's
    extend_scope of 7 was never passed to the layers, which ran with 3: 3 is the default here.)

    Shapes: [B, in_channels, H, W] (any H, W; padded to 2^(depth-1), cropped back) -> [B, num_classes, H, W].
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, depth: int = 3, width: int = 72,
                 kernel_size: int = 11, extend_scope: float = 3.0, global_aggregation: str | None = "mit",
                 checkpointing: bool = False):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.depth, self.checkpointing = depth, checkpointing
        order = (1, 0)  # S3-OCTA's stage order: morph 1 before morph 0
        self.encoder = nn.ModuleList(
            SnakeBlock(in_channels if level == 0 else width, width, kernel_size, extend_scope, order)
            for level in range(depth)
        )
        self.aggregation = nn.ModuleList(
            make_aggregation(global_aggregation, width) or nn.Identity() for _ in range(1, depth - 1)
        )
        self.has_aggregation = global_aggregation is not None
        skip_width = [width] + [width * (2 if self.has_aggregation else 1)] * (depth - 2)
        self.decoder = nn.ModuleList(
            SnakeBlock(width + skip_width[level], width, kernel_size, extend_scope, order)
            for level in reversed(range(depth - 1))
        )
        self.pool = nn.MaxPool2d(2)
        self.head = SegmentationHead(width, num_classes)

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2 ** (self.depth - 1))
        skips = []
        for level, block in enumerate(self.encoder):
            stage_input = x if level == 0 else self.pool(x)
            x = run_block(block, stage_input, self.checkpointing)
            if 1 <= level < self.depth - 1 and self.has_aggregation:
                x_skip = torch.cat([x, run_block(self.aggregation[level - 1], stage_input, self.checkpointing)], 1)
            else:
                x_skip = x
            skips.append(x_skip)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = run_block(block, torch.cat([upsample_to(x, skip), skip], 1), self.checkpointing)
        return self.head(x)[..., :h, :w]
