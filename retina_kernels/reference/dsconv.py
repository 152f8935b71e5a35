"""Reference of SPEC.md §1: dynamic snake convolution, written plainly in PyTorch. It materialises the
[B, C, K, H·W] map of samples (what the fused kernels avoid) and lets autograd differentiate it. Oracle
and fallback."""

from __future__ import annotations

import torch


def snake_displacement(offset: torch.Tensor) -> torch.Tensor:
    """Δ [B, K, H, W] from the per-tap offsets δ [B, K, H, W]: zero at the centre tap c = K // 2, then
    accumulated outwards, Δ_{c+t} = Δ_{c+t-1} + δ_{c+t} and Δ_{c-t} = Δ_{c-t+1} + δ_{c-t}."""
    c = offset.shape[1] // 2
    below = torch.flip(torch.cumsum(torch.flip(offset[:, :c], [1]), 1), [1])
    above = torch.cumsum(offset[:, c + 1 :], 1)
    return torch.cat([below, torch.zeros_like(offset[:, c : c + 1]), above], 1)


def sample_coordinates(offset: torch.Tensor, morph: int, extend_scope: float, height: int, width: int):
    """Where each tap samples, as (row0 [B,K,H,W] long, row weight w [B,K,H,W], col index [K,1,W] long)
    for morph 0 (morph 1: the same with rows and columns swapped). The deformed coordinate is clamped to
    the image (its gradient is 0 where clamped), then read bilinearly between row0 and row0 + 1 with
    weight w; the other coordinate is an integer, clamped, so interpolation along it is exact."""
    k = offset.shape[1]
    c = k // 2
    along, across = (height, width) if morph == 0 else (width, height)
    base = torch.arange(along, device=offset.device, dtype=offset.dtype)
    base = base.view(1, 1, -1, 1) if morph == 0 else base.view(1, 1, 1, -1)
    position = (base + extend_scope * snake_displacement(offset)).clamp(0, along - 1)
    lower = torch.floor(position.detach()).clamp(max=max(along - 2, 0))
    weight = position - lower
    taps = torch.arange(k, device=offset.device).view(k, 1) - c
    across_index = (torch.arange(across, device=offset.device).view(1, -1) + taps).clamp(0, across - 1)
    return lower.long(), weight, across_index


def dsconv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    morph: int,
    extend_scope: float = 1.0,
) -> torch.Tensor:
    """out[b,o,i,j] = bias[o] + Σ_{c,k} weight[o,c,k] · x[b,c] sampled at tap k's snake position."""
    b, ch, h, w = input.shape
    k = offset.shape[1]
    lower, frac, across = sample_coordinates(offset, morph, extend_scope, h, w)
    along_stride, across_stride = (w, 1) if morph == 0 else (1, w)
    across = across.view(1, k, 1, -1) if morph == 0 else across.view(1, k, -1, 1)
    index0 = (lower * along_stride + across * across_stride).reshape(b, 1, k * h * w)
    index1 = index0 + (along_stride if (h if morph == 0 else w) > 1 else 0)
    flat = input.reshape(b, ch, h * w)
    low = torch.gather(flat, 2, index0.expand(b, ch, -1)).view(b, ch, k, h * w)
    high = torch.gather(flat, 2, index1.expand(b, ch, -1)).view(b, ch, k, h * w)
    frac = frac.reshape(b, 1, k, h * w)
    samples = low + frac * (high - low)
    out = torch.einsum("ock,bckp->bop", weight, samples).view(b, -1, h, w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
