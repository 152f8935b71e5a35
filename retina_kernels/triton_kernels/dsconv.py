"""Triton implementation of retina::dsconv2d and its backward (docs/dsconv.md), the op's CUDA kernel.

An implicit GEMM: the [C·K, pixels] matrix of samples is never stored. Where each tap samples
(`tap_samples`: a plane index, the bilinear weight, [B, K, H·W], K times smaller than the samples) is
computed once per call with PyTorch; the kernels then build tiles of samples in registers, one tap at a
time, and contract them with the weight on the tensor cores (float16/bfloat16 with float32 accumulation;
float32 as TF32 where PyTorch lets float32 convolutions use it, else tf32x3, which keeps float32 accuracy), or in
plain float64 arithmetic.

- forward: out[b, o-tile, p-tile] = bias + Σ over C·K tiles of weight-tile · sample-tile.
- weight gradient: Σ over pixel tiles of grad_out-tile · sample-tileᵀ, split over programs, summed after.
- input and position gradient: per pixel tile and tap, G = weightᵀ · grad_out for a channel tile, scattered
  to the two lines each sample read (atomics) and reduced with their difference into the position gradient;
  the offset gradient is that position gradient summed outwards from the centre tap (PyTorch).

These functions take CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 (how CI tests this file).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _checks
from ..precision import tf32_convolutions_allowed
from ..reference.dsconv import tap_samples

BLOCK_O, BLOCK_P, BLOCK_CH = 64, 64, 32
NUM_WARPS = 4
WEIGHT_GRAD_SPLITS = 64


@triton.jit
def _tap(low_ptr, frac_ptr, image, tap, pixel, mask, K, HW):
    """Where tap `tap` of each pixel samples: (plane index of the lower line, weight of the upper)."""
    where = (image * K + tap) * HW + pixel
    return tl.load(low_ptr + where, mask=mask, other=0), tl.load(frac_ptr + where, mask=mask, other=0.0)


@triton.jit
def _gather(x_ptr, image, channel, low, frac, mask, C, HW, high_step):
    """[channels, pixels] samples (and the two values read) of planes `channel` [rows, 1] at `low` [1, pixels]."""
    plane = x_ptr + (image * C + channel).to(tl.int64) * HW
    a = tl.load(plane + low, mask=mask, other=0.0)
    b = tl.load(plane + low + high_step, mask=mask, other=0.0)
    return a + frac * (b - a), a, b


@triton.jit
def _contract(acc, a, b, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b on the tensor cores (float32 as tf32x3: three tf32 products, float32 accuracy), or as a
    broadcast sum for float64, which the tensor cores lack."""
    if USE_DOT:
        return tl.dot(a, b, acc, input_precision=PRECISION)
    return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)


@triton.jit
def _forward(x_ptr, low_ptr, frac_ptr, w_ptr, bias_ptr, out_ptr, C, K, O, HW, high_step,
             HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
             BO: tl.constexpr, BP: tl.constexpr, BCH: tl.constexpr):
    """out[image, o-tile, pixel-tile] = bias + Σ_taps Σ_channel-tiles weight[o, ch, tap] · samples[ch, p]."""
    pixel = tl.program_id(0) * BP + tl.arange(0, BP)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    image = tl.program_id(2)
    live = pixel < HW
    acc = tl.zeros([BO, BP], tl.float32 if USE_DOT else tl.float64)
    for tap in range(0, K):
        low, frac = _tap(low_ptr, frac_ptr, image, tap, pixel, live, K, HW)
        for ch0 in range(0, C, BCH):
            ch = ch0 + tl.arange(0, BCH)
            ok = (ch[:, None] < C) & live[None, :]
            s, _, _ = _gather(x_ptr, image, ch[:, None], low[None, :], frac[None, :], ok, C, HW, high_step)
            w = tl.load(w_ptr + (o[:, None] * C + ch[None, :]) * K + tap, mask=(o[:, None] < O) & (ch[None, :] < C),
                        other=0.0)
            acc = _contract(acc, w, s.to(w.dtype), USE_DOT, PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o < O, other=0.0)[:, None].to(acc.dtype)
    out = out_ptr + (image * O + o[:, None]).to(tl.int64) * HW + pixel[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(o[:, None] < O) & live[None, :])


@triton.jit
def _weight_grad(x_ptr, low_ptr, frac_ptr, grad_ptr, partial_ptr, B, C, K, O, HW, high_step,
                 USE_DOT: tl.constexpr, PRECISION: tl.constexpr, SPLITS: tl.constexpr,
                 BO: tl.constexpr, BP: tl.constexpr, BCH: tl.constexpr):
    """partial[split, o, ch, tap] = Σ over this split's pixels (whole batch) of grad_out[o, p] · samples[ch, p]."""
    ch_blocks = tl.cdiv(C, BCH)
    ch = (tl.program_id(0) % ch_blocks) * BCH + tl.arange(0, BCH)
    tap = tl.program_id(0) // ch_blocks
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    split = tl.program_id(2)
    acc = tl.zeros([BO, BCH], tl.float32 if USE_DOT else tl.float64)
    for start in range(split * BP, B * HW, SPLITS * BP):
        n = start + tl.arange(0, BP)
        live = n < B * HW
        image, pixel = n // HW, n % HW
        low, frac = _tap(low_ptr, frac_ptr, image, tap, pixel, live, K, HW)
        ok = (ch[:, None] < C) & live[None, :]
        s, _, _ = _gather(x_ptr, image[None, :], ch[:, None], low[None, :], frac[None, :], ok, C, HW, high_step)
        g = tl.load(grad_ptr + (image[None, :] * O + o[:, None]).to(tl.int64) * HW + pixel[None, :],
                    mask=(o[:, None] < O) & live[None, :], other=0.0)
        acc = _contract(acc, g, tl.trans(s.to(g.dtype)), USE_DOT, PRECISION)
    where = ((split * O + o[:, None]) * C + ch[None, :]) * K + tap
    tl.store(partial_ptr + where, acc, mask=(o[:, None] < O) & (ch[None, :] < C))


@triton.jit
def _input_grad(x_ptr, low_ptr, frac_ptr, w_ptr, grad_ptr, grad_x_ptr, grad_pos_ptr, C, K, O, HW, high_step,
                USE_DOT: tl.constexpr, PRECISION: tl.constexpr, WANT_INPUT: tl.constexpr, BO: tl.constexpr,
                BP: tl.constexpr, BCH: tl.constexpr):
    """Per pixel tile: G[ch, p] = Σ_o weight[o, ch, tap] · grad_out[o, p] for every tap; G·(1 - frac) and
    G·frac are added (atomically, WANT_INPUT only) to the two input values the sample read, and Σ_ch G·(upper - lower),
    the gradient of the sample position, to grad_pos, which this program alone owns. Output channels
    are the outer loop so grad_out is read once per tile; the scatter is linear, so partial sums over
    output-channel tiles may be scattered one by one."""
    pixel = tl.program_id(0) * BP + tl.arange(0, BP)
    image = tl.program_id(1)
    live = pixel < HW
    for o0 in range(0, O, BO):
        o = o0 + tl.arange(0, BO)
        g = tl.load(grad_ptr + (image * O + o[:, None]).to(tl.int64) * HW + pixel[None, :],
                    mask=(o[:, None] < O) & live[None, :], other=0.0)
        for tap in range(0, K):
            low, frac = _tap(low_ptr, frac_ptr, image, tap, pixel, live, K, HW)
            grad_pos = tl.zeros([BP], tl.float32 if USE_DOT else tl.float64)
            for ch0 in range(0, C, BCH):
                ch = ch0 + tl.arange(0, BCH)
                wt = tl.load(w_ptr + (o[None, :] * C + ch[:, None]) * K + tap, mask=(o[None, :] < O) & (ch[:, None] < C),
                             other=0.0)
                g_samples = _contract(tl.zeros([BCH, BP], tl.float32 if USE_DOT else tl.float64), wt, g.to(wt.dtype),
                                      USE_DOT, PRECISION)
                ok = (ch[:, None] < C) & live[None, :]
                _, a, b = _gather(x_ptr, image, ch[:, None], low[None, :], frac[None, :], ok, C, HW, high_step)
                grad_pos += tl.sum(tl.where(ok, g_samples * (b - a).to(g_samples.dtype), 0.0), axis=0)
                if WANT_INPUT:
                    plane = grad_x_ptr + (image * C + ch[:, None]).to(tl.int64) * HW
                    share_high = g_samples * frac[None, :].to(g_samples.dtype)
                    tl.atomic_add(plane + low[None, :], (g_samples - share_high).to(grad_x_ptr.dtype.element_ty),
                                  mask=ok)
                    tl.atomic_add(plane + low[None, :] + high_step, share_high.to(grad_x_ptr.dtype.element_ty), mask=ok)
            where = grad_pos_ptr + (image * K + tap) * HW + pixel
            tl.store(where, tl.load(where, mask=live, other=0.0) + grad_pos, mask=live)


def _flags(dtype: torch.dtype) -> dict:
    # float32: TF32 where PyTorch lets float32 convolutions use it (as the compiled kernel), else tf32x3
    # (float32 accuracy from the tensor cores).
    if dtype == torch.float32:
        return {"USE_DOT": True, "PRECISION": "tf32" if tf32_convolutions_allowed() else "tf32x3"}
    return {"USE_DOT": dtype != torch.float64, "PRECISION": "ieee"}


def _positions(input, offset, morph, extend_scope):
    _checks.require_finite_number("extend_scope", extend_scope)  # (skipped by the wrapper under torch.compile)
    b, _, h, w = input.shape
    with torch.no_grad():
        low, high_step, frac, live = tap_samples(offset.float() if offset.dtype != torch.float64 else offset,
                                                 morph, extend_scope, h, w)
    frac = frac.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
    return low.to(torch.int32).contiguous(), high_step, frac.contiguous(), live


def dsconv2d_forward(input, offset, weight, bias, morph: int, extend_scope: float) -> torch.Tensor:
    """The op's forward (arguments already checked by retina_kernels.dsconv2d)."""
    b, c, h, w = input.shape
    o, _, k = weight.shape
    out = torch.empty((b, o, h, w), dtype=input.dtype, device=input.device)
    if out.numel() == 0:
        return out
    low, high_step, frac, _ = _positions(input, offset, morph, extend_scope)
    grid = (triton.cdiv(h * w, BLOCK_P), triton.cdiv(o, BLOCK_O), b)
    _forward[grid](input.contiguous(), low, frac, weight.contiguous(), bias if bias is not None else weight, out,
                   c, k, o, h * w, high_step, HAS_BIAS=bias is not None, **_flags(input.dtype),
                   BO=BLOCK_O, BP=BLOCK_P, BCH=BLOCK_CH, num_warps=NUM_WARPS)
    return out


def dsconv2d_backward(grad, input, offset, weight, morph: int, extend_scope: float,
                      output_mask=(True, True, True)):
    """(grad_input, grad_offset, grad_weight), recomputing the samples; None where output_mask says the
    gradient is not wanted."""
    want_input, want_offset, want_weight = output_mask
    if want_input:
        _checks.alert_not_deterministic("retina::dsconv2d_backward in Triton (input gradient, atomic adds)")
    b, c, h, w = input.shape
    o, _, k = weight.shape
    if grad.numel() == 0 or input.numel() == 0:
        return tuple(torch.zeros_like(t, memory_format=torch.contiguous_format) if wanted else None
                     for t, wanted in zip((input, offset, weight), output_mask))
    x, wt, g = input.contiguous(), weight.contiguous(), grad.contiguous()
    low, high_step, frac, live = _positions(input, offset, morph, extend_scope)
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    flags = _flags(input.dtype)

    grad_weight = None
    if want_weight:
        partial = torch.empty((WEIGHT_GRAD_SPLITS, o, c, k), dtype=acc_dtype, device=input.device)
        grid = (triton.cdiv(c, BLOCK_CH) * k, triton.cdiv(o, BLOCK_O), WEIGHT_GRAD_SPLITS)
        _weight_grad[grid](x, low, frac, g, partial, b, c, k, o, h * w, high_step, **flags, SPLITS=WEIGHT_GRAD_SPLITS,
                           BO=BLOCK_O, BP=BLOCK_P, BCH=BLOCK_CH, num_warps=NUM_WARPS)
        grad_weight = partial.sum(0).to(weight.dtype)
    if not (want_input or want_offset):
        return None, None, grad_weight

    # (without the input gradient, grad_x is a placeholder the kernel never touches)
    grad_x = torch.zeros((b, c, h, w) if want_input else (0,), dtype=acc_dtype, device=input.device)
    grad_pos = torch.zeros((b, k, h * w), dtype=acc_dtype, device=input.device)
    grid = (triton.cdiv(h * w, BLOCK_P), b)
    _input_grad[grid](x, low, frac, wt, g, grad_x, grad_pos, c, k, o, h * w, high_step, **flags,
                      WANT_INPUT=want_input, BO=BLOCK_O, BP=BLOCK_P, BCH=BLOCK_CH, num_warps=NUM_WARPS)
    grad_input = grad_x.to(input.dtype) if want_input else None
    if not want_offset:
        return grad_input, None, grad_weight

    # d position_k / d offset_m = extend_scope for the taps k at or beyond m, outwards from the centre.
    grad_disp = (grad_pos * live * extend_scope).view(b, k, h, w)
    centre = k // 2
    grad_offset = torch.zeros((b, k, h, w), dtype=acc_dtype, device=input.device)
    grad_offset[:, :centre] = torch.cumsum(grad_disp[:, :centre], 1)
    grad_offset[:, centre + 1 :] = torch.flip(torch.cumsum(torch.flip(grad_disp[:, centre + 1 :], [1]), 1), [1])
    return grad_input, grad_offset.to(offset.dtype), grad_weight
