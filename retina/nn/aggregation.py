"""Global-aggregation branches for S3-OCTA: each maps [B, C, H, W] -> [B, C, H, W] with a receptive
field far wider than a convolution's.

- `MiTBlock`: SegFormer's efficient self-attention (keys/values spatially reduced) + Mix-FFN.
- `SwinBlocks`: a window-attention block and a shifted-window block (Swin Transformer).
- `ASPP`: atrous spatial pyramid pooling (DeepLab v3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ConcatConvNormAct, ConvNormAct
from .spatial import padding_to_multiple, replicate_pad


def attend(attention: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           blocked: torch.Tensor | None = None) -> torch.Tensor:
    """`attention(query, key, value, attn_mask=blocked)[0]` of a batch-first nn.MultiheadAttention (no
    dropout), computed by F.scaled_dot_product_attention with each head's width zero-padded to a multiple
    of 8. The fused memory-efficient CUDA kernels need that width; without them attention falls back to
    the math path, which keeps the [B, heads, N, M] probabilities for backward: 3 GiB per S3-OCTA MiT
    layer at 304² (width 72 over 8 heads = 9). Zero columns change neither q·k nor the output, and the
    scale stays 1/sqrt(true width). query [B, N, C], key/value [B, M, C], blocked bool [B, N, M] (True:
    may not attend) -> [B, N, C]."""
    b, n, c = query.shape
    m, heads = key.shape[1], attention.num_heads
    width = c // heads
    weights = attention.in_proj_weight.chunk(3)
    biases = attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else (None, None, None)

    def heads_of(x: torch.Tensor, index: int) -> torch.Tensor:
        x = F.linear(x, weights[index], biases[index]).view(b, x.shape[1], heads, width).transpose(1, 2)
        return F.pad(x, (0, padding_to_multiple(width, 8)))

    allowed = None if blocked is None else ~blocked.view(b, 1, n, m)
    out = F.scaled_dot_product_attention(heads_of(query, 0), heads_of(key, 1), heads_of(value, 2),
                                         attn_mask=allowed, scale=width**-0.5)
    return attention.out_proj(out[..., :width].transpose(1, 2).reshape(b, n, c))


class MiTBlock(nn.Module):
    """One SegFormer (MiT) layer: x + SRA(LN(x)), then x + MixFFN(LN(x)); keys and values come from a
    `reduction`-strided conv of the map, so attention costs HW·HW/reduction² instead of (HW)²."""

    def __init__(self, channels: int, heads: int = 8, reduction: int = 4, mlp_ratio: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.norm1, self.norm2, self.norm_kv = nn.LayerNorm(channels), nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.reduce = nn.Conv2d(channels, channels, reduction, stride=reduction)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        hidden = mlp_ratio * channels
        self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.mix = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)  # Mix-FFN's positional depthwise conv
        self.reduction = reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        q = self.norm1(tokens)
        r = self.reduction
        # The token-to-map views are made contiguous before the convolutions: a convolution saving a
        # channels-last-strided view for backward makes inductor fail under dynamic shapes (torch 2.13:
        # "cannot determine truth value of Relational" when sorting strides that tie at size 1).
        q_map = q.transpose(1, 2).reshape(b, c, h, w).contiguous()
        kv_map = self.reduce(replicate_pad(q_map, padding_to_multiple(h, r), padding_to_multiple(w, r)))
        kv = self.norm_kv(kv_map.flatten(2).transpose(1, 2))
        tokens = tokens + attend(self.attention, q, kv, kv)
        # (Channel count spelled out: -1 cannot be inferred when the batch is empty.)
        hidden = self.fc1(self.norm2(tokens)).transpose(1, 2).reshape(b, self.fc1.out_features, h, w).contiguous()
        hidden = F.gelu(self.mix(hidden)).flatten(2).transpose(1, 2)
        tokens = tokens + self.fc2(hidden)
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class _WindowAttention(nn.Module):
    """x + MHA within non-overlapping windows (shifted by window/2 when `shift`), then x + MLP."""

    def __init__(self, channels: int, heads: int, window: int, shift: bool):
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.window
        ph, pw = padding_to_multiple(h, s), padding_to_multiple(w, s)
        t = F.pad(x, (0, pw, 0, ph)).permute(0, 2, 3, 1)  # [B, H', W', C]
        hp, wp = h + ph, w + pw
        # Region labels: padding and, when shifted, the wrapped-around strips must not attend across.
        region = torch.zeros(hp, wp, device=x.device)
        region[h:, :] += 1
        region[:, w:] += 2
        offset = s // 2 if self.shift and min(hp, wp) > s else 0
        if offset:
            t = torch.roll(t, (-offset, -offset), (1, 2))
            region = torch.roll(region, (-offset, -offset), (0, 1))
            region[hp - offset :, :] += 4
            region[:, wp - offset :] += 8
        windows = t.reshape(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        labels = region.reshape(hp // s, s, wp // s, s).permute(0, 2, 1, 3).reshape(-1, s * s)
        blocked = (labels[:, :, None] != labels[:, None, :]).repeat(b, 1, 1)  # [B·windows, s², s²]
        q = self.norm1(windows)
        windows = windows + attend(self.attention, q, q, q, blocked)
        windows = windows + self.mlp(self.norm2(windows))
        t = windows.reshape(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if offset:
            t = torch.roll(t, (offset, offset), (1, 2))
        return t[:, :h, :w].permute(0, 3, 1, 2).contiguous()


class SwinBlocks(nn.Sequential):
    """A window-attention block followed by a shifted-window block."""

    def __init__(self, channels: int, heads: int = 8, window: int = 8):
        super().__init__(_WindowAttention(channels, heads, window, False), _WindowAttention(channels, heads, window, True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 and dilated 3x3 convs (rates 6, 12, 18) and image pooling in
    parallel, concatenated and projected back to `channels`."""

    def __init__(self, channels: int, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(channels, channels, 1)] +
                                      [ConvNormAct(channels, channels, 3, dilation=r) for r in rates])
        self.pooled = nn.Conv2d(channels, channels, 1)
        self.project = ConcatConvNormAct(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.pooled(x.mean((2, 3), keepdim=True)))  # [B, C, 1, 1]: never expanded
        return self.project([branch(x) for branch in self.branches] + [pooled])


def make_aggregation(kind: str | None, channels: int) -> nn.Module | None:
    """The global-aggregation branch by name: "mit", "swin", "aspp", or None for none."""
    if kind is None:
        return None
    factories = {"mit": lambda: MiTBlock(channels), "swin": lambda: SwinBlocks(channels), "aspp": lambda: ASPP(channels)}
    if kind not in factories:
        raise ValueError(f"global_aggregation must be one of {sorted(factories)} or None, got {kind!r}")
    return factories[kind]()
