"""dsconv2d, one layer C = O = 64, K = 9, morph 0: forward, and forward + backward (the backward time is
their difference), ours vs the plain-PyTorch reference (which materialises the samples). Issue #3
targets on the H100 at 304²: forward <= 0.5 ms, backward <= 2 ms, peak fwd+bwd <= 150 MiB; CPU at
1×64×128²: forward + backward >= 2× faster than the reference."""

import pytest
import torch

import retina_kernels
from conftest import DEVICES
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
@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_dsconv_layer(measure, case, impl, pass_):
    device, size, dtype = CASES[case]
    if device not in DEVICES:
        pytest.skip(f"no {device} device")
    x, offset, weight, bias = layer_inputs(device, size, dtype)
    fn = retina_kernels.dsconv2d if impl == "ours" else reference.dsconv2d
    grad = torch.randn(x.shape, device=device, dtype=dtype)

    def step():
        if pass_ == "fwd":
            with torch.no_grad():
                return fn(x, offset, weight, bias, morph=0)
        out = fn(x, offset, weight, bias, morph=0)
        out.backward(grad)
        return out

    measure(step, device, group=f"dsconv {pass_} {case}", impl=impl, rounds=5 if device == "cuda" else 3)
