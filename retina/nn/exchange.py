"""Context exchange between two task decoders (VesselFAZNet): local for thin structures, global for a
region whose extent the whole field defines."""

from __future__ import annotations

import torch
from torch import nn

from .conv import ConvNormAct


class LocalContextExchange(nn.Module):
    """The vessel features refined by their neighbourhood in both tasks: a depthwise 3x3 convolution of
    [vessel, faz] and a 1x1 projection, added to the vessel features through a learned per-pixel gate
    (vessels are thin: what matters is local, e.g. the FAZ border that capillaries end at)."""

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels)
        self.project = ConvNormAct(2 * channels, channels, 1)
        self.gate = nn.Conv2d(2 * channels, 1, 1)

    def forward(self, vessel: torch.Tensor, faz: torch.Tensor) -> torch.Tensor:
        both = self.mix(torch.cat([vessel, faz], 1))
        return vessel + torch.sigmoid(self.gate(both)) * self.project(both)


class GlobalContextExchange(nn.Module):
    """The FAZ features re-weighted by the global state of both tasks: channel attention from the pooled
    [vessel, faz] descriptors (the FAZ is one region whose extent the whole capillary field defines)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.attend = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, faz: torch.Tensor, vessel: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([faz.mean((2, 3)), vessel.mean((2, 3))], 1)
        return faz * (1 + torch.tanh(self.attend(pooled)))[:, :, None, None]
