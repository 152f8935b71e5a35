"""retina_kernels.dsconv2d and retina.nn.DSConv: goldens of the public module, the op against the
reference (values and all four gradients), gradcheck, opcheck, batch independence, errors."""

import numpy as np
import pytest
import torch

import retina_kernels
from retina.nn import DSConv
from retina_kernels.reference import dsconv as reference

from .conftest import requires_cuda

needs_extension = pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")


def random_case(b, c, o, h, w, k, spread=1.0, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    offset = (torch.rand(b, k, h, w, generator=gen, dtype=dtype) * 2 - 1) * spread
    weight = torch.randn(o, c, k, generator=gen, dtype=dtype)
    bias = torch.randn(o, generator=gen, dtype=dtype)
    grad_out = torch.randn(b, o, h, w, generator=gen, dtype=dtype)
    return x, offset, weight, bias, grad_out


def run(fn, x, offset, weight, bias, grad_out, **kw):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, offset, weight, bias)]
    y = fn(*leaves, **kw)
    y.backward(grad_out)
    return [y.detach()] + [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize("morph", [0, 1])
def test_module_matches_public_golden(golden, morph):
    g = golden(f"dsconv_morph{morph}")
    meta = eval(str(g["meta"]))  # a dict literal written by the golden generator
    layer = DSConv(meta["C"], meta["O"], meta["K"], meta["extend_scope"], morph).double()
    layer.load_state_dict({k.removeprefix("state."): torch.from_numpy(v) for k, v in g.items() if k.startswith("state.")})
    x = torch.from_numpy(g["x"]).requires_grad_()
    y = layer(x)
    y.backward(torch.from_numpy(g["grad_out"]))
    np.testing.assert_allclose(y.detach().numpy(), g["y"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(x.grad.numpy(), g["grad_x"], rtol=0, atol=1e-8)
    params = dict(layer.named_parameters())
    names = [k.removeprefix("grad.") for k in g if k.startswith("grad.")]
    assert len(names) == 8
    for name in names:
        np.testing.assert_allclose(params[name].grad.numpy(), g[f"grad.{name}"], rtol=0, atol=1e-8, err_msg=name)


@pytest.mark.parametrize(
    "b, c, o, h, w, k, scope, spread",
    [
        (2, 3, 4, 7, 9, 3, 1.0, 1.0),
        (1, 2, 5, 13, 6, 5, 2.5, 1.0),
        (2, 4, 4, 19, 23, 9, 1.0, 1.0),
        (1, 3, 2, 17, 31, 11, 3.0, 1.0),
        (1, 2, 3, 1, 11, 3, 1.0, 1.0),     # one row
        (1, 2, 3, 12, 1, 5, 1.0, 1.0),     # one column
        (2, 2, 2, 10, 12, 9, 7.0, 20.0),   # offsets far outside the image: clamped, zero position gradient
        (3, 5, 6, 33, 40, 9, 1.0, 1.0),    # several strips per image on the CPU
    ],
)
@pytest.mark.parametrize("morph", [0, 1])
def test_matches_reference(b, c, o, h, w, k, scope, spread, morph):
    case = random_case(b, c, o, h, w, k, spread, seed=h * w + k)
    ours = run(retina_kernels.dsconv2d, *case, morph=morph, extend_scope=scope)
    ref = run(reference.dsconv2d, *case, morph=morph, extend_scope=scope)
    for name, a, r in zip(("out", "input", "offset", "weight", "bias"), ours, ref):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-10, msg=name)


def test_gradcheck():
    x, offset, weight, bias, _ = random_case(2, 2, 3, 5, 6, 3, seed=1)
    for morph in (0, 1):
        inputs = [t.clone().requires_grad_() for t in (x, offset * 0.8, weight, bias)]
        assert torch.autograd.gradcheck(
            lambda *a: retina_kernels.dsconv2d(*a, morph=morph, extend_scope=1.3), inputs, atol=1e-6
        )


@needs_extension
def test_opcheck():
    x, offset, weight, bias, _ = random_case(2, 3, 4, 6, 7, 5, dtype=torch.float32)
    torch.library.opcheck(torch.ops.retina.dsconv2d.default, (x, offset, weight, bias, 0, 1.0))
    args = [t.requires_grad_() for t in (x.double(), offset.double(), weight.double())]
    torch.library.opcheck(torch.ops.retina.dsconv2d.default, (*args, None, 1, 2.0))


def test_batch_independence_non_contiguous_float32_and_empty():
    x, offset, weight, bias, _ = random_case(3, 4, 8, 21, 26, 9, dtype=torch.float32)
    y = retina_kernels.dsconv2d(x, offset, weight, bias, morph=0)
    for i in range(3):  # the public early version reads image 0 for every sample
        alone = retina_kernels.dsconv2d(x[i : i + 1], offset[i : i + 1], weight, bias, morph=0)
        torch.testing.assert_close(y[i : i + 1], alone, rtol=0, atol=1e-6)
    view = x.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(retina_kernels.dsconv2d(view, offset, weight, bias, morph=0), y, rtol=0, atol=0)
    y_ref = reference.dsconv2d(x.double(), offset.double(), weight.double(), bias.double(), morph=0)
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-4)
    assert retina_kernels.dsconv2d(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), None, morph=1).dtype == torch.bfloat16
    empty = retina_kernels.dsconv2d(x[:0].requires_grad_(), offset[:0], weight, bias, morph=1)
    assert empty.shape == (0, 8, 21, 26)
    empty.sum().backward()


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(weight=torch.zeros(4, 3, 4)), ValueError, "K .* must be odd"),
        (dict(weight=torch.zeros(4, 3, 1)), ValueError, "K .* must be odd and >= 3"),
        (dict(weight=torch.zeros(4, 2, 5)), ValueError, "weight must be \\[O, C, K\\] with C = 3"),
        (dict(offset=torch.zeros(2, 3, 6, 7)), ValueError, "offset must be \\[B, K, H, W\\]"),
        (dict(input=torch.zeros(3, 6, 7)), ValueError, "input must be \\[B, C, H, W\\]"),
        (dict(bias=torch.zeros(5)), ValueError, "bias must be \\[O\\]"),
        (dict(morph=2), ValueError, "morph must be 0"),
        (dict(extend_scope=float("inf")), ValueError, "extend_scope must be a finite"),
        (dict(offset=torch.full((2, 5, 6, 7), float("nan"))), ValueError, "offset contains NaN"),
        (dict(input=torch.zeros(2, 3, 6, 7, dtype=torch.int32)), TypeError, "input must have dtype"),
        (dict(weight=torch.zeros(4, 3, 5, dtype=torch.float64)), TypeError, "must have input's dtype"),
    ],
)
def test_errors(change, error, match):
    args = dict(input=torch.zeros(2, 3, 6, 7), offset=torch.zeros(2, 5, 6, 7), weight=torch.zeros(4, 3, 5),
                bias=torch.zeros(4), morph=0, extend_scope=1.0)
    args.update(change)
    with pytest.raises(error, match=match):
        retina_kernels.dsconv2d(args.pop("input"), args.pop("offset"), args.pop("weight"), args.pop("bias"), **args)


def test_module_errors():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DSConv(3, 8, kernel_size=4)
    with pytest.raises(ValueError, match="morph must be 0"):
        DSConv(3, 8, morph=3)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("morph", [0, 1])
def test_cuda_matches_cpu(morph):
    case = random_case(2, 8, 8, 37, 45, 9, dtype=torch.float32)
    cpu = run(retina_kernels.dsconv2d, *case, morph=morph, extend_scope=2.0)
    cuda = run(retina_kernels.dsconv2d, *[t.cuda() for t in case], morph=morph, extend_scope=2.0)
    for name, a, r in zip(("out", "input", "offset", "weight", "bias"), cuda, cpu):
        torch.testing.assert_close(a.cpu(), r, rtol=1e-4, atol=1e-4, msg=name)
