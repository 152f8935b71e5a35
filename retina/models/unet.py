"""`UNet`: the plain U-Net baseline (Ronneberger et al., 2015), GroupNorm by default; `TwoHeadUNet`:
the same network with several named outputs (a vessel map and a FAZ map, Joint-Seg's plain baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import torch
from torch import nn

from ..nn import ConvNormAct, SegmentationHead, SegmentationHeads
from .base import SegmentationModel
from .blocks import encoder_decoder


class UNet(SegmentationModel):
    """U-Net: `depth` max-pool stages, widths width·2^level, two conv-norm-ReLU per block, bilinear
    upsampling with skip concatenation, 1x1 head.

    `norm`: "group" (default; per-sample statistics, so batch size 1 trains as well as 16), "batch",
    "instance" or None. The local-enhanced patch UNet (DRIVE/STARE, 256² patches of equalized grey) and
    the OCT layer UNet (grey 640², 9 classes) are this network with their recipe's settings (configs/).

    Shapes: [B, in_channels, H, W] (any H, W: padded to 2^depth internally, cropped back) ->
    logits [B, num_classes, H, W]. `checkpointing=True` recomputes block activations in backward.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, width: int = 32, depth: int = 4,
                 norm: Optional[str] = "group", checkpointing: bool = False):
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.depth, self.checkpointing = depth, checkpointing
        self.encoder = nn.ModuleList(
            nn.Sequential(ConvNormAct(c_in, c_out, norm=norm), ConvNormAct(c_out, c_out, norm=norm))
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(ConvNormAct(widths[level + 1] + widths[level], widths[level], norm=norm),
                          ConvNormAct(widths[level], widths[level], norm=norm))
            for level in reversed(range(depth))
        )
        self.pool = nn.MaxPool2d(2)
        self.head = self.make_head(width, num_classes)

    def make_head(self, width: int, num_classes: int) -> nn.Module:
        return SegmentationHead(width, num_classes)

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encoder_decoder(x, self.encoder, self.decoder, self.pool, self.head, 2**self.depth, self.checkpointing)


class TwoHeadUNet(UNet):
    """UNet with one 1x1 head per named output on the shared decoder: `outputs={"vessel": 1, "faz": 1}`
    (the default) gives `{"vessel": [B, 1, H, W], "faz": [B, 1, H, W]}` logits. Train it with
    `MultiTaskLoss` (the trainer's `loss.tasks`)."""

    def __init__(self, in_channels: int = 1, outputs: Optional[Mapping[str, int]] = None, width: int = 32,
                 depth: int = 4, norm: Optional[str] = "group", checkpointing: bool = False):
        self.outputs = dict(outputs or {"vessel": 1, "faz": 1})
        super().__init__(in_channels, 1, width, depth, norm, checkpointing)

    def make_head(self, width: int, num_classes: int) -> nn.Module:
        return SegmentationHeads(width, self.outputs)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # encoder_decoder crops the head's output; a dict is cropped entry by entry
        return encoder_decoder(x, self.encoder, self.decoder, self.pool, self.head, 2**self.depth, self.checkpointing)
