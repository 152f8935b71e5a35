"""Output heads: the 1x1 convolution that turns features into per-class logits, and a set of named
heads for models with several outputs (a vessel map and a FAZ map from one decoder, say)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class SegmentationHead(nn.Conv2d):
    """1x1 convolution to logits: [B, in_channels, H, W] -> [B, num_classes, H, W]. A plain Conv2d (its
    state-dict keys are `weight` and `bias`), named for what it does."""

    def __init__(self, in_channels: int, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(in_channels, num_classes, 1)


class SegmentationHeads(nn.ModuleDict):
    """Several named SegmentationHeads on one feature map: {name: num_classes} ->
    forward([B, in_channels, H, W]) = {name: [B, num_classes, H, W]}, in the order given."""

    def __init__(self, in_channels: int, outputs: Mapping[str, int]):
        if not outputs:
            raise ValueError("outputs must name at least one head, e.g. {'vessel': 1, 'faz': 1}")
        super().__init__({name: SegmentationHead(in_channels, classes) for name, classes in outputs.items()})

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.items()}
