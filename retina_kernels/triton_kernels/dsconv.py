"""Triton implementation of retina::dsconv2d and its backward (SPEC.md §1), the op's CUDA kernel.

An implicit GEMM: the [C·K, pixels] matrix of samples is never stored. Where each tap samples
(`tap_samples`: a plane index, the bilinear weight, [B, K, H·W], K times smaller than the samples) is
computed once per call with PyTorch; the kernels then build tiles of samples in registers and contract them
with the weight on the tensor cores (float16/bfloat16 inputs, float32 accumulation) or in exact float32 /
float64 arithmetic otherwise.

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

from ..reference.dsconv import tap_samples

BLOCK_O, BLOCK_P, BLOCK_CK, BLOCK_CH = 64, 64, 32, 32
WEIGHT_GRAD_SPLITS = 64


@triton.jit
def _samples(x_ptr, low_ptr, frac_ptr, image, channel, tap, pixel, mask, C, K, HW, high_step):
    """[rows, pixels] tile of samples: channel/tap are [rows, 1], image/pixel [1, pixels] (or broadcast)."""
    where = (image * K + tap) * HW + pixel + channel * 0  # full [rows, pixels] shape
    low = tl.load(low_ptr + where, mask=mask, other=0)
    frac = tl.load(frac_ptr + where, mask=mask, other=0.0)
    plane = x_ptr + (image * C + channel).to(tl.int64) * HW
    a = tl.load(plane + low, mask=mask, other=0.0)
    b = tl.load(plane + low + high_step, mask=mask, other=0.0)
    return a + frac * (b - a), a, b, frac, low


@triton.jit
def _contract(acc, a, b, USE_DOT: tl.constexpr, IEEE: tl.constexpr):
    """acc + a @ b: tensor cores (exact float32 products when IEEE), or a broadcast sum for float64."""
    if USE_DOT:
        if IEEE:
            return tl.dot(a, b, acc, input_precision="ieee")
        return tl.dot(a, b, acc)
    return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)


@triton.jit
def _forward(x_ptr, low_ptr, frac_ptr, w_ptr, bias_ptr, out_ptr, C, K, O, HW, high_step,
             HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, IEEE: tl.constexpr,
             BO: tl.constexpr, BP: tl.constexpr, BCK: tl.constexpr):
    pixel = tl.program_id(0) * BP + tl.arange(0, BP)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    image = tl.program_id(2)
    CK = C * K
    acc = tl.zeros([BO, BP], tl.float32 if USE_DOT else tl.float64)
    for start in range(0, CK, BCK):
        row = start + tl.arange(0, BCK)
        ok = (row[:, None] < CK) & (pixel[None, :] < HW)
        s, _, _, _, _ = _samples(x_ptr, low_ptr, frac_ptr, image, row[:, None] // K, row[:, None] % K, pixel[None, :],
                                 ok, C, K, HW, high_step)
        w = tl.load(w_ptr + o[:, None] * CK + row[None, :], mask=(o[:, None] < O) & (row[None, :] < CK), other=0.0)
        acc = _contract(acc, w, s.to(w.dtype), USE_DOT, IEEE)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o < O, other=0.0)[:, None].to(acc.dtype)
    out = out_ptr + (image * O + o[:, None]).to(tl.int64) * HW + pixel[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(o[:, None] < O) & (pixel[None, :] < HW))


@triton.jit
def _weight_grad(x_ptr, low_ptr, frac_ptr, grad_ptr, partial_ptr, B, C, K, O, HW, high_step,
                 USE_DOT: tl.constexpr, IEEE: tl.constexpr, SPLITS: tl.constexpr,
                 BO: tl.constexpr, BP: tl.constexpr, BCK: tl.constexpr):
    row = tl.program_id(0) * BCK + tl.arange(0, BCK)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    split = tl.program_id(2)
    CK = C * K
    acc = tl.zeros([BO, BCK], tl.float32 if USE_DOT else tl.float64)
    for start in range(split * BP, B * HW, SPLITS * BP):
        n = start + tl.arange(0, BP)  # pixels of the whole batch
        image, pixel = n // HW, n % HW
        ok = (row[:, None] < CK) & (n[None, :] < B * HW)
        s, _, _, _, _ = _samples(x_ptr, low_ptr, frac_ptr, image[None, :], row[:, None] // K, row[:, None] % K,
                                 pixel[None, :], ok, C, K, HW, high_step)
        g = tl.load(grad_ptr + (image[None, :] * O + o[:, None]).to(tl.int64) * HW + pixel[None, :],
                    mask=(o[:, None] < O) & (n[None, :] < B * HW), other=0.0)
        acc = _contract(acc, g, tl.trans(s.to(g.dtype)), USE_DOT, IEEE)
    tl.store(partial_ptr + (split * O + o[:, None]) * CK + row[None, :], acc, mask=(o[:, None] < O) & (row[None, :] < CK))


@triton.jit
def _input_grad(x_ptr, low_ptr, frac_ptr, w_ptr, grad_ptr, grad_x_ptr, grad_pos_ptr, C, K, O, HW, high_step,
                USE_DOT: tl.constexpr, IEEE: tl.constexpr, BO: tl.constexpr, BP: tl.constexpr, BCH: tl.constexpr):
    pixel = tl.program_id(0) * BP + tl.arange(0, BP)
    image = tl.program_id(1)
    live_pixel = pixel < HW
    CK = C * K
    for tap in range(0, K):
        grad_pos = tl.zeros([BP], tl.float32 if USE_DOT else tl.float64)
        for ch0 in range(0, C, BCH):
            ch = ch0 + tl.arange(0, BCH)
            # G[ch, p] = Σ_o weight[o, ch, tap] · grad_out[o, p]
            g_samples = tl.zeros([BCH, BP], tl.float32 if USE_DOT else tl.float64)
            for o0 in range(0, O, BO):
                o = o0 + tl.arange(0, BO)
                wt = tl.load(w_ptr + o[None, :] * CK + ch[:, None] * K + tap, mask=(o[None, :] < O) & (ch[:, None] < C),
                             other=0.0)
                g = tl.load(grad_ptr + (image * O + o[:, None]).to(tl.int64) * HW + pixel[None, :],
                            mask=(o[:, None] < O) & live_pixel[None, :], other=0.0)
                g_samples = _contract(g_samples, wt, g.to(wt.dtype), USE_DOT, IEEE)
            ok = (ch[:, None] < C) & live_pixel[None, :]
            _, a, b, frac, low = _samples(x_ptr, low_ptr, frac_ptr, image, ch[:, None], tap, pixel[None, :], ok,
                                          C, K, HW, high_step)
            grad_pos += tl.sum(tl.where(ok, g_samples * (b - a).to(g_samples.dtype), 0.0), axis=0)
            plane = grad_x_ptr + (image * C + ch[:, None]).to(tl.int64) * HW
            share_high = g_samples * frac.to(g_samples.dtype)
            tl.atomic_add(plane + low, (g_samples - share_high).to(grad_x_ptr.dtype.element_ty), mask=ok)
            tl.atomic_add(plane + low + high_step, share_high.to(grad_x_ptr.dtype.element_ty), mask=ok)
        tl.store(grad_pos_ptr + (image * K + tap) * HW + pixel, grad_pos, mask=live_pixel)


def _flags(dtype: torch.dtype) -> dict:
    return {"USE_DOT": dtype != torch.float64, "IEEE": dtype == torch.float32}


def _positions(input, offset, morph, extend_scope):
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
                   BO=BLOCK_O, BP=BLOCK_P, BCK=BLOCK_CK, num_warps=4)
    return out


def dsconv2d_backward(grad, input, offset, weight, morph: int, extend_scope: float):
    """(grad_input, grad_offset, grad_weight), recomputing the samples."""
    b, c, h, w = input.shape
    o, _, k = weight.shape
    if grad.numel() == 0 or input.numel() == 0:
        return torch.zeros_like(input), torch.zeros_like(offset), torch.zeros_like(weight)
    x, wt, g = input.contiguous(), weight.contiguous(), grad.contiguous()
    low, high_step, frac, live = _positions(input, offset, morph, extend_scope)
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    flags = _flags(input.dtype)

    partial = torch.empty((WEIGHT_GRAD_SPLITS, o, c * k), dtype=acc_dtype, device=input.device)
    grid = (triton.cdiv(c * k, BLOCK_CK), triton.cdiv(o, BLOCK_O), WEIGHT_GRAD_SPLITS)
    _weight_grad[grid](x, low, frac, g, partial, b, c, k, o, h * w, high_step, **flags, SPLITS=WEIGHT_GRAD_SPLITS,
                       BO=BLOCK_O, BP=BLOCK_P, BCK=BLOCK_CK, num_warps=4)
    grad_weight = partial.sum(0).view(o, c, k).to(weight.dtype)

    grad_x = torch.zeros((b, c, h, w), dtype=acc_dtype, device=input.device)
    grad_pos = torch.empty((b, k, h * w), dtype=acc_dtype, device=input.device)
    grid = (triton.cdiv(h * w, BLOCK_P), b)
    _input_grad[grid](x, low, frac, wt, g, grad_x, grad_pos, c, k, o, h * w, high_step, **flags,
                      BO=BLOCK_O, BP=BLOCK_P, BCH=BLOCK_CH, num_warps=4)

    # d position_k / d offset_m = extend_scope for the taps k at or beyond m, outwards from the centre.
    grad_disp = (grad_pos * live * extend_scope).view(b, k, h, w)
    centre = k // 2
    grad_offset = torch.zeros((b, k, h, w), dtype=acc_dtype, device=input.device)
    grad_offset[:, :centre] = torch.cumsum(grad_disp[:, :centre], 1)
    grad_offset[:, centre + 1 :] = torch.flip(torch.cumsum(torch.flip(grad_disp[:, centre + 1 :], [1]), 1), [1])
    return grad_x.to(input.dtype), grad_offset.to(offset.dtype), grad_weight
