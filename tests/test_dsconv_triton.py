"""The Triton dsconv2d kernels against the reference: CUDA tensors on the GPU machine, CPU tensors under
TRITON_INTERPRET=1 elsewhere (tests/conftest.py sets it). Small shapes for the interpreter."""

import contextlib

import pytest
import torch

from retina_kernels.reference import dsconv as reference

from .conftest import deterministic_algorithms
from .test_dsconv import (
    MASKS,
    assert_kernels_reject_scope,
    assert_offset_grad_finite_but_at_the_nan_pixel,
    assert_only_the_nan_pixel_is_nan,
    nan_offset_case,
    random_case,
    run,
)

pytest.importorskip("triton", reason="triton is not installed (pip install '.[test]' installs it on Linux)")
from retina_kernels.triton_kernels import dsconv as triton_kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def triton_run(x, offset, weight, bias, grad_out, morph, scope):
    x, offset, weight, grad_out = (t.to(DEVICE) for t in (x, offset, weight, grad_out))
    bias = bias.to(DEVICE) if bias is not None else None
    y = triton_kernels.dsconv2d_forward(x, offset, weight, bias, morph, scope)
    gx, goff, gw = triton_kernels.dsconv2d_backward(grad_out, x, offset, weight, morph, scope)
    return [t.cpu() for t in (y, gx, goff, gw)]


@pytest.mark.parametrize(
    "b, c, o, h, w, k, scope, spread, morph, dtype",
    [
        (2, 3, 4, 5, 7, 3, 1.0, 1.0, 0, torch.float64),
        (1, 2, 3, 6, 5, 5, 2.0, 1.0, 1, torch.float64),
        (1, 3, 2, 1, 9, 3, 1.0, 1.0, 0, torch.float64),    # one row: no second line to read
        (1, 2, 2, 6, 6, 3, 3.0, 9.0, 1, torch.float64),    # far outside: clamped
        (2, 3, 5, 5, 6, 5, 1.5, 1.0, 0, torch.float32),    # the tensor-core path (ieee float32)
    ],
)
def test_matches_reference(b, c, o, h, w, k, scope, spread, morph, dtype):
    x, offset, weight, bias, grad_out = random_case(b, c, o, h, w, k, spread, seed=h + w + k, dtype=dtype)
    ours = triton_run(x, offset, weight, bias, grad_out, morph, scope)
    ref = run(reference.dsconv2d, x, offset, weight, bias, grad_out, morph=morph, extend_scope=scope)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for name, a, r in zip(("out", "input", "offset", "weight"), ours, ref):
        assert a.dtype == dtype, name
        torch.testing.assert_close(a, r, rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("scope", [float("inf"), float("nan")])
def test_rejects_a_non_finite_extend_scope(scope):
    # (The wrapper does not check it while torch.compile traces it.)
    assert_kernels_reject_scope(triton_kernels.dsconv2d_forward, triton_kernels.dsconv2d_backward, DEVICE, scope)


def test_without_bias_and_empty():
    x, offset, weight, _, grad_out = random_case(1, 2, 3, 4, 5, 3, seed=3)
    y = triton_kernels.dsconv2d_forward(x.to(DEVICE), offset.to(DEVICE), weight.to(DEVICE), None, 0, 1.0).cpu()
    torch.testing.assert_close(y, reference.dsconv2d(x, offset, weight, None, morph=0), rtol=0, atol=1e-10)
    empty = triton_kernels.dsconv2d_forward(x[:0].to(DEVICE), offset[:0].to(DEVICE), weight.to(DEVICE), None, 1, 1.0)
    assert empty.shape == (0, 3, 4, 5)
    for b, c, o, h, w in [(2, 0, 3, 5, 6), (2, 2, 0, 5, 6), (2, 2, 3, 0, 6), (2, 2, 3, 5, 0)]:
        case = random_case(b, c, o, h, w, 3, seed=4)
        ours = triton_run(*case, 1, 1.0)
        ref = run(reference.dsconv2d, *case, morph=1, extend_scope=1.0)
        for name, a, r in zip(("out", "input", "offset", "weight"), ours, ref):
            torch.testing.assert_close(a, r, rtol=0, atol=1e-12, msg=f"{(b, c, o, h, w)} {name}")


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan_offset_poisons_only_its_pixel(morph, dtype):
    x, offset, bad, weight, bias, grad = nan_offset_case(DEVICE, dtype)
    clean = triton_kernels.dsconv2d_forward(x, offset, weight, bias, morph, 2.0)
    y = triton_kernels.dsconv2d_forward(x, bad, weight, bias, morph, 2.0)
    assert_only_the_nan_pixel_is_nan(y, clean, 1e-4 if dtype == torch.float32 else 1e-10)
    _, grad_offset, _ = triton_kernels.dsconv2d_backward(grad, x, bad, weight, morph, 2.0)
    assert_offset_grad_finite_but_at_the_nan_pixel(grad_offset)


def test_backward_alerts_under_deterministic_algorithms():
    # The input gradient is summed by atomic adds in arrival order: like torch's own such ops, the
    # backward raises under torch.use_deterministic_algorithms(True) and warns with warn_only=True.
    case = random_case(1, 2, 3, 5, 6, 3, seed=1)
    with deterministic_algorithms(), pytest.raises(RuntimeError, match="dsconv2d_backward .* deterministic"):
        triton_run(*case, 0, 1.0)
    with deterministic_algorithms(warn_only=True), pytest.warns(UserWarning, match="dsconv2d_backward .* deterministic"):
        triton_run(*case, 0, 1.0)


@pytest.mark.parametrize("morph", [0, 1])
def test_backward_output_mask(morph):
    # Unwanted gradients are None and their kernels are not run; the wanted ones are those of the full
    # backward (the input-gradient kernel without its atomic adds still gives the offset gradient), and
    # without the input gradient nothing is non-deterministic, so nothing alerts.
    x, offset, weight, _, grad = (t.to(DEVICE) for t in random_case(2, 3, 4, 5, 6, 3, spread=1.5, seed=6))
    args = (grad, x, offset, weight, morph, 1.5)
    full = triton_kernels.dsconv2d_backward(*args)
    for mask in MASKS:
        with deterministic_algorithms() if not mask[0] else contextlib.nullcontext():
            masked = triton_kernels.dsconv2d_backward(*args, output_mask=mask)
        for name, wanted, m, f in zip(("input", "offset", "weight"), mask, masked, full):
            if wanted:
                torch.testing.assert_close(m, f, rtol=0, atol=1e-12, msg=f"{mask} {name}")
            else:
                assert m is None, (mask, name)
