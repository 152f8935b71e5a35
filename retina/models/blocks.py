"""The U-shape scaffolding the models share: optional activation checkpointing of a block, and the
encoder-decoder pass of DSCNet and UNet. The layers themselves live in `retina.nn` (re-exported here for
code that imported them from this module)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..nn.conv import ConcatConvNormAct, ConvNormAct, SnakeBlock, groups_for
from ..nn.spatial import pad_to_multiple, padding_to_multiple, replicate_pad, upsample_to

__all__ = ["ConcatConvNormAct", "ConvNormAct", "SnakeBlock", "encoder_decoder", "groups_for", "pad_to_multiple",
           "padding_to_multiple", "replicate_pad", "run_block", "upsample_to"]


def run_block(block: nn.Module, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """block(x), recomputed in backward instead of stored when checkpointing (and grad is on). Whether or
    not x requires grad: the first block's input is the image, which does not, and that full-resolution
    block stores the most (non-reentrant checkpointing gives its parameters their gradients)."""
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(block, x, use_reentrant=False)
    return block(x)


def encoder_decoder(x: torch.Tensor, encoder: nn.ModuleList, decoder: nn.ModuleList, pool: nn.Module, head: nn.Module,
                    multiple: int, checkpointing: bool) -> torch.Tensor | dict[str, torch.Tensor]:
    """The U-shape both DSCNet and UNet share: pad to `multiple`, encoder blocks with pooling between
    them, decoder blocks on [upsampled, skip], 1x1 head, crop back."""
    x, (h, w) = pad_to_multiple(x, multiple)
    skips = []
    for level, block in enumerate(encoder):
        x = run_block(block, x if level == 0 else pool(x), checkpointing)
        skips.append(x)
    for block, skip in zip(decoder, reversed(skips[:-1])):
        x = run_block(block, torch.cat([upsample_to(x, skip), skip], 1), checkpointing)
    out = head(x)
    if isinstance(out, dict):  # named heads (TwoHeadUNet)
        return {name: value[..., :h, :w] for name, value in out.items()}
    return out[..., :h, :w]
