"""retina.models: every model and global aggregation runs forward and backward on odd sizes, returns
logits of the input's size, is batch-independent, and gives the same gradients with checkpointing while
storing a fraction of the activations."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retina.models import S3OCTA, DSCNet, IterNet, UNet, create
from retina.models.aggregation import ASPP
from retina.models.blocks import ConcatConvNormAct, ConvNormAct, SnakeBlock, replicate_pad
from retina.models.concat_conv import conv2d_of_concatenation

from .conftest import requires_cuda
from .model_tester import ModelTester

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "unet": dict(in_channels=1, width=8, depth=3),
    "dscnet": dict(in_channels=1, width=8),
    "s3octa-mit": dict(in_channels=3, width=16, global_aggregation="mit"),
    "s3octa-swin": dict(in_channels=3, width=16, global_aggregation="swin", widths="constant"),
    "s3octa-aspp": dict(in_channels=3, width=16, global_aggregation="aspp", widths="constant"),
    "s3octa-none-depth4": dict(in_channels=3, width=16, depth=4, global_aggregation=None),
    "s3octa-constant-mit": dict(in_channels=3, width=16, global_aggregation="mit", widths="constant"),
}


def build(key, **extra):
    torch.manual_seed(0)
    return create(key.split("-")[0], **{**SMALL[key], **extra})


class TestUNet(ModelTester):
    name, kwargs = "unet", SMALL["unet"]


class TestDSCNet(ModelTester):
    name, kwargs = "dscnet", SMALL["dscnet"]


class TestS3OCTAMiT(ModelTester):
    name, kwargs = "s3octa", SMALL["s3octa-mit"]


class TestS3OCTASwin(ModelTester):
    name, kwargs = "s3octa", SMALL["s3octa-swin"]


class TestS3OCTAASPP(ModelTester):
    name, kwargs = "s3octa", SMALL["s3octa-aspp"]


class TestS3OCTANoAggregationDepth4(ModelTester):
    name, kwargs = "s3octa", SMALL["s3octa-none-depth4"]


class TestS3OCTAConstantWidthMiT(ModelTester):
    name, kwargs = "s3octa", SMALL["s3octa-constant-mit"]


class TestUNetBatchNorm(ModelTester):
    name, kwargs = "unet", dict(in_channels=1, width=8, depth=2, norm="batch")


class TestTwoHeadUNet(ModelTester):
    name, kwargs = "twoheadunet", dict(in_channels=1, width=4, depth=2)
    two_classes = {"outputs": {"vessel": 2, "faz": 1}}

    def test_named_outputs(self):
        output = self.build().eval()(torch.rand(1, 1, 20, 24))
        assert list(output) == ["vessel", "faz"] and all(v.shape == (1, 1, 20, 24) for v in output.values())


class TestVesselFAZNet(ModelTester):
    name, kwargs = "vesselfaznet", dict(in_channels=3, width=8, depth=3)
    two_classes = {"checkpointing": True}  # (no num_classes: one logit map per task)

    def test_named_outputs_exchange_context(self):
        model = self.build().eval()
        x = torch.rand(1, 3, 24, 28)
        output = model(x)
        assert list(output) == ["vessel", "faz"] and all(v.shape == (1, 1, 24, 28) for v in output.values())
        with torch.no_grad():  # the FAZ output depends on the vessel decoder (the global exchange)
            for p in model.vessel_decoder[-1].parameters():
                p.add_(0.5)
            assert not torch.allclose(model(x)["faz"], output["faz"])


class TestIterNet(ModelTester):
    name, kwargs = "iternet", dict(in_channels=3, width=4, iterations=2)

    def test_deep_supervision_in_training_and_the_last_output_in_eval(self):
        model = self.build()
        x = torch.rand(1, 3, 20, 24)
        outputs = model.train()(x)
        assert isinstance(outputs, list) and len(outputs) == 3  # one per iteration input, and the final one
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), model.train(False)(x))
            assert model(x).shape == (1, 1, 20, 24)

    def test_the_paper_model_has_its_parameter_count(self):
        assert sum(p.numel() for p in IterNet().parameters()) == 8_244_356  # the paper's 8.24 M, and the file's


@pytest.mark.parametrize("key", ["dscnet", "s3octa-mit"])
def test_batch_independence(key):
    model = build(key).double().eval()  # (float64: see ModelTester.test_batches_of_one_and_three_agree_in_eval)
    x = torch.randn(3, SMALL[key]["in_channels"], 24, 40, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(model(x[1:2]), y[1:2], rtol=1e-9, atol=1e-10)


def saved_for_backward(model, x):
    """The loss of model(x), and the bytes autograd stored for its backward outside checkpointed blocks."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).square().mean()
    return loss, total


@pytest.mark.parametrize("key", ["unet", "dscnet", "s3octa-mit"])
def test_checkpointing_stores_less_and_gives_the_same_gradients(key):
    # An image batch, as in training, does not require grad: the full-resolution first block must be
    # checkpointed on its parameters' account alone. (It once was not, and DSCNet kept 3x what it should.)
    image = torch.randn(2, SMALL[key]["in_channels"], 48, 64)
    saved, grads = {}, {}
    for run, checkpointing, x in (("plain", False, image), ("checkpointed", True, image),
                                  ("checkpointed, input requires grad", True, image.clone().requires_grad_())):
        model = build(key, checkpointing=checkpointing)
        loss, saved[run] = saved_for_backward(model, x)
        loss.backward()
        grads[run] = {name: p.grad for name, p in model.named_parameters()}
    assert saved["checkpointed"] <= saved["checkpointed, input requires grad"], saved
    assert saved["checkpointed"] < 0.6 * saved["plain"], saved
    for name, grad in grads["plain"].items():
        torch.testing.assert_close(grads["checkpointed"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def output_and_grads(run, model, x):
    """run(x) (`run`: the model or a compiled version of it) and, after backward of a loss on it, the
    gradient of each of the model's parameters by name."""
    model.zero_grad(set_to_none=True)
    y = run(x)
    y.square().mean().backward()
    return y, {name: p.grad for name, p in model.named_parameters()}


def test_s3octa_compiles_to_one_graph_with_checkpointing():
    # DSConv, attention, GroupNorm and checkpointed blocks in one torch.compile(fullgraph=True) graph.
    torch._dynamo.reset()
    model = build("s3octa-mit", checkpointing=True).double()  # float64: the graph orders some sums differently
    x = torch.randn(2, 3, 24, 40, dtype=torch.float64)
    y, grads = output_and_grads(torch.compile(model, backend="aot_eager", fullgraph=True), model, x)
    expected, expected_grads = output_and_grads(model, model, x)
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-10)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("kernel_size, shapes", [(3, [(2, 3, 9, 7), (2, 5, 9, 7), (2, 4, 9, 7)]),
                                                 (1, [(2, 3, 6, 5), (2, 2, 1, 1), (2, 4, 6, 5)]),
                                                 (3, [(0, 4, 5, 5), (0, 4, 5, 5)])])
def test_concat_conv_norm_act_is_conv_norm_act_of_the_concatenation(kernel_size, shapes):
    # float64, values and every gradient; a one-pixel part (image pooling) stands for a constant map.
    torch.manual_seed(0)
    channels = sum(shape[1] for shape in shapes)
    fused = ConcatConvNormAct(channels, 8, kernel_size).double()
    plain = ConvNormAct(channels, 8, kernel_size).double()
    plain.load_state_dict(fused.state_dict())  # same parameters, same keys
    parts = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
    size = shapes[0][2:]
    y = fused(parts)
    expected = plain(torch.cat([part.expand(*part.shape[:2], *size) for part in parts], 1))
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, [*parts, *fused.parameters()], grad)
    want = torch.autograd.grad(expected, [*parts, *plain.parameters()], grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_concat_conv_norm_act_keeps_16_bit_dtypes(dtype):
    # A half model: the same single convolution as on the concatenation, to the bit, in the parts' dtype.
    torch.manual_seed(0)
    fused = ConcatConvNormAct(12, 8).to(dtype)
    plain = ConvNormAct(12, 8).to(dtype)
    plain.load_state_dict(fused.state_dict())
    parts = [torch.randn(2, 4, 9, 7, dtype=dtype).relu().requires_grad_() for _ in range(3)]
    y = fused(parts)
    assert y.dtype == dtype
    torch.testing.assert_close(y, plain(torch.cat(parts, 1)), rtol=0, atol=0)


def test_concat_conv_norm_act_under_autocast_matches_the_concatenation():
    # Under autocast the convolution runs in bfloat16 on float32 parts and parameters; backward (which runs
    # without autocast) must redo it in that dtype and hand each gradient back in its tensor's dtype.
    torch.manual_seed(0)
    fused, plain = ConcatConvNormAct(12, 8), ConvNormAct(12, 8)
    plain.load_state_dict(fused.state_dict())
    parts = [torch.randn(2, 4, 9, 7).relu().requires_grad_() for _ in range(3)]
    results = []
    for module, inputs in ((fused, parts), (plain, torch.cat(parts, 1))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(inputs)
        results.append((y, torch.autograd.grad(y.float().square().sum(), [*parts, *module.parameters()])))
    (y, grads), (expected, expected_grads) = results
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_conv2d_of_concatenation_is_one_convolution_and_twice_differentiable():
    # One convolution forward and one backward, as on the concatenation: a sum of per-part convolutions
    # (the first version) stored as little but made cuDNN pick FFT weight gradients (S3-OCTA step 1.5x
    # slower on an H200). Second order (gradient penalties) in float64, a one-pixel part included.
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountConvolutions(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "convolution" in func.__name__:
                self.calls.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    parts = [torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True),
             torch.randn(2, 2, 1, 1, dtype=torch.float64, requires_grad=True),
             torch.randn(2, 1, 5, 4, dtype=torch.float64, requires_grad=True)]
    weight = torch.randn(3, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with CountConvolutions() as counted:
        conv2d_of_concatenation(parts, weight, bias).sum().backward()
    assert counted.calls == ["convolution", "convolution_backward"], counted.calls
    three_by_three = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    inputs = (parts[0], parts[2], three_by_three, bias)
    torch.autograd.gradgradcheck(lambda a, b, w, c: conv2d_of_concatenation([a, b], w, c, 1, 1), inputs)
    torch.autograd.gradgradcheck(lambda a, b, c, w: conv2d_of_concatenation([a, b, c], w, None), (*parts, weight))


def test_concat_conv_norm_act_rejects_parts_that_do_not_fit():
    fused = ConcatConvNormAct(6, 4)
    with pytest.raises(ValueError, match="parts must have 6 channels in all"):
        fused([torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5)])
    # A one-pixel part stands for a constant map only under a 1x1 kernel (a 3x3 one sees its zero padding).
    with pytest.raises(ValueError, match="parts must all have one size"):
        fused([torch.randn(1, 3, 5, 5), torch.randn(1, 3, 1, 1)])
    with pytest.raises(ValueError, match="parts must all have one size"):
        fused([torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 4)])


@pytest.mark.parametrize("block, in_channels, fusing", [(lambda: SnakeBlock(4, 8, 5, 1.0), 4, "fuse"),
                                                       (lambda: ASPP(8), 8, "project")], ids=["snake", "aspp"])
def test_branches_are_fused_without_storing_their_concatenation(block, in_channels, fusing):
    # The branch outputs are kept for backward by their own ReLUs; a concatenation kept by the fusing
    # convolution would be a second copy of them all (a fifth of S3-OCTA's stored activations).
    torch.manual_seed(0)
    module = block()
    fused_channels = getattr(module, fusing)[0].in_channels
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        module(torch.randn(2, in_channels, 12, 10)).sum()
    assert shapes and not [shape for shape in shapes if shape[:2] == (2, fused_channels)], shapes  # ([B, ΣC, ...])


@pytest.mark.parametrize("shape, bottom, right", [((2, 3, 5, 7), 2, 3), ((1, 4, 6, 6), 0, 0), ((2, 1, 5, 7), 0, 4),
                                                  ((1, 2, 1, 1), 3, 0), ((0, 2, 3, 3), 1, 1)])
def test_replicate_pad_is_f_pad_replicate(shape, bottom, right):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    expected = torch.nn.functional.pad(x, (0, right, 0, bottom), mode="replicate")
    y = replicate_pad(x, bottom, right)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    grad = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
def test_compiles_with_inductor_as_the_input_size_changes(device):
    # Training on crops, then validating on whole images: torch.compile recompiles with dynamic sizes, and
    # under those inductor once failed: on the pad-to-stride arithmetic (a Python % of a symbolic size), on
    # MiT's channels-last-strided views saved for backward, and on replicate padding's backward (see
    # blocks.replicate_pad); and the graph broke at every DSConv (math.isfinite of extend_scope, traced as
    # a symbolic float) and every fusing conv (a sort on symbolic sizes in ConcatConvNormAct).
    # S3-OCTA with MiT at depth 3 meets them all; sizes that need padding, and
    # one that reuses the dynamic graph. In float32, where it failed (in float64 it did not). Gradients
    # are compared as one vector: inductor's rounding differs from eager's by ~1e-6, enough to move a
    # snake sample lying that close to a pixel line across it, where bilinear sampling's slope jumps
    # (the reference in float32 vs float64 shows that too). On CUDA, convolutions round to TF32 by default.
    # (The constant-width variant with retina's MiT layer, where the traps were; the published widths'
    # SegFormer stage compiles in one graph too (test_s3octa_compiles_to_one_graph_with_checkpointing), but
    # inductor takes 4.5 minutes over it on the 2-core CI machine.)
    torch._dynamo.reset()
    model = build("s3octa-constant-mit", depth=3, width=8).to(device)
    compiled = torch.compile(model, dynamic=True, fullgraph=True)  # (fullgraph: a graph break fails too)
    scale = 1 if device == "cpu" else 10
    for size in ((21, 30), (35, 18)):
        x = torch.randn(2, 3, *size, device=device)
        (y, grads), (expected, expected_grads) = (output_and_grads(run, model, x) for run in (compiled, model))
        torch.testing.assert_close(y, expected, rtol=1e-3 * scale, atol=1e-4 * scale)
        grads, expected_grads = (torch.cat([g.flatten() for g in d.values()]) for d in (grads, expected_grads))
        assert (grads - expected_grads).norm() <= 1e-2 * scale * expected_grads.norm()


@pytest.mark.parametrize("key", ["unet", "dscnet", "s3octa-mit"])
def test_exports_with_dynamic_sizes_in_multiples_of_16(key):
    # torch.export cannot prove the pad-to-stride amount of an arbitrary size non-negative, so dynamic
    # sizes are declared as multiples of the models' strides (README); then one program serves them all.
    from torch.export import Dim

    model = build(key).eval()
    channels = SMALL[key]["in_channels"]
    sizes = {0: Dim("batch"), 2: 16 * Dim("rows", min=1, max=64), 3: 16 * Dim("columns", min=1, max=64)}
    program = torch.export.export(model, (torch.randn(2, channels, 32, 48),), dynamic_shapes=(sizes,))
    x = torch.randn(3, channels, 64, 16)
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


def train_two_ddp_steps(key):
    """Two DistributedDataParallel steps of build(key) in a one-process gloo group; prints "trained"."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(build(key))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(1, SMALL[key]["in_channels"], 24, 24)).square().mean().backward()
        optimizer.step()
    print("trained", flush=True)


@pytest.mark.parametrize("key", ["dscnet", "s3octa-mit"])
def test_trains_under_ddp(key):
    # DistributedDataParallel (default find_unused_parameters=False) fails on the second step if any
    # parameter went unused, as the public DSConv's other-morph conv does. In a subprocess that skips
    # teardown (os._exit): in-process, the gloo group's destruction, whenever garbage collection drops the
    # DDP reducer, can join a worker thread that waits for the GIL the joining thread holds (torch
    # 2.13; it hung a CI run in the next test), and the test is about training, not teardown.
    script = f"import os\nfrom tests.test_models import train_two_ddp_steps\ntrain_two_ddp_steps({key!r})\nos._exit(0)\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("trained"), result.stderr[-3000:]


def test_create_and_sizes():
    assert isinstance(create("DSCNet"), DSCNet) and isinstance(create("s3-octa"), S3OCTA)
    assert isinstance(create("unet", in_channels=3, num_classes=2), UNet)
    # The paper's 2.09 M at n=16 counts every DSConv's unused-morph conv, which we keep as buffers.
    assert round(sum(t.numel() for t in DSCNet().state_dict().values()) / 1e6, 2) == 2.09
    assert round(sum(p.numel() for p in DSCNet().parameters()) / 1e6, 2) == 1.61
    with pytest.raises(ValueError, match="unknown model"):
        create("resnet")
    with pytest.raises(ValueError, match="global_aggregation must be one of"):
        S3OCTA(global_aggregation="vit")


@pytest.mark.parametrize("heads,masked", [(8, False), (8, True), (4, False)])
def test_attend_equals_multihead_attention(heads, masked):
    """Our padded-width SDPA attention is nn.MultiheadAttention's function (float64, 1e-12)."""
    from retina.models.aggregation import attend

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(72, heads, batch_first=True).double()
    q, kv = torch.randn(3, 50, 72, dtype=torch.float64), torch.randn(3, 20, 72, dtype=torch.float64)
    blocked = None
    if masked:
        blocked = torch.rand(3, 50, 20) < 0.5
        blocked[..., 0] = False  # every query attends somewhere
    expected = mha(q, kv, kv, attn_mask=None if blocked is None else blocked.repeat_interleave(heads, 0),
                   need_weights=False)[0]
    assert torch.allclose(attend(mha, q, kv, kv, blocked), expected, atol=1e-12)


@requires_cuda
@pytest.mark.cuda
def test_s3octa_attention_runs_on_the_memory_efficient_kernel():
    """Width 72 over 8 heads is 9 per head; padded to 16 the fused kernel accepts it (this raises if
    the math fallback, which stores the full attention matrix, were needed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = S3OCTA(in_channels=3, width=72, global_aggregation="mit").cuda()
    x = torch.rand(1, 3, 96, 96, device="cuda")
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        model(x).sum().backward()
