"""`differentiable_skeleton`: the IBP stochastic-binarised Euler skeleton of docs/differentiable_skeleton.md, fused.

The public reference's Jacobian is diagonal, so the forward pass is the binary skeleton of the hard
values plus one gradient factor per pixel (2^-k or 0), and the backward pass is one elementwise product:
about the cost of `skeletonize`. Autograd keeps that factor, prob and uniform (both usually alive
anyway) and one byte per pixel, so that a backward pass that is itself differentiated (create_graph=True)
gets the reference's second derivative too.
"""

from __future__ import annotations

import math

import torch

from .. import _checks
from .._extension import extension_loaded, has_kernel
from ..reference import skeletonize as reference
from ..registry import register_compiled_backends

EPS = 1e-8
MAX_ITERATIONS = 254
_ZERO_FACTOR = 255


def skeleton_factors(mask: torch.Tensor, num_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(skeleton, halvings) of a uint8 [N, 1, H, W] 0/1 mask after exactly num_iter outer iterations:
    the compiled kernel where there is one for the device, else the reference."""
    if has_kernel("skeleton_factors", mask.device.type):
        return torch.ops.retina.skeleton_factors(mask, num_iter)
    return reference.skeleton_factors(mask, num_iter)


def soft_values(prob: torch.Tensor, uniform: torch.Tensor, beta: float, tau: float) -> torch.Tensor:
    """The soft binarisation: sigmoid((logit(prob) + beta * logistic noise) / tau)."""
    noise = torch.log(uniform) - torch.log(1 - uniform)
    return torch.sigmoid((torch.log((prob + EPS) / (1 - prob + EPS)) + beta * noise) / tau)


def soft_slope(prob: torch.Tensor, soft: torch.Tensor, tau: float) -> torch.Tensor:
    """d soft / d prob = soft (1 - soft) / tau * d logit / d prob."""
    return soft * (1 - soft) / tau * (1 / (prob + EPS) + 1 / (1 - prob + EPS))


def halving_factors(halvings: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2^-k per pixel, 0 where the kernel marked the gradient cut."""
    return torch.where(halvings == _ZERO_FACTOR, 0.0, torch.exp2(-halvings.to(dtype)))


class _DifferentiableSkeleton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prob: torch.Tensor, uniform: torch.Tensor, num_iter: int, beta: float, tau: float):
        compute = torch.float64 if prob.dtype == torch.float64 else torch.float32
        p, u = prob.to(compute), uniform.to(compute)
        soft = soft_values(p, u, beta, tau)
        n, c, h, w = prob.shape
        hard = (soft > 0.5).to(torch.uint8).reshape(n * c, 1, h, w)
        skeleton, halvings = skeleton_factors(hard, num_iter)
        halvings = halvings.reshape(prob.shape)
        # First-order backward is one product with this; prob, uniform and the halvings (one byte a
        # pixel) are kept too, for a backward that is itself differentiated (create_graph=True).
        ctx.save_for_backward(halving_factors(halvings, compute) * soft_slope(p, soft, tau), prob, uniform, halvings)
        ctx.beta, ctx.tau = beta, tau
        return skeleton.reshape(prob.shape).to(prob.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        gradient_factor, prob, uniform, halvings = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the same product, written so autograd sees prob in it
            compute = gradient_factor.dtype
            p = prob.to(compute)
            slope = soft_slope(p, soft_values(p, uniform.to(compute), ctx.beta, ctx.tau), ctx.tau)
            gradient_factor = halving_factors(halvings, compute) * slope
        return (grad_out * gradient_factor).to(prob.dtype), None, None, None, None


def differentiable_skeleton(
    prob: torch.Tensor,
    *,
    num_iter: int = 5,
    beta: float = 0.33,
    tau: float = 1.0,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable Euler-characteristic skeleton of probability maps (Menten et al., ICCV 2023).

    Each pixel is binarised stochastically (logit + beta * logistic noise, temperature tau; the value is
    hard, the gradient that of the soft sigmoid), then num_iter outer iterations of `skeletonize`'s
    schedule run on the hard values. Identical, values and gradients, to the public reference.

    Args:
        prob: [N, C, H, W] floating, values in [0, 1]; each (sample, channel) is skeletonised alone.
        num_iter: outer iterations, 0..254 (the reference's default 5).
        beta: noise scale, >= 0. tau: temperature, > 0.
        uniform: the Uniform(0, 1) draws behind the noise, same shape and device as prob, values in
            (0, 1); None draws them from torch's generator for prob's device.

    Returns:
        [N, C, H, W] of 0/1 in prob's dtype, differentiable with respect to prob.
    """
    _checks.require_tensor("prob", prob)
    _checks.require_dtype("prob", prob, _checks.FLOATING)
    if prob.dim() != 4:
        raise ValueError(f"prob must be [N, C, H, W] (2D), got shape {tuple(prob.shape)}")
    _checks.require_unit_interval("prob", prob)
    num_iter = _checks.require_optional_int("num_iter", num_iter, minimum=0)
    if num_iter is None or num_iter > MAX_ITERATIONS:
        raise ValueError(f"num_iter must be an int in [0, {MAX_ITERATIONS}], got {num_iter}")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if uniform is None:
        compute = torch.float64 if prob.dtype == torch.float64 else torch.float32
        uniform = torch.empty(prob.shape, dtype=compute, device=prob.device).uniform_(EPS, 1 - EPS)
    else:
        _checks.require_tensor("uniform", uniform)
        _checks.require_dtype("uniform", uniform, _checks.FLOATING)
        _checks.require_same_shape_and_device("uniform", uniform, "prob", prob)
        _checks.require_open_unit_interval("uniform", uniform)
    if prob.numel() == 0:
        return prob.detach().clone().requires_grad_(prob.requires_grad)
    return _DifferentiableSkeleton.apply(prob, uniform, num_iter, float(beta), float(tau))


if extension_loaded():

    @torch.library.register_fake("retina::skeleton_factors")
    def _skeleton_factors_fake(mask: torch.Tensor, num_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch._check(mask.dim() == 4 and mask.shape[1] == 1, lambda: f"mask must be [N, 1, H, W], got {tuple(mask.shape)}")
        torch._check(mask.dtype == torch.uint8, lambda: f"mask must be uint8, got {mask.dtype}")
        torch._check(0 <= num_iter <= MAX_ITERATIONS, lambda: f"num_iter must be in [0, {MAX_ITERATIONS}], got {num_iter}")
        out = torch.empty_like(mask, memory_format=torch.contiguous_format)
        return out, torch.empty_like(out)


register_compiled_backends("differentiable_skeleton", kernel="skeleton_factors")
