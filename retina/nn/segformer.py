"""`SegFormerStage`: one MiT stage as the published S3-OCTA uses it (Xie et al., "SegFormer", NeurIPS 2021;
the stage S3-OCTA builds with an overlapping 3x3 patch embedding at stride 1): patch embedding
(C -> out channels), then x + attention(LN(x)) and x + MixFFN(LN(x)), all on [B, C, H, W] maps.

Details that the published weights depend on: the layer norm normalises over channels and adds its eps
to the standard deviation, not the variance; queries, keys, values and the output projection have no
bias; keys and values come from one r x r, stride-r convolution (2·C channels: keys, then values); heads
split the channels head-major. The patch embedding is the published unfold-then-1x1 written as the
equivalent 3x3 convolution (same numbers, without the 9x larger unfolded map); `from_public` reshapes
its weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spatial import padding_to_multiple


class ChannelLayerNorm(nn.Module):
    """(x - mean) / (std + eps) · g + b over the channels of [B, C, H, W] (std without Bessel's correction)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.var(x, dim=1, unbiased=False, keepdim=True).sqrt()
        return (x - x.mean(dim=1, keepdim=True)) / (std + self.eps) * self.g + self.b


class EfficientSelfAttention(nn.Module):
    """Multi-head attention of every pixel over the keys and values of an r-times-reduced map."""

    def __init__(self, channels: int, heads: int = 8, reduction: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.to_q = nn.Conv2d(channels, channels, 1, bias=False)
        self.to_kv = nn.Conv2d(channels, 2 * channels, reduction, stride=reduction, bias=False)
        self.to_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, width = self.heads, c // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, C, X, Y] -> [B, heads, X·Y, C / heads]
            # (sizes spelled out: -1 cannot be inferred when the batch is empty)
            return t.reshape(b, heads, width, t.shape[2] * t.shape[3]).transpose(2, 3)

        k, v = self.to_kv(x).chunk(2, dim=1)
        # Each head's width zero-padded to a multiple of 8, as in `attend`: the fused attention kernels
        # need it (without them the [B, heads, N, M] probabilities are kept for backward), and inductor's
        # CPU attention fails under dynamic sizes on other widths. Zero columns change neither q·k nor the
        # output; the scale stays 1/sqrt(true width).
        pad = (0, padding_to_multiple(width, 8))
        q, k, v = (F.pad(split(t), pad) for t in (self.to_q(x), k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=width**-0.5)[..., :width]
        # to_out (a bias-free 1x1 convolution) applied to the tokens as the linear map it is: a convolution
        # on the token-to-map view would save that view for backward, and inductor then fails under
        # dynamic sizes (sorting strides that tie at size 1; see MiTBlock)
        tokens = out.transpose(1, 2).reshape(b, h * w, c)
        out = F.linear(tokens, self.to_out.weight.view(c, c))
        return out.transpose(1, 2).reshape(b, c, h, w)


class MixFeedForward(nn.Sequential):
    """1x1 expansion, depthwise 3x3 + pointwise 1x1 (positional information), GELU, 1x1 projection."""

    def __init__(self, channels: int, expansion: int = 4):
        hidden = channels * expansion
        super().__init__(nn.Conv2d(channels, hidden, 1),
                         nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.Conv2d(hidden, hidden, 1)),
                         nn.GELU(), nn.Conv2d(hidden, channels, 1))


class SegFormerStage(nn.Module):
    """Overlapping 3x3 patch embedding (stride 1) to `out_channels`, then one attention + MixFFN layer,
    each pre-normalised and residual. [B, in_channels, H, W] -> [B, out_channels, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, heads: int = 8, reduction: int = 4, expansion: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1, self.attention = ChannelLayerNorm(out_channels), EfficientSelfAttention(out_channels, heads, reduction)
        self.norm2, self.feed_forward = ChannelLayerNorm(out_channels), MixFeedForward(out_channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attention(self.norm1(x))
        return x + self.feed_forward(self.norm2(x))
