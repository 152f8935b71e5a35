"""dsconv2d, one layer C = O = 64, K = 9, morph 0: forward, and forward + backward (the backward time is
their difference), ours vs the plain-PyTorch reference (which materialises the samples) and, on CUDA,
beside the Triton kernels when the compiled CUDA kernel is "ours", and beside the registered op called
without the Python wrapper ("ours-op", to show what the wrapper's checks cost). Issue #3
targets on the H100 at 304²: forward <= 0.5 ms, backward <= 2 ms, peak fwd+bwd <= 150 MiB; CPU at
1×64×128²: forward + backward >= 2× faster than the reference."""

import pytest
import torch

import retina_kernels
from conftest import DEVICES
from retina_kernels._extension import triton_available
from retina_kernels.reference import dsconv as reference

CASES = {  # name: (device, size, dtype)
    "1×64×128² fp32 cpu": ("cpu", 128, torch.float32),
    "1×64×304² fp32 cuda": ("cuda", 304, torch.float32),
    "1×64×400² fp32 cuda": ("cuda", 400, torch.float32),
    "1×64×304² bf16 cuda": ("cuda", 304, torch.bfloat16),
}


def layer_inputs(device, size, dtype, channels=64, taps=9):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, size, size, generator=gen)
    offset = torch.rand(1, taps, size, size, generator=gen) * 2 - 1
    weight = torch.randn(channels, channels, taps, generator=gen) * 0.05
    bias = torch.randn(channels, generator=gen)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (x, offset, weight, bias)]


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

    # Sub-millisecond CUDA calls need many rounds for a stable median; the CPU reference takes ~0.1 s.
    measure(step, device, group=f"dsconv {pass_} {case}", impl=impl, rounds=50 if device == "cuda" else 3)
