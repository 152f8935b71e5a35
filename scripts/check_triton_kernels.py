"""Compiles every Triton kernel of retina_kernels for a CUDA target (default sm_90), with no GPU: Triton
lowers to PTX and runs its bundled ptxas locally. The interpreter (TRITON_INTERPRET=1) checks the
kernels' logic but not that they compile, so CI runs this too.

    python scripts/check_triton_kernels.py [--arch 90]

Must run without TRITON_INTERPRET (under it, @triton.jit yields interpreted functions).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's retina_kernels

# Pointer arguments that are not of the data type: fixed types, or the accumulation type.
FIXED_POINTERS = {"code_ptr": "*u8", "low_ptr": "*i32"}
ACCUMULATOR_POINTERS = {"frac_ptr", "partial_ptr", "grad_x_ptr", "grad_pos_ptr"}


def signature(kernel, dtype: str, constexprs: dict) -> dict[str, str]:
    """Triton signature: pointers of the data type (float32 accumulators for half types), int32 sizes and
    scalars, the given constexprs."""
    accumulate = "fp64" if dtype == "fp64" else "fp32"
    types = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in FIXED_POINTERS:
            types[name] = FIXED_POINTERS[name]
        elif name in ACCUMULATOR_POINTERS:
            types[name] = f"*{accumulate}"
        elif name.endswith("_ptr"):
            types[name] = f"*{dtype}"
        else:
            types[name] = "i32"
    return types


def variants():
    """(kernel, data type, constexprs) of every specialization the launchers can request."""
    from retina_kernels.triton_kernels import dsconv
    from retina_kernels.triton_kernels import soft_skeleton as soft

    for dz, dtype in itertools.product((0, 1), ("fp32", "fp64")):
        common = {"DZ": dz, "BLOCK": soft.BLOCK}
        for first, store_next in itertools.product((False, True), repeat=2):
            yield soft._forward_step, dtype, {**common, "FIRST": first, "STORE_NEXT": store_next}
        for has_before in (False, True):
            yield soft._backward_skeleton, dtype, {**common, "HAS_BEFORE": has_before}
        yield soft._backward_dilate, dtype, common
        yield soft._backward_erode, dtype, common
    precisions = {"fp16": ["ieee"], "bf16": ["ieee"], "fp32": ["tf32", "tf32x3"], "fp64": ["ieee"]}
    for dtype, precision in ((d, p) for d, ps in precisions.items() for p in ps):
        flags = {"USE_DOT": dtype != "fp64", "PRECISION": precision}  # as dsconv._flags gives them
        blocks = {"BO": dsconv.BLOCK_O, "BP": dsconv.BLOCK_P, "BCH": dsconv.BLOCK_CH}
        for has_bias in (False, True):
            yield dsconv._forward, dtype, {**flags, **blocks, "HAS_BIAS": has_bias}
        yield dsconv._weight_grad, dtype, {**flags, **blocks, "SPLITS": dsconv.WEIGHT_GRAD_SPLITS}
        yield dsconv._input_grad, dtype, {**flags, **blocks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (default)")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("check_triton_kernels: unset TRITON_INTERPRET first", file=sys.stderr)
        return 2
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    target = GPUTarget("cuda", args.arch, 32)
    count = 0
    for kernel, dtype, constexprs in variants():
        source = ASTSource(fn=kernel, signature=signature(kernel, dtype, constexprs), constexprs=constexprs)
        triton_compile(source, target=target)  # raises CompilationError with the offending line
        count += 1
    print(f"check_triton_kernels: {count} specializations compiled for sm_{args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
