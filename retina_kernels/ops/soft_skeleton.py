"""`soft_skeleton`: the soft skeleton behind soft-clDice (docs/soft_skeleton.md), fused, with a recomputing backward."""

from __future__ import annotations

import torch

from .. import _checks
from .._extension import extension_loaded, has_kernel, triton_available
from ..reference import soft_skeleton as reference
from ..registry import register_backend, register_compiled_backends
from ._second_order import register_backward_derivative


def soft_skeleton(x: torch.Tensor, num_iter: int = 10) -> torch.Tensor:
    """Soft skeleton (Shit et al., CVPR 2021) of soft masks.

    skel = relu(x - open(x)); then num_iter times: x = erode(x), delta = relu(x - open(x)),
    skel += relu(delta - skel * delta); erode = min of the per-axis 3-wide min-pools, dilate = 3x3(x3)
    max-pool, open = dilate(erode(.)), the outside never counted. Values and gradients equal the public
    reference (PyTorch's max-pool gradient rule included).

    Args:
        x: [B, C, H, W] or [B, C, D, H, W], float32/float64 (float16/bfloat16 are computed in float32),
            typically probabilities; each (sample, channel) is independent. No NaN. CPU: C++;
            CUDA: Triton (the reference when triton is not installed; see retina_kernels.backends()).
        num_iter: erosions after the first opening, >= 0 (the reference's 10 by default; the skeleton
            reaches structures up to about 2 * num_iter pixels wide).

    Returns:
        Tensor like x. Backward recomputes the forward from x: autograd keeps only x. Second-order
        gradients (create_graph=True) are exact, computed through the reference.
    """
    _checks.require_tensor("x", x)
    _checks.require_dtype("x", x, _checks.FLOATING)
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be [B, C, H, W] or [B, C, D, H, W], got shape {tuple(x.shape)}")
    num_iter = _checks.require_optional_int("num_iter", num_iter, minimum=0)
    if num_iter is None:
        raise TypeError("num_iter must be an int, got None")
    _checks.require_no_nan("x", x)
    if not has_kernel("soft_skeleton", x.device.type):
        return reference.soft_skeleton(x, num_iter)
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        return torch.ops.retina.soft_skeleton(x.float(), num_iter).to(x.dtype)
    return torch.ops.retina.soft_skeleton(x, num_iter)


if extension_loaded():

    @torch.library.register_fake("retina::soft_skeleton")
    def _soft_skeleton_fake(x: torch.Tensor, num_iter: int) -> torch.Tensor:
        torch._check(x.dim() in (4, 5), lambda: f"x must be [B, C, H, W] or [B, C, D, H, W], got {tuple(x.shape)}")
        torch._check(num_iter >= 0, lambda: f"num_iter must be >= 0, got {num_iter}")
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("retina::soft_skeleton_backward")
    def _soft_skeleton_backward_fake(grad: torch.Tensor, x: torch.Tensor, num_iter: int) -> torch.Tensor:
        torch._check(grad.shape == x.shape, lambda: f"grad must have x's shape {tuple(x.shape)}, got {tuple(grad.shape)}")
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _setup_context(ctx, inputs, output):
        x, num_iter = inputs
        ctx.save_for_backward(x)
        ctx.num_iter = num_iter

    def _backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.retina.soft_skeleton_backward(grad, x, ctx.num_iter), None

    torch.library.register_autograd("retina::soft_skeleton", _backward, setup_context=_setup_context)
    register_backward_derivative("retina::soft_skeleton_backward", reference.soft_skeleton, num_inputs=1)

    # The CUDA kernel is written in Triton (retina_kernels/triton_kernels/soft_skeleton.py); it is
    # registered only where it can run, so CPU-only installs never import triton.
    if torch.cuda.is_available() and triton_available():
        from ..triton_kernels import soft_skeleton as _triton

        torch.library.register_kernel("retina::soft_skeleton", "cuda", _triton.soft_skeleton_forward)
        torch.library.register_kernel("retina::soft_skeleton_backward", "cuda", _triton.soft_skeleton_backward)


register_compiled_backends("soft_skeleton", devices=("cpu",))
register_backend("soft_skeleton", "cuda", "Triton" if has_kernel("soft_skeleton", "cuda") else "reference", own_line=True)
