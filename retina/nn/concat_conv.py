"""conv2d of a channel concatenation that keeps the parts for backward instead of the concatenation.

A block that fuses branches (SnakeBlock's conv | snake | snake, ASPP's five branches) convolves their
concatenation. Autograd would keep that concatenation for the convolution's backward: a second copy of
every branch output, which the branches' own ReLUs keep anyway. This function keeps only the parts and
concatenates them again in backward (one block's transient copy at a time), so the convolution itself is
the same single cuDNN/oneDNN call as on the concatenation (a sum of per-part convolutions would store as
little, but lets cuDNN pick slower algorithms for the slices: benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def concatenate(parts: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """torch.cat(parts, 1), each [B, C_i, H, W] part or [B, C_i, 1, 1] one (a constant map) at `size` (H, W)."""
    return torch.cat([part.expand(*part.shape[:2], *size) for part in parts], 1)


class _Conv2dOfConcatenation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, bias, stride, padding, dilation, size, *parts):
        y = F.conv2d(concatenate(parts, size), weight, bias, stride, padding, dilation)
        ctx.save_for_backward(weight, *parts)
        ctx.bias_dtype = bias.dtype if bias is not None else None  # (None: no bias)
        ctx.conv = (stride, padding, dilation)
        ctx.size = size
        return y

    @staticmethod
    def backward(ctx, grad):
        weight, *parts = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        # Under autocast the forward convolution ran in y's dtype (the backward runs without autocast):
        # the recomputed operands take that dtype, the gradients their own tensors' dtypes.
        dtype = grad.dtype
        parts_need_grad, has_bias = any(ctx.needs_input_grad[6:]), ctx.bias_dtype is not None
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, concatenate(parts, ctx.size).to(dtype), weight.to(dtype),
            [weight.shape[0]] if has_bias else None, stride, padding, dilation, False, [0, 0], 1,
            [parts_need_grad, ctx.needs_input_grad[0], has_bias and ctx.needs_input_grad[1]],
        )
        grad_parts = [None] * len(parts)
        if parts_need_grad:
            for i, (part, slice_) in enumerate(zip(parts, grad_input.split([p.shape[1] for p in parts], 1))):
                if ctx.needs_input_grad[6 + i]:
                    summed = slice_.sum((2, 3), keepdim=True) if part.shape[2:] != slice_.shape[2:] else slice_
                    grad_parts[i] = summed.to(part.dtype)
        grad_weight = grad_weight.to(weight.dtype) if grad_weight is not None else None
        grad_bias = grad_bias.to(ctx.bias_dtype) if grad_bias is not None else None
        return grad_weight, grad_bias, None, None, None, None, *grad_parts


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv2d_of_concatenation(parts: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
                            stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                            dilation: int | Sequence[int] = 1) -> torch.Tensor:
    """F.conv2d(torch.cat(parts, 1), weight, bias, stride, padding, dilation), keeping only the parts for
    backward. parts: [B, C_i, H, W], or [B, C_i, 1, 1] standing for a constant map (only sensible under a
    1x1 kernel; the caller checks); weight [O, ΣC_i, kh, kw] -> [B, O, H', W']. Differentiable twice."""
    stride, padding, dilation = (_pair(v) for v in (stride, padding, dilation))  # (what aten's backward takes)
    size = next((tuple(part.shape[2:]) for part in parts if tuple(part.shape[2:]) != (1, 1)), (1, 1))
    return _Conv2dOfConcatenation.apply(weight, bias, stride, padding, dilation, size, *parts)
