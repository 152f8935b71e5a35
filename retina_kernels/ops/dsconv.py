"""`dsconv2d`: dynamic snake convolution (docs/dsconv.md) as one op, without the K-times-larger map of samples."""

from __future__ import annotations

import torch

from .. import _checks
from .._extension import extension_loaded, has_kernel, triton_available
from ..reference import dsconv as reference
from ..registry import register_backend, register_compiled_backends
from ._second_order import register_backward_derivative

# What serves retina::dsconv2d on CUDA devices: "CUDA" (compiled), "Triton" or the "reference" (also
# registered with retina_kernels.registry, below; kept here for code that read it).
CUDA_IMPLEMENTATION = "reference"


def _autocast_is_on(device_type: str) -> bool:
    """Whether autocast is enabled for that device type. Meta tensors (used to trace shapes) have no
    autocast state to ask about, and torch.amp.is_autocast_available answers for them; but torch.compile
    before torch 2.13 cannot trace that function (fullgraph fails; otherwise a graph break at every layer:
    torch 2.11 on the GPU machine), and while compiling the tensors are fake tensors of a real device."""
    if torch.compiler.is_compiling():
        return device_type != "meta" and torch.is_autocast_enabled(device_type)
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def dsconv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    morph: int,
    extend_scope: float = 1.0,
) -> torch.Tensor:
    """Dynamic snake convolution (Qi et al., ICCV 2023), the op inside `retina.nn.DSConv`.

    At every pixel (i, j) the K taps form a snake: the centre tap c = K // 2 stays put and the tap
    displacement accumulates outwards, Δ_c = 0, Δ_{c±t} = Δ_{c±(t-1)} + offset_{c±t}. Tap k samples the
    input at (i + s·Δ_k, j + k - c) for morph 0 (snake along rows) or (i + k - c, j + s·Δ_k) for morph 1,
    each coordinate clamped to the image, bilinearly; out = bias + Σ_{c,k} weight[o, c, k] · sample.

    Args:
        input: [B, C, H, W] floating.
        offset: [B, K, H, W], the raw per-tap offsets of the deformed axis (after tanh, before the
            accumulation), same dtype and device. Infinite positions are clamped to the image like any
            other; a NaN position makes its pixel's outputs NaN (and the gradients it feeds), as
            arithmetic would. The op does not test offsets for NaN: on a GPU that test would make every
            call wait for the device.
        weight: [O, C, K], K odd >= 3.
        bias: [O] or None.
        morph: 0 (the snake bends along rows, taps spread along columns) or 1 (the transpose).
        extend_scope: s, the scale of the offsets in pixels; finite.

    Returns:
        [B, O, H, W]. Differentiable in input, offset, weight and bias. CPU: C++ (float16/bfloat16 are
        computed in float32). CUDA: compiled kernels (float32 as TF32 where PyTorch allows TF32 for
        convolutions, its default; float32 accumulation for float16/bfloat16; docs/dsconv.md), or
        Triton where the extension was built without CUDA; the reference where neither is available.
        Autocast-aware: under autocast everything runs in the autocast dtype. Second-order gradients
        (create_graph=True) are exact, computed through the materialising reference.
    """
    for name, tensor in (("input", input), ("offset", offset), ("weight", weight)):
        _checks.require_tensor(name, tensor)
        _checks.require_dtype(name, tensor, _checks.FLOATING)
    if input.dim() != 4:
        raise ValueError(f"input must be [B, C, H, W], got shape {tuple(input.shape)}")
    if weight.dim() != 3:
        raise ValueError(f"weight must be [O, C, K], got shape {tuple(weight.shape)}")
    out_channels, channels, taps = weight.shape
    if taps < 3 or taps % 2 == 0:
        raise ValueError(f"K (weight.shape[2]) must be odd and >= 3, got {taps}")
    if channels != input.shape[1]:
        raise ValueError(f"weight must be [O, C, K] with C = {input.shape[1]} (input channels), got {tuple(weight.shape)}")
    expected = (input.shape[0], taps, *input.shape[2:])
    if tuple(offset.shape) != expected:
        raise ValueError(f"offset must be [B, K, H, W] = {list(expected)}, got {tuple(offset.shape)}")
    if bias is not None:
        _checks.require_tensor("bias", bias)
        if tuple(bias.shape) != (out_channels,):
            raise ValueError(f"bias must be [O] = [{out_channels}], got {tuple(bias.shape)}")
    if isinstance(morph, bool) or morph not in (0, 1):
        raise ValueError(f"morph must be 0 (snake along rows) or 1 (along columns), got {morph!r}")
    if isinstance(extend_scope, bool) or not isinstance(extend_scope, (int, float)):
        raise ValueError(f"extend_scope must be a finite number, got {extend_scope!r}")
    # Under torch.compile with dynamic sizes a float attribute can be traced as a symbolic float, which
    # math.isfinite cannot take (fullgraph=True fails; otherwise the graph breaks at every layer): while
    # tracing, the kernels' own run-time check of extend_scope (C++, Triton) stands in for this one.
    if not torch.compiler.is_compiling():
        _checks.require_finite_number("extend_scope", extend_scope)
    for name, tensor in (("offset", offset), ("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.device != input.device:
            raise ValueError(f"{name} is on {tensor.device} but input is on {input.device}")
    device_type = input.device.type
    if _autocast_is_on(device_type):
        # Under autocast the layer's float32 parameters meet low-precision activations: run in the
        # autocast dtype (accumulating in float32), as convolutions do.
        dtype = torch.get_autocast_dtype(device_type)
        input, offset, weight = input.to(dtype), offset.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    dtype = input.dtype
    if offset.dtype != dtype or weight.dtype != dtype or (bias is not None and bias.dtype != dtype):
        raise TypeError(f"offset, weight and bias must have input's dtype {str(dtype).removeprefix('torch.')}")

    if not has_kernel("dsconv2d", device_type):
        return reference.dsconv2d(input, offset, weight, bias, morph=morph, extend_scope=float(extend_scope))
    if device_type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        cast = [t.float() if t is not None else None for t in (input, offset, weight, bias)]
        return torch.ops.retina.dsconv2d(*cast, morph, float(extend_scope)).to(dtype)
    return torch.ops.retina.dsconv2d(input, offset, weight, bias, morph, float(extend_scope))


if extension_loaded():

    def _check_fake_operands(input, offset, weight, morph):
        """The compiled kernels' shape checks, on fake tensors: a traced graph fails where the op would."""
        torch._check(input.dim() == 4, lambda: f"input must be [B, C, H, W], got {tuple(input.shape)}")
        torch._check(weight.dim() == 3 and weight.shape[1] == input.shape[1],
                     lambda: f"weight must be [O, C={input.shape[1]}, K], got {tuple(weight.shape)}")
        torch._check(weight.shape[2] >= 3 and weight.shape[2] % 2 == 1, lambda: "K must be odd and >= 3")
        torch._check(offset.shape == (input.shape[0], weight.shape[2], *input.shape[2:]),
                     lambda: f"offset must be [B, K, H, W], got {tuple(offset.shape)}")
        torch._check(offset.dtype == input.dtype and weight.dtype == input.dtype,
                     lambda: "offset and weight must have input's dtype")
        torch._check(morph in (0, 1), lambda: f"morph must be 0 or 1, got {morph}")

    @torch.library.register_fake("retina::dsconv2d")
    def _dsconv2d_fake(input, offset, weight, bias, morph, extend_scope):
        _check_fake_operands(input, offset, weight, morph)
        if bias is not None:
            torch._check(bias.shape == (weight.shape[0],), lambda: f"bias must be [O], got {tuple(bias.shape)}")
        return input.new_empty((input.shape[0], weight.shape[0], input.shape[2], input.shape[3]))

    @torch.library.register_fake("retina::dsconv2d_backward")
    def _dsconv2d_backward_fake(grad, input, offset, weight, morph, extend_scope, output_mask=(True, True, True)):
        _check_fake_operands(input, offset, weight, morph)
        torch._check(grad.shape == (input.shape[0], weight.shape[0], *input.shape[2:]),
                     lambda: f"grad must be [B, O, H, W], got {tuple(grad.shape)}")
        # Contiguous whatever the operands' layout, as every kernel returns them (compiled code checks).
        return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) if wanted else None
                     for t, wanted in zip((input, offset, weight), output_mask))

    def _setup_context(ctx, inputs, output):
        input, offset, weight, bias, morph, extend_scope = inputs
        ctx.save_for_backward(input, offset, weight)
        ctx.has_bias = bias is not None
        ctx.morph, ctx.extend_scope = morph, extend_scope

    def _backward(ctx, grad):
        input, offset, weight = ctx.saved_tensors
        # Only the gradients autograd needs: an image's (a model's first layer) or a frozen weight's is
        # not computed (and without the input gradient the CUDA backward has no atomic adds).
        grad_input, grad_offset, grad_weight = torch.ops.retina.dsconv2d_backward(
            grad, input, offset, weight, ctx.morph, ctx.extend_scope, list(ctx.needs_input_grad[:3])
        )
        grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias else None
        return grad_input, grad_offset, grad_weight, grad_bias, None, None

    torch.library.register_autograd("retina::dsconv2d", _backward, setup_context=_setup_context)
    register_backward_derivative(
        "retina::dsconv2d_backward",
        lambda input, offset, weight, morph, extend_scope, output_mask=None: reference.dsconv2d(
            input, offset, weight, None, morph=morph, extend_scope=extend_scope),
        num_inputs=3,
    )

    # CUDA: the compiled kernels (csrc/core/dsconv_cuda.cu) where the extension was built with CUDA;
    # otherwise the Triton version (retina_kernels/triton_kernels/dsconv.py), registered only where it can
    # run so CPU-only installs never import triton.
    if has_kernel("dsconv2d", "cuda"):
        CUDA_IMPLEMENTATION = "CUDA"
    elif torch.cuda.is_available() and triton_available():
        from ..triton_kernels import dsconv as _triton

        torch.library.register_kernel("retina::dsconv2d", "cuda", _triton.dsconv2d_forward)
        torch.library.register_kernel("retina::dsconv2d_backward", "cuda", _triton.dsconv2d_backward)
        CUDA_IMPLEMENTATION = "Triton"


register_compiled_backends("dsconv2d", devices=("cpu",))
register_backend("dsconv2d", "cuda", CUDA_IMPLEMENTATION, own_line=True)
