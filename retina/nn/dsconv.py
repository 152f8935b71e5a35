"""`DSConv`: the dynamic snake convolution layer (Qi et al., ICCV 2023) on `retina_kernels.dsconv2d`."""

from __future__ import annotations

import torch
from torch import nn

import retina_kernels
from retina_kernels import _checks


class DSConv(nn.Module):
    """Dynamic snake convolution: a K-tap kernel that bends along rows (morph 0) or columns (morph 1).

    offset_conv (3x3, 2K channels) -> GroupNorm(K) -> tanh gives per-pixel tap offsets (rows first, then
    columns; morph 0 uses the row half, morph 1 the column half), accumulated outwards from the centre tap
    into a snake; the input is sampled there and contracted with a K x 1 (morph 0) or 1 x K (morph 1)
    kernel, then GroupNorm(out/4) and ReLU. State-dict keys match the public DSConv_pro, so its
    checkpoints load (`dsc_conv_x` serves morph 0, `dsc_conv_y` morph 1; both are kept, the unused one
    as buffers, so every parameter receives a gradient).

    Shapes: input [B, in_channels, H, W] -> output [B, out_channels, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, extend_scope: float = 1.0,
                 morph: int = 0):
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        if morph not in (0, 1):
            raise ValueError(f"morph must be 0 (snake along rows) or 1 (along columns), got {morph}")
        if out_channels % 4:
            raise ValueError(f"out_channels must be a multiple of 4 (GroupNorm(out/4)), got {out_channels}")
        # Checked here too, not only by the op: a model built with a NaN scope should fail when built.
        _checks.require_finite_number("extend_scope", extend_scope)
        self.kernel_size, self.extend_scope, self.morph = kernel_size, float(extend_scope), morph
        self.offset_conv = nn.Conv2d(in_channels, 2 * kernel_size, 3, padding=1)
        # GroupNorm(K, 2K) pairs channels (0,1), (2,3), ...: with K odd one group mixes the last row offset
        # with the first column offset, so both halves are computed whatever the morph.
        self.gn_offset = nn.GroupNorm(kernel_size, 2 * kernel_size)
        self.dsc_conv_x = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), stride=(kernel_size, 1))
        self.dsc_conv_y = nn.Conv2d(in_channels, out_channels, (1, kernel_size), stride=(1, kernel_size))
        # The other morph's conv never computes anything. It stays, as buffers, so that the state-dict keys
        # are the public module's (its checkpoints load here, ours there), but it is not a parameter: an
        # unused parameter makes DistributedDataParallel fail on the second step (unless
        # find_unused_parameters=True, a graph walk every step) and inflates parameter counts.
        unused = self.dsc_conv_y if morph == 0 else self.dsc_conv_x
        for name, value in list(unused.named_parameters(recurse=False)):
            delattr(unused, name)
            unused.register_buffer(name, value.detach())
        self.gn = nn.GroupNorm(out_channels // 4, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = torch.tanh(self.gn_offset(self.offset_conv(x)))
        k = self.kernel_size
        if self.morph == 0:
            taps, conv = offset[:, :k], self.dsc_conv_x
            weight = conv.weight.squeeze(3)
        else:
            taps, conv = offset[:, k:], self.dsc_conv_y
            weight = conv.weight.squeeze(2)
        out = retina_kernels.dsconv2d(x, taps, weight, conv.bias, morph=self.morph, extend_scope=self.extend_scope)
        return self.relu(self.gn(out))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, extend_scope={self.extend_scope}, morph={self.morph}"
