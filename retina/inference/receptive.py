"""`receptive_field`: how far an output pixel's value reaches into the input, measured on the network.

With live normalisation (GroupNorm, InstanceNorm: statistics over the whole map) every output depends on
every pixel, so the field is measured with the normalisation frozen to fixed statistics: then the
gradient of one output pixel with respect to the input is nonzero exactly where that pixel looks.
Data-dependent operators (a snake convolution's offsets) are measured at the inputs given; their bound
over all inputs is larger (retina.inference.exact uses each operator's analytic bound, not this)."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

_NORMS = (nn.GroupNorm, nn.InstanceNorm2d, nn.BatchNorm2d, nn.LayerNorm)


@contextlib.contextmanager
def _frozen_normalisation(model: nn.Module):
    """Every normalisation layer made a fixed affine map (statistics 0 and 1) for the duration."""
    originals = {}

    def affine(module):
        def forward(x):
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(module, nn.LayerNorm) or weight is None:
                return x * (weight if weight is not None else 1) + (bias if bias is not None else 0)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return x * weight.view(shape) + bias.view(shape)
        return forward

    for module in model.modules():
        if isinstance(module, _NORMS):
            originals[module] = module.forward
            module.forward = affine(module)
    try:
        yield
    finally:
        for module, forward in originals.items():
            module.forward = forward


def receptive_field(model: nn.Module, in_channels: Optional[int] = None, size: int = 129, *,
                    positions: int = 4, seed: int = 0) -> tuple[int, int]:
    """(rows, cols): the largest distance, in input pixels, between an output pixel and an input pixel
    that its value depends on, over `positions` output pixels near the centre of a `size` x `size`
    random input (several positions: a strided network's field depends on the pixel's phase). A pure
    k x k convolution gives (k // 2, k // 2). `size` must exceed twice the field to measure it."""
    channels = in_channels or getattr(model, "config", {}).get("in_channels")
    if channels is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError("in_channels: give the model's input channel count")
        channels = first.in_channels
    generator = torch.Generator().manual_seed(seed)
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    x = torch.rand(1, channels, size, size, generator=generator, dtype=dtype)
    reach = [0, 0]
    was_training = model.training
    model.eval()
    try:
        with _frozen_normalisation(model), torch.enable_grad():
            for k in range(positions):
                i, j = size // 2 + k // 2, size // 2 + k % 2
                x.grad = None
                x.requires_grad_(True)
                output = model(x)
                output = output[-1] if isinstance(output, (list, tuple)) else output
                output = sum(v[:, :, i, j].sum() for v in output.values()) if isinstance(output, dict) \
                    else output[:, :, i, j].sum()
                output.backward()
                rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
                if rows.numel():
                    reach[0] = max(reach[0], int((rows - i).abs().max()))
                    reach[1] = max(reach[1], int((cols - j).abs().max()))
    finally:
        model.train(was_training)
    return reach[0], reach[1]
