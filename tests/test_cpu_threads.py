"""The compiled CPU kernels on several threads. They must run on torch's thread count (ATen's
parallel_for is a header template: an extension built without OpenMP runs every loop on one thread,
silently) and give the answers they give on one thread: bit for bit where each output has one writer,
to rounding where per-thread partial sums are added (dsconv2d's weight gradient)."""

import sys

import numpy as np
import pytest
import torch

import retina_kernels
from retina.data import vessel_mask, vessel_volume
from retina_kernels._extension import cpu_threads

from .conftest import torch_threads
from .test_dsconv import run

pytestmark = pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")


def on_threads(fn, *counts):
    """fn() run with each thread count, in order."""
    results = []
    for n in counts:
        with torch_threads(n):
            results.append(fn())
    return results


@pytest.mark.skipif(not (sys.platform.startswith("linux") and torch.backends.openmp.is_available()),
                    reason="setup.py builds with OpenMP on Linux where torch has it")
def test_loops_run_on_torchs_thread_count():
    assert on_threads(cpu_threads, 3, 1, 2) == [3, 1, 2]
    assert retina_kernels.backends()["cpu threads"].startswith(f"{cpu_threads()} of ")


def vessel_masks(n, h, w):
    return torch.from_numpy(np.stack([vessel_mask(h, w, seed=i) for i in range(n)])[:, None]).to(torch.uint8)


def test_skeletonize_is_the_same_on_any_thread_count():
    masks = [vessel_masks(3, 150, 131), torch.from_numpy(vessel_volume(40, 48, 44, seed=2))[None, None].to(torch.uint8)]
    for mask in masks:
        one, three = on_threads(lambda: retina_kernels.skeletonize(mask), 1, 3)
        assert torch.equal(one, three)


def test_differentiable_skeleton_is_the_same_on_any_thread_count():
    prob = vessel_masks(2, 120, 97).double() * 0.8 + 0.1
    uniform = torch.rand(prob.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.98 + 0.01
    grad_out = torch.randn(prob.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run():
        p = prob.clone().requires_grad_()
        y = retina_kernels.differentiable_skeleton(p, num_iter=5, uniform=uniform)
        y.backward(grad_out)
        return y.detach(), p.grad

    (y1, g1), (y3, g3) = on_threads(run, 1, 3)
    assert torch.equal(y1, y3) and torch.equal(g1, g3)


def test_soft_skeleton_is_the_same_on_any_thread_count():
    x = vessel_masks(2, 110, 87).double() * 0.7 + 0.3 * torch.rand(2, 1, 110, 87, dtype=torch.float64)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run():
        xx = x.clone().requires_grad_()
        y = retina_kernels.soft_skeleton(xx, 10)
        y.backward(grad_out)
        return y.detach(), xx.grad

    (y1, g1), (y3, g3) = on_threads(run, 1, 3)
    assert torch.equal(y1, y3) and torch.equal(g1, g3)


@pytest.mark.parametrize("morph", [0, 1])
def test_dsconv2d_is_the_same_on_any_thread_count(morph):
    # 70 pixels across the snake: five 16-wide strips, so both parities run several strips at once; with
    # 4 threads the backward also splits the channels into groups.
    gen = torch.Generator().manual_seed(morph)
    h, w = (33, 70) if morph == 0 else (70, 33)
    x = torch.randn(2, 6, h, w, generator=gen, dtype=torch.float64)
    offset = torch.rand(2, 9, h, w, generator=gen, dtype=torch.float64) * 4 - 2
    weight = torch.randn(5, 6, 9, generator=gen, dtype=torch.float64)
    bias = torch.randn(5, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(2, 5, h, w, generator=gen, dtype=torch.float64)

    one, *others = on_threads(
        lambda: run(retina_kernels.dsconv2d, x, offset, weight, bias, grad_out, morph=morph, extend_scope=2.0), 1, 2, 4)
    for other in others:
        assert torch.equal(one[0], other[0]), "out"  # each output pixel is one tile's
        assert torch.equal(one[1], other[1]), "grad input"  # parity phases: one writer at a time, fixed order
        for name, a, b in zip(("offset", "weight", "bias"), one[2:], other[2:]):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-11, msg=name)
