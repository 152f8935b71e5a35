"""Second-order gradients for the ops whose backward is itself a custom op.

A compiled backward op (`retina::dsconv2d_backward`, `retina::soft_skeleton_backward`) is opaque to
autograd: without a derivative of its own, differentiating through it (create_graph=True, as gradient
penalties and MAML-style meta-learning do) would silently treat it as a constant of its inputs. Here its
derivatives come from the op's plain-PyTorch reference instead: double backward is the vector-Jacobian
product of the reference's own first-order vector-Jacobian product (both torch.func.vjp). Correct to
every order, at the reference's speed and memory — only second-order training pays it.
"""

from __future__ import annotations

from typing import Callable

import torch


def register_backward_derivative(backward_op: str, reference: Callable[..., torch.Tensor], num_inputs: int) -> None:
    """Registers the autograd formula of `backward_op`, whose schema is (grad, *inputs, *attrs) ->
    gradients of the `num_inputs` inputs (any of them None where the op's attrs say it is not wanted),
    so that its value equals the first-order gradients of `reference(*inputs, *attrs)` along `grad`; its
    derivatives are those of that expression."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[: 1 + num_inputs])
        ctx.attrs = inputs[1 + num_inputs :]

    def backward(ctx, *grads_of_gradients):
        attrs = ctx.attrs

        def first_order(grad, *inputs):
            _, pullback = torch.func.vjp(lambda *i: reference(*i, *attrs), *inputs)
            return pullback(grad)

        # torch.func keeps the saved tensors' own graphs apart from this one: a further order
        # (create_graph) differentiates the result like any other autograd computation.
        _, pullback = torch.func.vjp(first_order, *ctx.saved_tensors)
        # A gradient the op did not return (None: an output mask) carries no gradient of gradients.
        inputs = ctx.saved_tensors[1:]
        cotangents = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads_of_gradients, inputs))
        return (*pullback(cotangents), *[None] * len(attrs))

    torch.library.register_autograd(backward_op, backward, setup_context=setup_context)
