"""Reference of docs/dsconv.md: dynamic snake convolution, written plainly in PyTorch. It materialises the
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


def tap_samples(offset: torch.Tensor, morph: int, extend_scope: float, height: int, width: int):
    """Where each tap of each pixel samples, (low, high_step, frac, live), each [B, K, H·W] but high_step:
    the sample is plane[low] + frac · (plane[low + high_step] - plane[low]), plane = one H·W channel.

    The deformed coordinate (rows for morph 0) is clamped to the image and read bilinearly between two
    neighbouring lines; `live` marks where it was inside (elsewhere its gradient is 0; `frac` keeps
    autograd's view of that). The other coordinate is an integer, clamped, so reading it is exact.
    A NaN position (NaN offsets) gets a valid `low` and a NaN `frac`."""
    b, k = offset.shape[:2]
    c = k // 2
    along, across = (height, width) if morph == 0 else (width, height)
    along_stride, across_stride = (width, 1) if morph == 0 else (1, width)
    base = torch.arange(along, device=offset.device, dtype=offset.dtype)
    base = base.view(1, 1, -1, 1) if morph == 0 else base.view(1, 1, 1, -1)
    # The integer and fractional parts come from the shift alone, not from base + shift (docs/dsconv.md):
    # independent of the line index, so a tile samples exactly where the whole image does.
    shift = extend_scope * snake_displacement(offset)
    to_first, to_last = -base, (along - 1) - base
    live = (shift >= to_first) & (shift <= to_last)
    above = shift > to_last
    whole = torch.floor(shift.detach().nan_to_num(0.0))
    lower = torch.where(live, base + whole, torch.where(above, float(along - 1), 0.0))
    # outside the image the coordinate is clamped (no gradient); NaN keeps its NaN weight on line 0
    frac = torch.where(live, shift - whole, torch.where(above | (shift < to_first), 0.0, shift))
    last_low = max(along - 2, 0)
    frac = frac + (lower - last_low).clamp(min=0)  # the last line: the upper line of the pair below it
    lower = lower.clamp(max=last_low)
    taps = torch.arange(k, device=offset.device).view(k, 1) - c
    across_index = (torch.arange(across, device=offset.device).view(1, -1) + taps).clamp(0, across - 1)
    across_index = across_index.view(1, k, 1, -1) if morph == 0 else across_index.view(1, k, -1, 1)
    low = (lower.long() * along_stride + across_index * across_stride).reshape(b, k, height * width)
    high_step = along_stride if along > 1 else 0
    return low, high_step, frac.reshape(b, k, height * width), live.reshape(b, k, height * width)


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
    index, high_step, frac, _ = tap_samples(offset, morph, extend_scope, h, w)
    index = index.reshape(b, 1, k * h * w)
    flat = input.reshape(b, ch, h * w)
    low = torch.gather(flat, 2, index.expand(b, ch, -1)).view(b, ch, k, h * w)
    high = torch.gather(flat, 2, (index + high_step).expand(b, ch, -1)).view(b, ch, k, h * w)
    frac = frac.reshape(b, 1, k, h * w)
    samples = low + frac * (high - low)
    # (Every extent spelled out: with zero pixels view() cannot infer one.)
    out = torch.einsum("ock,bckp->bop", weight, samples).view(b, weight.shape[0], h, w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
