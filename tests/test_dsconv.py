"""retina_kernels.dsconv2d and retina.nn.DSConv: goldens of the public module, the op against the
reference (values and all four gradients), gradcheck, opcheck, batch independence, errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import retina_kernels
from retina.models import create
from retina.nn import DSConv
from retina_kernels._extension import triton_available
from retina_kernels.precision import allow_tf32, tf32_convolutions_allowed
from retina_kernels.reference import dsconv as reference

from .conftest import deterministic_algorithms, requires_cuda, torch_threads

ROOT = Path(__file__).resolve().parents[1]
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
    # Our checkpoints have the public module's keys; its parameters are those that receive a gradient
    # (the other morph's conv is kept as buffers).
    assert set(layer.state_dict()) == {k.removeprefix("state.") for k in g if k.startswith("state.")}
    assert set(params) == set(names)
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
        (2, 8, 3, 13, 11, 5, 1.5, 1.0),    # from 8 channels the CPU lays samples out channels-last
        (1, 19, 6, 21, 17, 7, 2.0, 2.0),   # channels-last, channels not a multiple of a vector
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


def second_order(fn, x, offset, weight, bias, morph):
    """Gradients of a gradient penalty: the first-order gradients taken with create_graph=True."""
    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias)]
    y = fn(*leaves, morph=morph, extend_scope=1.3)
    first = torch.autograd.grad(y.sin().sum(), leaves, create_graph=True)
    return torch.autograd.grad(sum(g.square().sum() for g in first) + y.square().sum(), leaves)


@pytest.mark.parametrize("morph", [0, 1])
def test_second_order_matches_reference(morph):
    # The compiled backward is an op of its own: without a derivative, autograd would treat it as constant.
    x, offset, weight, bias, _ = random_case(2, 3, 4, 5, 6, 3, seed=2)
    ours = second_order(retina_kernels.dsconv2d, x, offset * 0.8, weight, bias, morph)
    ref = second_order(reference.dsconv2d, x, offset * 0.8, weight, bias, morph)
    for name, a, r in zip(("input", "offset", "weight", "bias"), ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=name)
    inputs = [t.clone().requires_grad_() for t in (x[:1, :2, :4], offset[:1, :, :4] * 0.8, weight[:2, :2], bias[:2])]
    assert torch.autograd.gradgradcheck(
        lambda *a: retina_kernels.dsconv2d(*a, morph=morph, extend_scope=1.3), inputs, atol=1e-6
    )


@needs_extension
def test_opcheck():
    x, offset, weight, bias, _ = random_case(2, 3, 4, 6, 7, 5, dtype=torch.float32)
    torch.library.opcheck(torch.ops.retina.dsconv2d.default, (x, offset, weight, bias, 0, 1.0))
    args = [t.requires_grad_() for t in (x.double(), offset.double(), weight.double())]
    torch.library.opcheck(torch.ops.retina.dsconv2d.default, (*args, None, 1, 2.0))
    # The backward op, differentiable itself (second order through the reference).
    grad = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.retina.dsconv2d_backward.default, (grad, *args, 0, 1.5))
    # Channels-last operands (inductor lays convolution outputs out so on the CPU) and a transposed
    # weight: the fake kernels must promise the strides the real ones return, or compiled code fails.
    channels_last = [t.detach().to(memory_format=torch.channels_last).requires_grad_() for t in (grad, *args[:2])]
    weight_t = args[2].detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    torch.library.opcheck(torch.ops.retina.dsconv2d.default, (*channels_last[1:], weight_t, None, 0, 1.0))
    torch.library.opcheck(torch.ops.retina.dsconv2d_backward.default, (*channels_last, weight_t, 1, 1.5))
    # Only some gradients (autograd's needs_input_grad): the others None, in the fake kernel too.
    for mask in ([True, False, True], [False, True, False], [False, False, True]):
        torch.library.opcheck(torch.ops.retina.dsconv2d_backward.default, (grad, *args, 0, 1.5, mask))


MASKS = [[a, b, c] for a in (False, True) for b in (False, True) for c in (False, True)]


@needs_extension
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])])
@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("channels", [5, 12])
def test_backward_output_mask_gives_the_wanted_gradients_unchanged(device, morph, threads, channels):
    # As aten::convolution_backward: an unwanted gradient is not computed (None), and the wanted ones are
    # exactly those of the full backward (same order of sums), on one thread or split across channels;
    # with samples laid out channels-first (5) and channels-last (12) on the CPU.
    case = random_case(2, channels, 4, 13, 11, 5, spread=2.0, seed=9)
    x, offset, weight, _, grad = [t.to(device) for t in case]
    args = (grad, x, offset, weight, morph, 1.5)
    with torch_threads(threads):
        full = torch.ops.retina.dsconv2d_backward(*args)
        for mask in MASKS:
            masked = torch.ops.retina.dsconv2d_backward(*args, mask)
            for name, wanted, m, f in zip(("input", "offset", "weight"), mask, masked, full):
                if wanted:
                    assert torch.equal(m, f), (mask, name)
                else:
                    assert m is None, (mask, name)


class BackwardCalls(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the output masks that retina::dsconv2d_backward is called with."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.retina.dsconv2d_backward.default:
            self.masks.append(list(args[6]) if len(args) > 6 else [True] * 3)
        return func(*args, **(kwargs or {}))


@needs_extension
@pytest.mark.parametrize("frozen", [("input",), ("weight",), ("input", "weight"), ("input", "offset")])
def test_autograd_computes_only_the_gradients_it_needs(frozen):
    # A model's first layer gets an image that needs no gradient, a fine-tuned model a frozen weight: the
    # backward is asked for the others only, and they equal the reference's.
    case = random_case(2, 3, 4, 9, 10, 5, spread=1.5, seed=11)
    names = ("input", "offset", "weight", "bias")

    def gradients(fn):
        leaves = [t.clone().requires_grad_(name not in frozen) for name, t in zip(names, case[:4])]
        fn(*leaves, morph=1, extend_scope=2.0).backward(case[4])
        return [t.grad for t in leaves]

    with BackwardCalls() as calls:
        ours = gradients(retina_kernels.dsconv2d)
    assert calls.masks == [[name not in frozen for name in names[:3]]]
    for name, a, r in zip(names, ours, gradients(reference.dsconv2d)):
        if name in frozen:
            assert a is None and r is None, name
        else:
            torch.testing.assert_close(a, r, rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("morph", [0, 1])
def test_second_order_with_an_input_that_needs_no_gradient(morph):
    # A gradient penalty on a first layer: the backward op returns no input gradient, and differentiating
    # it again must treat that missing gradient as zero, not fail.
    x, offset, weight, bias, _ = random_case(2, 3, 4, 5, 6, 3, seed=5)

    def penalty_gradients(fn):
        leaves = [t.clone().requires_grad_() for t in (offset * 0.8, weight, bias)]
        y = fn(x, *leaves, morph=morph, extend_scope=1.3)
        first = torch.autograd.grad(y.sin().sum(), leaves, create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in first), leaves)

    for name, a, r in zip(("offset", "weight", "bias"), penalty_gradients(retina_kernels.dsconv2d),
                          penalty_gradients(reference.dsconv2d)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=name)


def test_compiles_to_one_graph(monkeypatch):
    # torch.compile(fullgraph=True) through the Python wrapper, from an empty kernel cache: the dispatcher
    # query behind has_kernel cannot be traced, and once broke the graph on a model's first call. Nor can
    # torch 2.11's dynamo trace torch.amp.is_autocast_available (fullgraph failed on the GPU machine): here
    # it is made untraceable the same way, so the wrapper must not ask it while compiling.
    monkeypatch.setattr(retina_kernels._extension, "_served", set())
    monkeypatch.setattr(torch.amp, "is_autocast_available", torch.compiler.disable(torch.amp.is_autocast_available))
    torch._dynamo.reset()
    case = random_case(2, 3, 4, 9, 11, 5, seed=3, dtype=torch.float32)

    def layer(x, offset, weight, bias):
        return retina_kernels.dsconv2d(x, offset.tanh(), weight, bias, morph=1, extend_scope=1.5)

    compiled = run(torch.compile(layer, backend="aot_eager", fullgraph=True), *case)
    for name, a, e in zip(NAMES, compiled, run(layer, *case)):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.parametrize("device, dtype", [("cpu", torch.bfloat16),
                                           pytest.param("cuda", torch.float16, marks=requires_cuda)])
def test_autocast_runs_the_op_in_the_autocast_dtype(device, dtype):
    # Under autocast the layer's float32 weights meet low-precision activations: the op runs in the autocast
    # dtype (as convolutions do), gradients reach the float32 parameters; without autocast mixed dtypes raise.
    torch.manual_seed(0)
    layer = DSConv(6, 8, 5, 1.5, morph=1).to(device)
    x = torch.randn(2, 6, 13, 17, device=device, requires_grad=True)
    offset = torch.zeros(2, 5, 13, 17, dtype=dtype, device=device)
    weight = torch.randn(8, 6, 5, device=device)
    expected = layer(x).detach()
    with torch.autocast(device, dtype=dtype):
        y = layer(x)
        assert retina_kernels.dsconv2d(x, offset, weight, None, morph=0).dtype == dtype
    assert (y.float() - expected).abs().max() <= 0.03 * expected.abs().max()
    y.float().sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]
    assert len(grads) == 9 and all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)  # x and 8 used
    with pytest.raises(TypeError, match="must have input's dtype float32"):
        retina_kernels.dsconv2d(x, offset, weight, None, morph=0)


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


@pytest.mark.parametrize("impl", ["ours", "reference", pytest.param("ours-cuda", marks=[pytest.mark.cuda, requires_cuda])])
@pytest.mark.parametrize("b, c, o, h, w", [(0, 2, 3, 5, 6), (2, 0, 3, 5, 6), (2, 2, 0, 5, 6), (2, 2, 3, 0, 6),
                                           (2, 2, 3, 5, 0), (0, 0, 0, 0, 0)])
@pytest.mark.parametrize("morph", [0, 1])
def test_zero_sized_extents(impl, b, c, o, h, w, morph):
    # Any extent may be zero (an empty batch, a crop with no rows): a shaped result and gradients, no error.
    fn = reference.dsconv2d if impl == "reference" else retina_kernels.dsconv2d
    device = "cuda" if impl == "ours-cuda" else "cpu"
    x, offset, weight, bias, grad_out = [t.to(device) for t in random_case(b, c, o, h, w, 3)]
    y, grad_x, grad_offset, grad_weight, grad_bias = run(fn, x, offset, weight, bias, grad_out, morph=morph)
    assert y.shape == (b, o, h, w)
    assert grad_x.shape == x.shape and grad_offset.shape == offset.shape and grad_weight.shape == weight.shape
    if c == 0:  # nothing to sample: the bias alone
        torch.testing.assert_close(y, bias.view(1, -1, 1, 1).expand(b, o, h, w))
    if b * h * w == 0:  # no pixels: nothing feeds the weight gradient
        assert not grad_weight.any()


def test_meta_tensors_give_the_output_shape():
    # Shapes can be traced without memory (memory planning, model summaries): no autocast query on "meta".
    x, offset, weight, bias = (t.to("meta") for t in random_case(2, 3, 5, 7, 9, 5)[:4])
    y = retina_kernels.dsconv2d(x, offset, weight, bias, morph=1, extend_scope=2.0)
    assert y.device.type == "meta" and y.shape == (2, 5, 7, 9) and y.dtype == torch.float64


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


@needs_extension
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("scope", [float("inf"), float("nan")])
def test_the_op_itself_rejects_a_non_finite_extend_scope(device, scope):
    # The wrapper's check is skipped while torch.compile traces it (extend_scope may be a symbolic float
    # there), so the compiled kernels check it when they run.
    assert_kernels_reject_scope(torch.ops.retina.dsconv2d, torch.ops.retina.dsconv2d_backward, device, scope)


def assert_kernels_reject_scope(forward, backward, device, scope):
    """forward(input, offset, weight, bias, morph, scope) and backward(grad, input, offset, weight, morph,
    scope), a kernel pair behind retina::dsconv2d, each raise on `scope` naming extend_scope."""
    x, offset, weight, bias, grad = (t.to(device) for t in random_case(2, 3, 4, 5, 6, 3))
    with pytest.raises(ValueError, match="extend_scope must be a finite number"):
        forward(x, offset, weight, bias, 0, scope)
    with pytest.raises(ValueError, match="extend_scope must be a finite number"):
        backward(grad, x, offset, weight, 1, scope)


def nan_offset_case(device, dtype=torch.float64):
    """A random case whose offsets are NaN for one pixel (image 1, row 3, column 4, tap 0) and +inf for
    another (image 0, row 0, column 0, tap 2), with the same case without them."""
    x, offset, weight, bias, grad = (t.to(device=device, dtype=dtype) for t in random_case(2, 3, 4, 7, 9, 5, seed=3))
    bad = offset.clone()
    bad[1, 0, 3, 4] = float("nan")
    bad[0, 2, 0, 0] = float("inf")
    return x, offset, bad, weight, bias, grad


def assert_only_the_nan_pixel_is_nan(y, clean, atol):
    """y from nan_offset_case's offsets, clean from its clean ones: NaN exactly at the NaN pixel, finite at
    the infinite one (an infinite position is clamped to the image like any other), unchanged elsewhere."""
    assert y[1, :, 3, 4].isnan().all()
    assert y[0, :, 0, 0].isfinite().all()
    others = torch.ones_like(y, dtype=torch.bool)
    others[1, :, 3, 4] = others[0, :, 0, 0] = False
    torch.testing.assert_close(y[others], clean[others], rtol=0, atol=atol)


def assert_offset_grad_finite_but_at_the_nan_pixel(grad_offset):
    keep = torch.ones_like(grad_offset, dtype=torch.bool)
    keep[1, :, 3, 4] = False
    assert grad_offset[keep].isfinite().all()


def check_nan_offset_poisons_only_its_pixel(fn, device, morph, dtype=torch.float64):
    x, offset, bad, weight, bias, grad = nan_offset_case(device, dtype)
    clean = fn(x, offset, weight, bias, morph=morph, extend_scope=2.0)
    leaves = [t.clone().requires_grad_() for t in (x, bad, weight, bias)]
    y = fn(*leaves, morph=morph, extend_scope=2.0)
    assert_only_the_nan_pixel_is_nan(y, clean, 1e-5 if dtype == torch.float32 else 1e-12)
    y.backward(grad)  # NaN flows into the gradients it feeds; nothing raises or reads out of bounds
    assert_offset_grad_finite_but_at_the_nan_pixel(leaves[1].grad)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("morph", [0, 1])
def test_nan_offset_poisons_only_its_pixel(impl, morph):
    fn = reference.dsconv2d if impl == "reference" else retina_kernels.dsconv2d
    check_nan_offset_poisons_only_its_pixel(fn, "cpu", morph)
    check_nan_offset_poisons_only_its_pixel(fn, "cpu", morph, torch.float32)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_cuda_nan_offset_poisons_only_its_pixel(morph, dtype):
    if dtype == torch.bfloat16:  # the tensor-core path: check the NaN and the finite pixels only
        x, offset, bad, weight, bias, _ = nan_offset_case("cuda", dtype)
        y = retina_kernels.dsconv2d(x, bad, weight, bias, morph=morph, extend_scope=2.0)
        assert y[1, :, 3, 4].isnan().all() and y.isnan().sum() == y.shape[1]
        return
    check_nan_offset_poisons_only_its_pixel(retina_kernels.dsconv2d, "cuda", morph, dtype)


def test_module_errors():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DSConv(3, 8, kernel_size=4)
    with pytest.raises(ValueError, match="morph must be 0"):
        DSConv(3, 8, morph=3)
    with pytest.raises(ValueError, match="out_channels must be a multiple of 4"):
        DSConv(3, 6)
    for scope in (float("nan"), float("inf")):  # at construction, before any forward
        with pytest.raises(ValueError, match="extend_scope must be a finite number"):
            DSConv(3, 8, extend_scope=scope)
    with pytest.raises(ValueError, match="extend_scope must be a finite number"):
        create("s3octa", width=8, extend_scope=float("nan"))


def test_allow_tf32_sets_both_settings_and_restores_them():
    # dsconv2d follows the convolution setting; the reference, a matrix product, the matmul one.
    before = tf32_convolutions_allowed()
    matmul = torch.backends.cuda.matmul.fp32_precision if hasattr(torch.backends.cuda.matmul, "fp32_precision") \
        else torch.backends.cuda.matmul.allow_tf32
    for enabled in (False, True):
        with allow_tf32(enabled):
            assert tf32_convolutions_allowed() is enabled
            if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
                assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if enabled else "ieee")
        assert tf32_convolutions_allowed() is before
    after = torch.backends.cuda.matmul.fp32_precision if hasattr(torch.backends.cuda.matmul, "fp32_precision") \
        else torch.backends.cuda.matmul.allow_tf32
    assert after == matmul


NAMES = ("out", "input", "offset", "weight", "bias")
CUDA_CASES = [  # b, c, o, h, w, k, scope, spread: each tile shape the CUDA launcher picks, partial tiles
    # (rest tiles: in the gradients only; the forward covers O with whole 64-wide tiles)
    (2, 8, 8, 37, 45, 9, 2.0, 1.0),
    (1, 1, 16, 19, 23, 9, 1.0, 1.0),      # one input channel (DSCNet's first layer)
    (2, 37, 70, 21, 17, 11, 3.0, 1.0),    # partial tiles: 37 of 64 input-channel rows; 70 = 64 + 6 (16-wide rest)
    (1, 216, 72, 13, 11, 11, 3.0, 1.0),   # S3-OCTA's decoder widths: 216 = 3 x 64 + 24 (32-wide rest), 72 = 64 + 8
    (1, 144, 96, 9, 10, 11, 3.0, 1.0),    # 144 = 2 x 64 + 16 (16-wide rest tile), 96 = 64 + 32 (32-wide rest tile)
    (1, 24, 30, 1, 33, 5, 1.0, 1.0),      # one row: the two interpolated lines coincide
    (3, 4, 5, 12, 14, 7, 7.0, 20.0),      # offsets far outside the image
]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("case", CUDA_CASES)
@pytest.mark.parametrize("morph", [0, 1])
def test_cuda_matches_cpu(case, morph):
    b, c, o, h, w, k, scope, spread = case
    tensors = random_case(b, c, o, h, w, k, spread, seed=h + w, dtype=torch.float32)
    tensors64 = [t.double().cuda() for t in tensors]
    ref64 = run(reference.dsconv2d, *tensors64, morph=morph, extend_scope=scope)
    cuda64 = run(retina_kernels.dsconv2d, *tensors64, morph=morph, extend_scope=scope)
    for name, a, r in zip(NAMES, cuda64, ref64):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-9, msg=name)
    # float32 with TF32 disabled: CUDA must be as accurate as the CPU kernel. A fixed tolerance does not
    # work here: a sum of C·K = 407 products of unit-variance terms carries ~1e-4 of float32 rounding
    # whatever its value.
    cpu = run(retina_kernels.dsconv2d, *tensors, morph=morph, extend_scope=scope)
    with allow_tf32(False):
        cuda = run(retina_kernels.dsconv2d, *[t.cuda() for t in tensors], morph=morph, extend_scope=scope)
    for name, g, c32, r in zip(NAMES, cuda, cpu, ref64):
        r = r.cpu()
        cuda_error = (g.cpu().double() - r).abs().max().item()
        cpu_error = (c32.double() - r).abs().max().item()
        scale = r.abs().max().item()
        assert cuda_error <= max(4 * cpu_error, 1e-6 * scale), (
            f"{name}: CUDA float32 error {cuda_error:.3g}, CPU float32 error {cpu_error:.3g}, values up to {scale:.3g}")
    # float32 where TF32 is allowed (PyTorch's default for convolutions): on sm_80 and newer the products
    # round their operands to TF32 (11 significant bits: up to 2^-10 of each product), so the results
    # differ from the exact ones, within 2e-3 of the largest value; before sm_80 they are the exact ones.
    with allow_tf32(True):
        tf32 = run(retina_kernels.dsconv2d, *[t.cuda() for t in tensors], morph=morph, extend_scope=scope)
    tf32_hardware = torch.cuda.get_device_capability() >= (8, 0)
    for name, t, r in zip(NAMES, tf32, ref64):
        r = r.cpu()
        scale = r.abs().max().item()
        assert (t.cpu().double() - r).abs().max().item() <= 2e-3 * scale, name
    assert torch.equal(tf32[0], cuda[0]) != tf32_hardware, "the forward did not follow the TF32 setting"


@pytest.mark.cuda
@requires_cuda
def test_cuda_gradcheck_opcheck_empty_and_non_contiguous():
    x, offset, weight, bias, _ = [t.cuda() for t in random_case(2, 3, 4, 6, 7, 5, seed=2)]
    for morph in (0, 1):
        inputs = [t.clone().requires_grad_() for t in (x, offset * 0.8, weight, bias)]
        # The input gradient is accumulated with atomics: repeated backwards agree to rounding, not bitwise.
        assert torch.autograd.gradcheck(
            lambda *a: retina_kernels.dsconv2d(*a, morph=morph, extend_scope=1.3), inputs, atol=1e-6, nondet_tol=1e-12
        )
    if retina_kernels.extension_loaded():  # float64, for the same reason
        torch.library.opcheck(torch.ops.retina.dsconv2d.default, (x, offset, weight, bias, 0, 1.0))
    y = retina_kernels.dsconv2d(x, offset, weight, bias, morph=1)
    view = x.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(retina_kernels.dsconv2d(view, offset, weight, bias, morph=1), y, rtol=0, atol=0)
    empty = retina_kernels.dsconv2d(x[:0].requires_grad_(), offset[:0], weight, bias, morph=0)
    assert empty.shape == (0, 4, 6, 7)
    empty.sum().backward()
    ours = second_order(retina_kernels.dsconv2d, x, offset * 0.8, weight, bias, 1)
    ref = second_order(reference.dsconv2d, x.cpu(), offset.cpu() * 0.8, weight.cpu(), bias.cpu(), 1)
    for name, a, r in zip(("input", "offset", "weight", "bias"), ours, ref):
        torch.testing.assert_close(a.cpu(), r, rtol=1e-9, atol=1e-9, msg=f"second order, {name}")


def half_precision_case(dtype):
    """A case whose values float16 and bfloat16 both represent exactly: the float32 CPU results and the
    CUDA `dtype` ones (out and the four gradients)."""
    tensors = random_case(2, 32, 24, 29, 31, 9, seed=5, dtype=torch.float32)
    tensors = [t.to(dtype).float() for t in tensors]  # representable in both
    ref = run(retina_kernels.dsconv2d, *tensors, morph=0, extend_scope=1.0)
    half = run(retina_kernels.dsconv2d, *[t.cuda().to(dtype) for t in tensors], morph=0, extend_scope=1.0)
    return half, ref


def assert_half_precision_accumulates_in_float32(half, ref, dtype):
    tol = 2e-2 if dtype == torch.float16 else 8e-2
    for name, a, r in zip(NAMES, half, ref):
        assert a.dtype == dtype, name
        scale = r.abs().max().item()
        assert (a.float().cpu() - r).abs().max().item() <= tol * scale, name


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_accumulates_in_float32(dtype):
    assert_half_precision_accumulates_in_float32(*half_precision_case(dtype), dtype)


@pytest.mark.cuda
@requires_cuda
def test_cuda_bfloat16_on_the_cuda_cores_as_on_turing(tmp_path):
    # GPUs before sm_80 (Turing: T4, RTX 20xx) have no bfloat16 tensor-core fragments, so there bfloat16
    # runs on the CUDA cores. RETINA_DSCONV_BF16_CUDA_CORES=1 forces that path here; the kernel reads it once
    # per process, hence the subprocess.
    script = (
        "import sys, torch\n"
        "from tests.test_dsconv import half_precision_case\n"
        "torch.save(half_precision_case(torch.bfloat16), sys.argv[1])\n"
    )
    path = tmp_path / "cuda_cores.pt"
    env = {**os.environ, "RETINA_DSCONV_BF16_CUDA_CORES": "1"}
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, cwd=ROOT, timeout=300)
    cuda_cores, ref = torch.load(path)
    assert_half_precision_accumulates_in_float32(cuda_cores, ref, torch.bfloat16)
    # The switch took: from sm_80 on, float32 sums in another order than the tensor cores' (which also do
    # not round to nearest) give a different output somewhere among its 43 thousand values; before sm_80
    # both runs took the CUDA cores, whose forward is deterministic.
    default, _ = half_precision_case(torch.bfloat16)
    tensor_cores_here = torch.cuda.get_device_capability() >= (8, 0)
    assert torch.equal(cuda_cores[0].cpu(), default[0].cpu()) != tensor_cores_here


def test_cpu_backward_is_deterministic_and_allowed_under_deterministic_algorithms():
    case = random_case(2, 5, 6, 13, 11, 5, spread=2.0, seed=4, dtype=torch.float32)
    with deterministic_algorithms():
        first = run(retina_kernels.dsconv2d, *case, morph=0, extend_scope=1.5)
        second = run(retina_kernels.dsconv2d, *case, morph=0, extend_scope=1.5)
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


@pytest.mark.cuda
@requires_cuda
def test_cuda_backward_alerts_under_deterministic_algorithms():
    # Atomic adds sum the input gradient: as torch's own such CUDA ops, raise (or warn, with warn_only).
    x, offset, weight, bias, grad = [t.cuda() for t in random_case(1, 3, 4, 6, 7, 5, seed=2)]
    x.requires_grad_()
    with deterministic_algorithms(), pytest.raises(RuntimeError, match="dsconv2d_backward .* deterministic"):
        retina_kernels.dsconv2d(x, offset, weight, bias, morph=0).backward(grad)
    with deterministic_algorithms(warn_only=True), pytest.warns(UserWarning, match="dsconv2d_backward"):
        retina_kernels.dsconv2d(x, offset, weight, bias, morph=0).backward(grad)
    # Without the input gradient (an image into the first layer) there are no atomic adds: no alert.
    x.requires_grad_(False)
    weight.requires_grad_()
    with deterministic_algorithms():
        retina_kernels.dsconv2d(x, offset, weight, bias, morph=0).backward(grad)
    assert weight.grad is not None


@pytest.mark.cuda
@requires_cuda
def test_cuda_kernel_matches_triton_kernel():
    if retina_kernels.backends()["cuda dsconv2d"] != "CUDA" or not triton_available():
        pytest.skip("needs both the compiled CUDA kernel and triton")
    from retina_kernels.triton_kernels import dsconv as triton_kernels

    x, offset, weight, bias, grad = [t.cuda() for t in random_case(2, 20, 40, 33, 29, 11, seed=7)]
    ours = torch.ops.retina.dsconv2d(x, offset, weight, bias, 1, 3.0)
    theirs = triton_kernels.dsconv2d_forward(x, offset, weight, bias, 1, 3.0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)
    for name, a, r in zip(("input", "offset", "weight"),
                          torch.ops.retina.dsconv2d_backward(grad, x, offset, weight, 1, 3.0),
                          triton_kernels.dsconv2d_backward(grad, x, offset, weight, 1, 3.0)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-9, msg=name)


@pytest.mark.parametrize("threads, c", [(6, 5), (3, 7), (3, 37)])
@pytest.mark.parametrize("morph", [0, 1])
def test_cpu_backward_splits_channels_across_threads(threads, c, morph):
    # One strip per parity and more threads than strips: the CPU backward splits the channels into groups
    # (here 5 groups of 1, or 3, 3, 1, or channels-last 13, 13, 11) and sums their position gradients.
    case = random_case(1, c, 4, 23, 20, 9, spread=2.0, seed=c)
    with torch_threads(threads):
        ours = run(retina_kernels.dsconv2d, *case, morph=morph, extend_scope=1.5)
    ref = run(reference.dsconv2d, *case, morph=morph, extend_scope=1.5)
    for name, a, r in zip(("out", "input", "offset", "weight", "bias"), ours, ref):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-10, msg=name)


@needs_extension
def test_op_level_errors_name_the_argument():
    # The compiled op checks its arguments too (torch.ops.retina.* can be called without the wrapper).
    x, offset, weight = torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3, 3), torch.zeros(4, 1, 3)
    with pytest.raises(ValueError, match="grad must be \\[B, O, H, W\\]"):
        torch.ops.retina.dsconv2d_backward(torch.zeros(1, 2, 3, 3), x, offset, weight, 0, 1.0)
    with pytest.raises(ValueError, match="bias must be \\[O\\] = \\[4\\]"):
        torch.ops.retina.dsconv2d(x, offset, weight, torch.zeros(3), 0, 1.0)
    with pytest.raises(ValueError, match="K \\(weight.shape\\[2\\]\\) must be odd"):
        torch.ops.retina.dsconv2d(x, torch.zeros(1, 2, 3, 3), torch.zeros(4, 1, 2), None, 0, 1.0)
