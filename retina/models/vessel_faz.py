"""`VesselFAZNet`: joint retinal-vessel and FAZ segmentation after S²A-Net's description (a shared hybrid
CNN–Transformer encoder, a vessel decoder that exchanges local context with the FAZ decoder, a FAZ decoder
that takes global context from the vessel decoder). Its public code is a TransUNet variant without the
described modules; this is retina's own design from the description."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import (
    ConvNormAct,
    GlobalContextExchange,
    LocalContextExchange,
    SegFormerStage,
    SegmentationHead,
    pad_to_multiple,
    upsample_to,
)
from .base import SegmentationModel
from .blocks import run_block


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(c_in, c_out), ConvNormAct(c_out, c_out))


class VesselFAZNet(SegmentationModel):
    """Shared encoder (`depth` conv stages, widths width·2^level, a SegFormer stage on the deepest map for
    global context), then two decoders exchanging context at every level: the vessel decoder through
    `LocalContextExchange`, the FAZ decoder through `GlobalContextExchange`.

    Shapes: [B, in_channels, H, W] (any H, W; padded to 2^(depth-1)) -> {"vessel": [B, 1, H, W],
    "faz": [B, 1, H, W]} logits. Train with `MultiTaskLoss(..., weights="s2anet")` (the trainer's
    `loss.tasks` with `task_weights: s2anet`).
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 4, checkpointing: bool = False):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.depth, self.checkpointing = depth, checkpointing
        widths = [width * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList(_block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths[:-1]], widths))
        deepest = widths[-1]
        # global context over every token of the deepest map (1/8 of the side at depth 4: no reduction needed)
        self.transformer = SegFormerStage(deepest, deepest, heads=8 if deepest % 8 == 0 else 1, reduction=1)
        self.pool = nn.MaxPool2d(2)
        levels = list(reversed(range(depth - 1)))
        self.vessel_decoder = nn.ModuleList(_block(widths[level + 1] + widths[level], widths[level]) for level in levels)
        self.faz_decoder = nn.ModuleList(_block(widths[level + 1] + widths[level], widths[level]) for level in levels)
        self.local_exchange = nn.ModuleList(LocalContextExchange(widths[level]) for level in levels)
        self.global_exchange = nn.ModuleList(GlobalContextExchange(widths[level]) for level in levels)
        self.vessel_head, self.faz_head = SegmentationHead(width, 1), SegmentationHead(width, 1)

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x, (h, w) = pad_to_multiple(x, self.size_multiple)
        skips = []
        for level, block in enumerate(self.encoder):
            x = run_block(block, x if level == 0 else self.pool(x), self.checkpointing)
            skips.append(x)
        x = run_block(self.transformer, x, self.checkpointing)
        vessel = faz = x
        for i, skip in enumerate(reversed(skips[:-1])):
            vessel = run_block(self.vessel_decoder[i], torch.cat([upsample_to(vessel, skip), skip], 1), self.checkpointing)
            faz = run_block(self.faz_decoder[i], torch.cat([upsample_to(faz, skip), skip], 1), self.checkpointing)
            vessel, faz = self.local_exchange[i](vessel, faz), self.global_exchange[i](faz, vessel)
        return {"vessel": self.vessel_head(vessel)[..., :h, :w], "faz": self.faz_head(faz)[..., :h, :w]}
