"""retina_kernels.soft_skeleton: goldens, gradients against the reference (ties included), opcheck."""

import numpy as np
import pytest
import torch

import retina_kernels
from retina.data import vessel_mask, vessel_volume
from retina_kernels.reference import soft_skeleton as reference

from .conftest import requires_cuda

needs_extension = pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")


def forward_backward(fn, x, grad_out, num_iter):
    x = x.clone().requires_grad_()
    y = fn(x, num_iter)
    y.backward(grad_out)
    return y.detach(), x.grad


def soft_vessels(shape, seed=0):
    """Soft masks with plateaus (many exact ties in the pools) and smooth ramps."""
    b, c, *spatial = shape
    make = vessel_mask if len(spatial) == 2 else vessel_volume
    masks = np.stack([make(*spatial, seed=seed + i) for i in range(b * c)]).reshape(shape)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(shape, generator=gen, dtype=torch.float64)
    return torch.from_numpy(masks).double() * 0.7 + 0.3 * (noise > 0.7).double() * noise


def test_golden(golden):
    g = golden("softskel2d_iter10")
    y, grad = forward_backward(retina_kernels.soft_skeleton, torch.from_numpy(g["x"]), torch.from_numpy(g["grad_out"]), 10)
    np.testing.assert_allclose(y.numpy(), g["y"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad.numpy(), g["grad_x"], rtol=0, atol=1e-12)


def test_reference_matches_golden(golden):
    g = golden("softskel2d_iter10")
    y, grad = forward_backward(reference.soft_skeleton, torch.from_numpy(g["x"]), torch.from_numpy(g["grad_out"]), 10)
    np.testing.assert_allclose(y.numpy(), g["y"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad.numpy(), g["grad_x"], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "shape", [(1, 1, 32, 32), (2, 3, 27, 41), (1, 1, 1, 50), (3, 1, 50, 2), (1, 2, 9, 11, 13), (2, 1, 1, 20, 21)]
)
@pytest.mark.parametrize("num_iter", [0, 1, 3, 10, 12])
def test_matches_reference(shape, num_iter):
    gen = torch.Generator().manual_seed(sum(shape) + num_iter)
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    for x in (soft_vessels(shape, seed=num_iter), torch.rand(shape, generator=gen, dtype=torch.float64),
              (torch.rand(shape, generator=gen) > 0.5).double()):  # binary: ties everywhere
        y, grad = forward_backward(retina_kernels.soft_skeleton, x, grad_out, num_iter)
        y_ref, grad_ref = forward_backward(reference.soft_skeleton, x, grad_out, num_iter)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-11)


def test_float32_close_to_float64():
    x = soft_vessels((2, 1, 64, 64))
    y64 = retina_kernels.soft_skeleton(x, 10)
    y32 = retina_kernels.soft_skeleton(x.float(), 10)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5)
    for dtype in (torch.float16, torch.bfloat16):
        assert retina_kernels.soft_skeleton(x.to(dtype), 3).dtype == dtype


def test_gradcheck():
    x = (torch.rand(2, 2, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: retina_kernels.soft_skeleton(t, 3), (x,))
    v = torch.rand(1, 1, 5, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: retina_kernels.soft_skeleton(t, 2), (v,))


@pytest.mark.parametrize("shape", [(2, 1, 16, 19), (1, 2, 6, 7, 5)])
def test_second_order_matches_reference(shape):
    # create_graph=True (a gradient penalty) differentiates the compiled backward op itself.
    x = soft_vessels(shape, seed=3)

    def second_order(fn):
        leaf = x.clone().requires_grad_()
        (first,) = torch.autograd.grad(fn(leaf, 3).pow(3).sum(), leaf, create_graph=True)
        return torch.autograd.grad(first.square().sum(), leaf)[0]

    ours, ref = second_order(retina_kernels.soft_skeleton), second_order(reference.soft_skeleton)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    small = torch.rand(1, 1, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: retina_kernels.soft_skeleton(t, 2), (small,))


@needs_extension
def test_opcheck_and_saved_tensors():
    x = torch.rand(2, 1, 12, 15, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.retina.soft_skeleton.default, (x, 4))
    torch.library.opcheck(torch.ops.retina.soft_skeleton.default, (torch.rand(1, 2, 5, 6, 7), 2))
    torch.library.opcheck(torch.ops.retina.soft_skeleton_backward.default, (torch.rand_like(x).requires_grad_(), x, 3))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        retina_kernels.soft_skeleton(x, 10)
    assert len(saved) == 1 and saved[0] is x  # only the input is kept for backward


def test_batch_independence_non_contiguous_and_empty():
    x = soft_vessels((3, 2, 30, 40), seed=4)
    y = retina_kernels.soft_skeleton(x, 5)
    for i in range(3):
        torch.testing.assert_close(y[i : i + 1], retina_kernels.soft_skeleton(x[i : i + 1], 5), rtol=0, atol=0)
    view = x.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(retina_kernels.soft_skeleton(view, 5), y, rtol=0, atol=0)
    assert retina_kernels.soft_skeleton(torch.zeros(0, 1, 8, 8), 3).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("shape", [(0, 1, 5, 6), (2, 0, 5, 6), (1, 2, 0, 6), (1, 1, 5, 0), (1, 1, 0, 5, 6), (1, 1, 4, 5, 0)])
@pytest.mark.parametrize("fn", [retina_kernels.soft_skeleton, reference.soft_skeleton], ids=["ours", "reference"])
def test_zero_sized_extents(shape, fn):
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    y = fn(x, 3)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape


@pytest.mark.parametrize(
    "x, num_iter, error, match",
    [
        (torch.zeros(1, 8, 8), 3, ValueError, r"x must be \[B, C, H, W\]"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int64), 3, TypeError, "x must have dtype"),
        (torch.full((1, 1, 4, 4), float("nan")), 3, ValueError, "x contains NaN"),
        (torch.zeros(1, 1, 4, 4), -1, ValueError, "num_iter must be >= 0"),
        (torch.zeros(1, 1, 4, 4), 2.0, TypeError, "num_iter must be an int"),
    ],
)
def test_errors(x, num_iter, error, match):
    with pytest.raises(error, match=match):
        retina_kernels.soft_skeleton(x, num_iter)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 3, 130, 257), (1, 1, 20, 30, 40)])
def test_cuda_matches_cpu(shape):
    x = soft_vessels(shape).float()
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    y, grad = forward_backward(retina_kernels.soft_skeleton, x, grad_out, 10)
    y_cuda, grad_cuda = forward_backward(retina_kernels.soft_skeleton, x.cuda(), grad_out.cuda(), 10)
    torch.testing.assert_close(y_cuda.cpu(), y, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_cuda.cpu(), grad, rtol=0, atol=1e-5)
