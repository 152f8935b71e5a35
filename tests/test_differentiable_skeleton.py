"""retina_kernels.differentiable_skeleton and its op retina::skeleton_factors."""

import numpy as np
import pytest
import torch

import retina_kernels
import retina_kernels.ops.differentiable_skeleton as fused_module
from retina.data import vessel_mask
from retina_kernels.reference import differentiable_skeleton as literal
from retina_kernels.reference import skeletonize as reference

from .conftest import requires_cuda


def vessel_probabilities(batch, channels, height, width, seed=0):
    """Probability maps that look like a network's output on vessels: confident inside, uncertain at edges."""
    gen = torch.Generator().manual_seed(seed)
    masks = [vessel_mask(height, width, seed=seed + i) for i in range(batch * channels)]
    base = torch.from_numpy(np.stack(masks)).double().reshape(batch, channels, height, width)
    noise = torch.rand(base.shape, generator=gen, dtype=torch.float64)
    return (0.85 * base + 0.1 + 0.05 * noise).clamp(0, 1) * 0.98 + 0.01


def uniform_like(x, seed):
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).clamp(1e-8, 1 - 1e-8)


def run(fn, prob, uniform, grad_out, **kw):
    prob = prob.clone().requires_grad_()
    y = fn(prob, uniform, **kw)
    y.backward(grad_out)
    return y.detach(), prob.grad


def fused(prob, uniform, **kw):
    return retina_kernels.differentiable_skeleton(prob, uniform=uniform, **kw)


@pytest.fixture(params=["compiled", "reference"])
def backend(request, monkeypatch):
    """Runs a test with the compiled skeleton_factors kernel, then with the plain-PyTorch fallback."""
    if request.param == "reference":
        monkeypatch.setattr(fused_module, "has_kernel", lambda op, device: False)
    elif not retina_kernels.extension_loaded():
        pytest.skip("needs the compiled extension")
    return request.param


def test_golden(golden, backend):
    g = golden("diffskel2d_iter5")
    y, grad = run(fused, torch.from_numpy(g["prob"]), torch.from_numpy(g["uniform"]), torch.from_numpy(g["grad_out"]))
    np.testing.assert_array_equal(y.numpy(), g["y"])
    np.testing.assert_allclose(grad.numpy(), g["grad_prob"], rtol=1e-12, atol=1e-12)


def test_literal_reference_reproduces_golden(golden):
    """The oracle itself: docs/differentiable_skeleton.md written out with autograd gives the public
    reference's numbers."""
    g = golden("diffskel2d_iter5")
    inputs = (torch.from_numpy(g["prob"]), torch.from_numpy(g["uniform"]), torch.from_numpy(g["grad_out"]))
    y, grad = run(literal.differentiable_skeleton, *inputs)
    np.testing.assert_array_equal(y.numpy(), g["y"])
    np.testing.assert_allclose(grad.numpy(), g["grad_prob"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 33, 47), (2, 3, 40, 70), (3, 1, 65, 64), (1, 2, 1, 90)])
@pytest.mark.parametrize("num_iter", [0, 1, 3, 5, 8])
@pytest.mark.parametrize("params", [(0.33, 1.0), (0.0, 1.0), (1.0, 0.5)])
def test_matches_literal_reference(backend, shape, num_iter, params):
    beta, tau = params
    prob = vessel_probabilities(*shape, seed=shape[3])
    uniform = uniform_like(prob, seed=num_iter)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, grad = run(fused, prob, uniform, grad_out, num_iter=num_iter, beta=beta, tau=tau)
    y_ref, grad_ref = run(literal.differentiable_skeleton, prob, uniform, grad_out, num_iter=num_iter, beta=beta, tau=tau)
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


def test_forward_is_skeleton_of_hard_values_and_batch_independent(backend):
    prob = vessel_probabilities(3, 2, 48, 56, seed=4)
    uniform = uniform_like(prob, seed=2)
    y = fused(prob, uniform)
    for i in range(3):
        assert torch.equal(y[i : i + 1], fused(prob[i : i + 1], uniform[i : i + 1]))
    soft = torch.sigmoid(torch.log((prob + 1e-8) / (1 - prob + 1e-8)) + 0.33 * (torch.log(uniform) - torch.log(1 - uniform)))
    hard = (soft > 0.5).to(torch.uint8).reshape(6, 1, 48, 56)
    assert torch.equal(y.reshape(6, 1, 48, 56).to(torch.uint8), retina_kernels.skeletonize(hard, max_iter=5))


def test_keeps_one_new_tensor_and_a_byte_per_pixel_for_backward():
    prob = vessel_probabilities(2, 1, 64, 64).requires_grad_()
    uniform = uniform_like(prob, 0)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        retina_kernels.differentiable_skeleton(prob, uniform=uniform)
    factor, *rest = saved
    assert factor.shape == prob.shape and factor.dtype == prob.dtype
    assert rest[0] is prob and rest[1] is uniform  # the caller's own tensors, not copies
    assert rest[2].shape == prob.shape and rest[2].dtype == torch.uint8 and len(rest) == 3


@pytest.mark.parametrize("params", [(0.33, 1.0), (1.0, 0.5)])
def test_second_order_matches_literal_reference(backend, params):
    # create_graph=True (a gradient penalty): the reference's derivative of its own gradient.
    beta, tau = params
    prob = vessel_probabilities(2, 2, 24, 30, seed=5)
    uniform = uniform_like(prob, seed=6)
    weights = torch.randn(prob.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def second_order(fn, **kw):
        leaf = prob.clone().requires_grad_()
        (first,) = torch.autograd.grad((fn(leaf, uniform, **kw) * weights).sum(), leaf, create_graph=True)
        return first.detach(), torch.autograd.grad(first.square().sum(), leaf)[0]

    ours = second_order(fused, num_iter=3, beta=beta, tau=tau)
    ref = second_order(literal.differentiable_skeleton, num_iter=3, beta=beta, tau=tau)
    assert ref[1].abs().max() > 0
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_dtypes_and_generator():
    prob64 = vessel_probabilities(1, 1, 40, 40)
    uniform = uniform_like(prob64, 3)
    y64 = fused(prob64, uniform)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        prob = prob64.to(dtype).requires_grad_()
        y = retina_kernels.differentiable_skeleton(prob, uniform=uniform.float())  # bf16 would round draws to 1
        assert y.dtype == dtype
        y.sum().backward()
        assert prob.grad.dtype == dtype and torch.isfinite(prob.grad.float()).all()
    y32 = fused(prob64.float(), uniform.float())
    assert (y32.double() != y64).float().mean() < 0.01  # rounding of soft near 0.5 may differ
    torch.manual_seed(5)
    a = retina_kernels.differentiable_skeleton(prob64)
    torch.manual_seed(5)
    b = retina_kernels.differentiable_skeleton(prob64)
    assert torch.equal(a, b)


def test_non_contiguous_and_empty():
    prob = vessel_probabilities(2, 2, 30, 40)
    uniform = uniform_like(prob, 1)
    expected = fused(prob, uniform)
    view = prob.transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(fused(view, uniform), expected)
    empty = torch.zeros(0, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert retina_kernels.differentiable_skeleton(empty).shape == empty.shape


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"prob": torch.full((1, 1, 4, 4), 1.5)}, ValueError, r"prob must be in \[0, 1\]"),
        ({"prob": torch.full((1, 1, 4, 4), float("nan"))}, ValueError, "prob contains NaN"),
        ({"prob": torch.zeros(1, 4, 4)}, ValueError, r"prob must be \[N, C, H, W\]"),
        ({"prob": torch.zeros(1, 1, 4, 4, dtype=torch.uint8)}, TypeError, "prob must have dtype"),
        ({"num_iter": -1}, ValueError, "num_iter must be >= 0"),
        ({"num_iter": 300}, ValueError, r"num_iter must be an int in \[0, 254\]"),
        ({"beta": -0.1}, ValueError, "beta must be a finite number >= 0"),
        ({"tau": 0.0}, ValueError, "tau must be a finite number > 0"),
        ({"uniform": torch.full((1, 1, 4, 4), 0.0)}, ValueError, r"uniform must be strictly inside \(0, 1\)"),
        ({"uniform": torch.full((1, 1, 4, 5), 0.5)}, ValueError, "uniform must have the shape of prob"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    kwargs = {"prob": torch.full((1, 1, 4, 4), 0.5), **kwargs}
    prob = kwargs.pop("prob")
    with pytest.raises(error, match=match):
        retina_kernels.differentiable_skeleton(prob, **kwargs)


@pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")
def test_skeleton_factors_op():
    mask = (torch.rand(2, 1, 21, 70, generator=torch.Generator().manual_seed(0)) < 0.6).to(torch.uint8)
    for num_iter in (0, 1, 4):
        skel, halvings = torch.ops.retina.skeleton_factors(mask, num_iter)
        ref_skel, ref_halvings = reference.skeleton_factors(mask, num_iter)
        assert torch.equal(skel, ref_skel) and torch.equal(halvings, ref_halvings)
        torch.library.opcheck(torch.ops.retina.skeleton_factors.default, (mask, num_iter))
    with pytest.raises(ValueError, match=r"num_iter must be in \[0, 254\]"):
        torch.ops.retina.skeleton_factors(mask, 255)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("shape", [(1, 1, 48, 64), (4, 2, 130, 257), (8, 1, 512, 512)])
def test_cuda_equals_cpu(shape):
    prob = vessel_probabilities(*shape, seed=2)
    uniform = uniform_like(prob, 7)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y, grad = run(fused, prob, uniform, grad_out)
    y_cuda, grad_cuda = run(fused, prob.cuda(), uniform.cuda(), grad_out.cuda())
    assert torch.equal(y_cuda.cpu(), y)
    torch.testing.assert_close(grad_cuda.cpu(), grad, rtol=1e-12, atol=1e-12)
    mask = (prob > 0.5).to(torch.uint8).reshape(-1, 1, *shape[2:])
    for a, b in zip(torch.ops.retina.skeleton_factors(mask.cuda(), 5), torch.ops.retina.skeleton_factors(mask, 5)):
        assert torch.equal(a.cpu(), b)
