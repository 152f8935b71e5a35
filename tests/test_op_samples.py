"""Every op on every sample of its table (tests/op_samples.py): equal to its reference in float64,
gradcheck where differentiable, torch.library.opcheck, and on CUDA equal to the CPU result."""

import pytest
import torch

import retina_kernels

from .conftest import requires_cuda
from .op_samples import all_samples

SAMPLES = all_samples()
IDS = [f"{op}: {sample.name}" for op, sample in SAMPLES]
requires_extension = pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")


def run(op: str, args: tuple):
    return getattr(torch.ops.retina, op)(*args)


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@requires_extension
@pytest.mark.parametrize("op, sample", SAMPLES, ids=IDS)
def test_equals_the_reference(op, sample):
    for ours, expected in zip(as_tuple(run(op, sample.args)), as_tuple(sample.reference(*sample.args))):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


@requires_extension
@pytest.mark.parametrize("op, sample", [(op, s) for op, s in SAMPLES if s.differentiable],
                         ids=[i for i, (_, s) in zip(IDS, SAMPLES) if s.differentiable])
def test_gradcheck(op, sample):
    args = [a.detach().clone().requires_grad_(i in sample.differentiable) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(sample.args)]
    if args[0].numel() == 0:  # an empty batch: gradcheck has nothing to perturb; backward must still run
        out = run(op, tuple(args))
        out.sum().backward()
        assert args[0].grad.shape == args[0].shape
        return
    assert torch.autograd.gradcheck(lambda *a: run(op, a), tuple(args), eps=1e-6, atol=1e-6)


@requires_extension
@pytest.mark.parametrize("op, sample", SAMPLES, ids=IDS)
def test_opcheck(op, sample):
    torch.library.opcheck(getattr(torch.ops.retina, op).default, sample.args)


@requires_cuda
@requires_extension
@pytest.mark.parametrize("op, sample", SAMPLES, ids=IDS)
def test_cuda_equals_cpu(op, sample):
    on_cpu, on_cuda = as_tuple(run(op, sample.args)), as_tuple(run(op, sample.to("cuda").args))
    for cpu, cuda in zip(on_cpu, on_cuda):
        if cpu.is_floating_point():
            torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-10, atol=1e-10)
        else:  # binary ops: bitwise
            assert torch.equal(cuda.cpu(), cpu)
