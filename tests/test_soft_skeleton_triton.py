"""The Triton soft_skeleton kernels against the reference: on CUDA tensors on the GPU machine, on CPU
tensors under TRITON_INTERPRET=1 everywhere else (tests/conftest.py sets it). Small shapes: the
interpreter runs every program in NumPy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import retina_kernels
from retina_kernels.reference import soft_skeleton as reference

from .conftest import requires_cuda
from .test_soft_skeleton import forward_backward, soft_vessels

pytest.importorskip("triton", reason="triton is not installed (pip install '.[test]' installs it on Linux)")
from retina_kernels.triton_kernels import soft_skeleton as triton_kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def triton_forward_backward(x, grad_out, num_iter):
    x, grad_out = x.to(DEVICE), grad_out.to(DEVICE)
    return (triton_kernels.soft_skeleton_forward(x, num_iter).cpu(),
            triton_kernels.soft_skeleton_backward(grad_out, x, num_iter).cpu())


@pytest.mark.parametrize(
    "shape, num_iter, kind",
    [
        ((2, 1, 9, 11), 2, "vessels"),   # batch > 1, odd sizes, plateaus
        ((1, 2, 8, 7), 3, "binary"),     # ties in every pool and window
        ((1, 1, 1, 13), 1, "random"),    # a single row
        ((1, 1, 12, 1), 0, "random"),    # a single column, no erosion past the first opening
        ((1, 1, 4, 5, 6), 1, "random"),  # 3D
        ((1, 1, 3, 4, 5), 2, "binary"),  # 3D ties
    ],
)
def test_matches_reference_float64(shape, num_iter, kind):
    gen = torch.Generator().manual_seed(num_iter + sum(shape))
    x = {
        "vessels": lambda: soft_vessels(shape, seed=1),
        "binary": lambda: (torch.rand(shape, generator=gen) > 0.5).double(),
        "random": lambda: torch.rand(shape, generator=gen, dtype=torch.float64),
    }[kind]()
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    y, grad = triton_forward_backward(x, grad_out, num_iter)
    y_ref, grad_ref = forward_backward(reference.soft_skeleton, x, grad_out, num_iter)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-11)


def test_float32_half_non_contiguous_and_empty():
    x = soft_vessels((1, 1, 10, 12), seed=3)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y_ref, grad_ref = forward_backward(reference.soft_skeleton, x.float(), grad_out.float(), 2)
    y, grad = triton_forward_backward(x.float().transpose(2, 3).contiguous().transpose(2, 3), grad_out.float(), 2)
    assert y.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-5)
    y_half, grad_half = triton_forward_backward(x.half(), grad_out.half(), 2)  # computed in float32
    assert y_half.dtype == grad_half.dtype == torch.float16
    y_ref, grad_ref = forward_backward(reference.soft_skeleton, x.half().float(), grad_out.half().float(), 2)
    torch.testing.assert_close(y_half, y_ref.half(), rtol=0, atol=1e-3)
    torch.testing.assert_close(grad_half, grad_ref.half(), rtol=0, atol=1e-3)
    empty = torch.zeros(0, 1, 5, 5, device=DEVICE)
    assert triton_kernels.soft_skeleton_forward(empty, 3).shape == (0, 1, 5, 5)
    assert triton_kernels.soft_skeleton_backward(empty, empty, 3).shape == (0, 1, 5, 5)


@pytest.mark.cuda
@requires_cuda
def test_cuda_op_is_served_by_triton():
    assert retina_kernels.backends()["cuda soft_skeleton"] == "Triton"
    x = soft_vessels((2, 1, 40, 50)).float().cuda().requires_grad_()
    torch.library.opcheck(torch.ops.retina.soft_skeleton.default, (x, 4))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        retina_kernels.soft_skeleton(x, 10)
    assert len(saved) == 1 and saved[0] is x
    # Continuous random values: at ties the finite differences average the one-sided slopes.
    x64 = torch.rand(1, 1, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x64 = x64.cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: retina_kernels.soft_skeleton(t, 2), (x64,))


@pytest.mark.parametrize("arch", [75, 90])
def test_kernels_compile_for_turing_and_hopper(arch):
    """Every specialization compiles, with no GPU (the interpreter does not compile), for the oldest GPUs
    CUDA 13 supports (Turing, sm_75: soft-clDice on a T4 runs these) and for Hopper."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9 warns when it is unset
    script = Path(__file__).parents[1] / "scripts" / "check_triton_kernels.py"
    done = subprocess.run([sys.executable, str(script), "--arch", str(arch)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"specializations compiled for sm_{arch}" in done.stdout
