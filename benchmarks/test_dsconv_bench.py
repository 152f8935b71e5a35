"""dsconv2d, one layer C = O = 64, K = 9, morph 0: forward, and forward + backward (the backward time is
their difference), ours vs the plain-PyTorch reference (which materialises the samples) and, on CUDA,
beside the Triton kernels when the compiled CUDA kernel is "ours", and beside the registered op called
without the Python wrapper ("ours-op", to show what the wrapper's checks cost). Issue #3
targets on the H100 at 304²: forward <= 0.5 ms, backward <= 2 ms, peak fwd+bwd <= 150 MiB; CPU at
1×64×128²: forward + backward >= 2× faster than the reference. Also every layer shape of an S3-OCTA
forward (CPU, 1×128²) and, on CUDA, of S3-OCTA and DSCNet at 1×304² and 4×304² in three precisions."""

import collections

import pytest
import torch
from conftest import DEVICES

import retina_kernels
from retina.models import S3OCTA, DSCNet
from retina.nn import DSConv
from retina_kernels._extension import triton_available
from retina_kernels.precision import allow_tf32
from retina_kernels.reference import dsconv as reference

CASES = {  # name: (device, size, dtype)
    "1×64×128² fp32 cpu": ("cpu", 128, torch.float32),
    "1×64×304² fp32 cuda": ("cuda", 304, torch.float32),
    "1×64×400² fp32 cuda": ("cuda", 400, torch.float32),
    "1×64×304² bf16 cuda": ("cuda", 304, torch.bfloat16),
}


def layer_inputs(device, size, dtype, channels=64, taps=9, out_channels=None, width=None, batch=1):
    out_channels, width = out_channels or channels, width or size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, width, generator=gen)
    offset = torch.rand(batch, taps, size, width, generator=gen) * 2 - 1
    weight = torch.randn(out_channels, channels, taps, generator=gen) * (channels * taps) ** -0.5
    bias = torch.randn(out_channels, generator=gen)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (x, offset, weight, bias)]


def dsconv_layers(model: torch.nn.Module, input_shape: tuple[int, ...]) -> collections.Counter:
    """How often the model's forward calls dsconv2d with each (C, O, K, H, W, morph, extend_scope),
    traced on the meta device (no memory, no arithmetic)."""
    calls: collections.Counter = collections.Counter()

    def record(layer, inputs):
        _, c, h, w = inputs[0].shape
        calls[(c, layer.dsc_conv_x.out_channels, layer.kernel_size, h, w, layer.morph, layer.extend_scope)] += 1

    model = model.to("meta")
    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, DSConv)]
    with torch.no_grad():
        model(torch.empty(input_shape, device="meta"))
    for hook in hooks:
        hook.remove()
    return calls


# The layers of one S3-OCTA forward (the published model: depth 3, width 72, K = 11, scope 3) on the CPU at
# 1×128²: issue #32's CPU target (>= 2x the reference at each), where the model's share of dsconv2d time
# goes, which the C = O = 64 layer above does not show.
# The last field: whether the layer's input needs a gradient. The first layer's input is the image, which
# needs none in training: it is measured both ways ("image": as the model runs it, without the input
# gradient, which the op then does not compute; the reference's autograd skips it as well).
S3OCTA_LAYERS = {
    f"{c}→{o} K={k} {h}² morph {m}{image} cpu": ("cpu", c, o, k, h, w, m, s, not image)
    for (c, o, k, h, w, m, s) in sorted(dsconv_layers(S3OCTA(in_channels=3), (1, 3, 128, 128)))
    for image in (("", " image") if c == 3 else ("",))
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", ["ours", "ours-op", "reference", "triton"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_dsconv_layer(measure, case, impl, pass_):
    device, size, dtype = CASES[case]
    if device not in DEVICES:
        pytest.skip(f"no {device} device")
    x, offset, weight, bias = layer_inputs(device, size, dtype)
    grad = torch.randn(x.shape, device=device, dtype=dtype)
    if impl == "triton":
        # The Triton kernels beside the compiled ones, where "ours" is the compiled CUDA kernel.
        if device != "cuda" or retina_kernels.backends()["cuda dsconv2d"] != "CUDA" or not triton_available():
            pytest.skip("the Triton kernels are compared on CUDA, beside the compiled kernel")
        from retina_kernels.triton_kernels import dsconv as triton_kernels

        def triton_step():
            with torch.no_grad():
                out = triton_kernels.dsconv2d_forward(x, offset, weight, bias, 0, 1.0)
                if pass_ == "fwd+bwd":
                    triton_kernels.dsconv2d_backward(grad, x, offset, weight, 0, 1.0)
            return out

        measure(triton_step, device, group=f"dsconv {pass_} {case}", impl=impl, rounds=5)
        return
    if impl == "ours-op" and not retina_kernels.extension_loaded():
        pytest.skip("ours-op is the compiled op without the Python wrapper")
    if impl == "reference":
        fn = reference.dsconv2d
    elif impl == "ours-op":
        # The registered op called directly, without the wrapper's argument checks: what the wrapper
        # costs is the difference from "ours".
        def fn(x, offset, weight, bias, *, morph):
            return torch.ops.retina.dsconv2d(x, offset, weight, bias, morph, 1.0)
    else:
        fn = retina_kernels.dsconv2d

    def step():
        if pass_ == "fwd":
            with torch.no_grad():
                return fn(x, offset, weight, bias, morph=0)
        out = fn(x, offset, weight, bias, morph=0)
        out.backward(grad)
        return out

    # Sub-millisecond CUDA calls need many rounds for a stable median. On a shared 2-core CPU one round in
    # three can be 30% slow (the other core busy), so 3 rounds let one slow pair of rounds set the median;
    # 11 rounds of at most 0.25 s keep the whole CPU group under 10 s.
    measure(step, device, group=f"dsconv {pass_} {case}", impl=impl, rounds=50 if device == "cuda" else 11)


@pytest.mark.parametrize("layer", S3OCTA_LAYERS)
@pytest.mark.parametrize("impl", ["ours", "reference", "products"])
def test_dsconv_s3octa_layer(measure, layer, impl):
    device, c, o, k, h, w, morph, scope, input_grad = S3OCTA_LAYERS[layer]
    x, offset, weight, bias = layer_inputs(device, h, torch.float32, channels=c, taps=k, out_channels=o, width=w)
    x.requires_grad_(input_grad)
    grad = torch.randn(1, o, h, w, device=device)
    if impl == "products":
        # The floor that both implementations share: the layer's three matrix products (the forward
        # contraction, the samples' gradient, the weight's gradient; the offset needs the samples' gradient
        # even when the input needs none) at its sizes, as torch.mm on ready matrices, with no sampling and
        # no scatter. Where the reference takes less than twice this, 2x the reference is out of reach.
        weights = weight.detach().reshape(o, c * k)
        samples = torch.randn(c * k, h * w, device=device)
        grad_out = grad.reshape(o, h * w)

        def step():
            return weights @ samples, weights.t() @ grad_out, grad_out @ samples.t()
    else:
        fn = reference.dsconv2d if impl == "reference" else retina_kernels.dsconv2d

        def step():
            out = fn(x, offset, weight, bias, morph=morph, extend_scope=scope)
            out.backward(grad)
            return out

    # Rounds by the layer's work (C·O·H·W multiply-adds per tap): the layers that take milliseconds (3→72,
    # 72→144, 144→288) need more rounds on a shared 2-core machine, where one round in three can be slow.
    rounds = 3 if c * o * h * w > 10**8 else 9
    measure(step, device, group=f"dsconv fwd+bwd s3octa layer {layer} fp32", impl=impl, rounds=rounds)


# On CUDA (issue #32): every distinct DSConv layer of S3-OCTA (depth 3, width 72, K 11, scope 3) and of
# DSCNet (K 9) at 1×304² and 4×304², forward and forward + backward, in float32 with TF32 allowed (PyTorch's
# default for convolutions; the reference's matrix products are allowed it too, so both run under the same
# precision), float32 without TF32, and bfloat16 autocast; ours beside the reference op.
MODEL_LAYERS = {
    f"{name} {batch}×{c}→{o} K={k} {h}² morph {m}": (batch, c, o, k, h, w, m, s)
    for name, model in (("s3octa", S3OCTA(in_channels=3)), ("dscnet", DSCNet(in_channels=3, num_classes=1)))
    for (c, o, k, h, w, m, s) in sorted(dsconv_layers(model, (1, 3, 304, 304)))
    for batch in (1, 4)
}
PRECISIONS = ("fp32 tf32", "fp32 ieee", "bf16 autocast")


def precision_context(precision: str):
    if precision == "bf16 autocast":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return allow_tf32(precision == "fp32 tf32")


@pytest.mark.parametrize("layer", MODEL_LAYERS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_dsconv_model_layer_cuda(measure, layer, precision, pass_, impl):
    if "cuda" not in DEVICES:
        pytest.skip("no cuda device")
    batch, c, o, k, h, w, morph, scope = MODEL_LAYERS[layer]
    x, offset, weight, bias = layer_inputs("cuda", h, torch.float32, channels=c, taps=k, out_channels=o, width=w,
                                           batch=batch)
    grad = torch.randn(batch, o, h, w, device="cuda")
    fn = reference.dsconv2d if impl == "reference" else retina_kernels.dsconv2d

    def step():
        with precision_context(precision):
            if pass_ == "fwd":
                with torch.no_grad():
                    return fn(x, offset, weight, bias, morph=morph, extend_scope=scope)
            out = fn(x, offset, weight, bias, morph=morph, extend_scope=scope)
        out.backward(grad.to(out.dtype))
        return out

    measure(step, "cuda", group=f"dsconv {pass_} {layer} {precision} cuda", impl=impl, rounds=10)


# A U-Net's deepest levels on the CPU: few pixels, many channels (as at 8² and 4² when DSCNet or S3-OCTA
# train on small crops), where per-call costs, not arithmetic, decide.
DEEP_CPU_LAYERS = {"256→128 K=9 8²": (256, 128, 8), "128→128 K=9 4²": (128, 128, 4)}


@pytest.mark.parametrize("layer", DEEP_CPU_LAYERS)
@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_dsconv_deep_layer_cpu(measure, layer, impl):
    c, o, size = DEEP_CPU_LAYERS[layer]
    x, offset, weight, bias = layer_inputs("cpu", size, torch.float32, channels=c, out_channels=o)
    grad = torch.randn(1, o, size, size)
    fn = reference.dsconv2d if impl == "reference" else retina_kernels.dsconv2d

    def step():
        out = fn(x, offset, weight, bias, morph=0)
        out.backward(grad)
        return out

    measure(step, "cpu", group=f"dsconv fwd+bwd deep layer {layer} fp32 cpu", impl=impl, rounds=50)
