"""Per-op sample tables: the inputs every op is checked on, shared by the correctness tests (against the
reference in float64), gradcheck, torch.library.opcheck and the CUDA-equals-CPU tests
(tests/test_op_samples.py). Each table covers odd sizes, batch > 1, non-contiguous inputs and an empty
batch; a new op adds its table here and inherits all four checks.

A sample is (name, op args for torch.ops.retina.<op>, reference callable, differentiable argument indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from retina_kernels.reference import dsconv as dsconv_reference
from retina_kernels.reference import skeletonize as skeletonize_reference
from retina_kernels.reference import soft_skeleton as soft_skeleton_reference


@dataclass
class Sample:
    name: str
    args: tuple
    reference: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]
    differentiable: tuple[int, ...] = ()  # indices of args that gradcheck differentiates

    def to(self, device: str) -> "Sample":
        moved = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in self.args)
        return Sample(self.name, moved, self.reference, self.differentiable)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """The same values, non-contiguous (H and W swapped in memory)."""
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


def skeletonize_samples() -> list[Sample]:
    g = _generator(0)
    binary = lambda *shape: (torch.rand(shape, generator=g) < 0.55).to(torch.uint8)  # noqa: E731
    ref = lambda mask, max_iter: skeletonize_reference.skeletonize(mask, max_iter=max_iter)  # noqa: E731
    return [
        Sample("2d odd batch 2", (binary(2, 1, 19, 23), None), ref),
        Sample("2d max_iter 2", (binary(3, 1, 8, 31), 2), ref),
        Sample("2d non-contiguous", (_transposed(binary(2, 1, 17, 13)), None), ref),
        Sample("2d empty batch", (binary(0, 1, 9, 7), None), ref),
        Sample("3d odd", (binary(2, 1, 5, 7, 6), None), ref),
    ]


def skeleton_factors_samples() -> list[Sample]:
    g = _generator(1)
    binary = lambda *shape: (torch.rand(shape, generator=g) < 0.55).to(torch.uint8)  # noqa: E731
    ref = skeletonize_reference.skeleton_factors
    return [
        Sample("odd batch 2, 5 iterations", (binary(2, 1, 21, 17), 5), ref),
        Sample("no iteration", (binary(1, 1, 6, 9), 0), ref),
        Sample("non-contiguous", (_transposed(binary(2, 1, 11, 14)), 3), ref),
        Sample("empty batch", (binary(0, 1, 5, 5), 2), ref),
    ]


def soft_skeleton_samples() -> list[Sample]:
    g = _generator(2)
    rand = lambda *shape: torch.rand(shape, generator=g, dtype=torch.float64)  # noqa: E731
    ref = soft_skeleton_reference.soft_skeleton
    return [
        Sample("2d odd batch 2", (rand(2, 3, 11, 13), 4), ref, (0,)),
        Sample("3d", (rand(1, 2, 5, 6, 7), 2), ref, (0,)),
        Sample("non-contiguous", (_transposed(rand(2, 1, 9, 12)), 3), ref, (0,)),
        Sample("empty batch", (rand(0, 2, 7, 5), 3), ref, (0,)),
    ]


def dsconv2d_samples() -> list[Sample]:
    g = _generator(3)

    def operands(b, c, o, k, h, w):
        x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
        offset = torch.tanh(torch.randn(b, k, h, w, generator=g, dtype=torch.float64))
        weight = torch.randn(o, c, k, generator=g, dtype=torch.float64) / (c * k) ** 0.5
        bias = torch.randn(o, generator=g, dtype=torch.float64)
        return x, offset, weight, bias

    def ref(input, offset, weight, bias, morph, extend_scope):
        return dsconv_reference.dsconv2d(input, offset, weight, bias, morph=morph, extend_scope=extend_scope)

    x, offset, weight, bias = operands(2, 3, 4, 5, 7, 9)
    xt, offset_t, weight_t, _ = operands(2, 2, 3, 3, 6, 5)
    wide = operands(1, 9, 2, 3, 6, 5)  # from 8 channels the CPU lays the samples out channels-last
    empty = operands(0, 2, 3, 3, 5, 4)
    return [
        Sample("morph 0, odd, batch 2", (x, offset, weight, bias, 0, 1.0), ref, (0, 1, 2, 3)),
        Sample("morph 1, no bias, scope 2", (x, offset, weight, None, 1, 2.0), ref, (0, 1, 2)),
        Sample("non-contiguous", (_transposed(xt), _transposed(offset_t), weight_t, None, 0, 1.5), ref, (0, 1, 2)),
        Sample("9 channels, morph 1", (*wide, 1, 1.5), ref, (0, 1, 2, 3)),
        Sample("empty batch", (*empty, 1, 1.0), ref, (0, 1, 2, 3)),
    ]


# op name (torch.ops.retina.<op>) -> its table
TABLES: dict[str, Callable[[], list[Sample]]] = {
    "skeletonize": skeletonize_samples,
    "skeleton_factors": skeleton_factors_samples,
    "soft_skeleton": soft_skeleton_samples,
    "dsconv2d": dsconv2d_samples,
}


def all_samples() -> list[tuple[str, Sample]]:
    return [(op, sample) for op, table in TABLES.items() for sample in table()]
