"""Where the time of a dsconv2d layer, or of a model's training step, goes, kernel by kernel
(torch.profiler), and what share of it our dsconv2d op takes.

    python scripts/dsconv_profile.py [--what layer|s3octa|dscnet] [--size 304] [--batch 1]
                                     [--dtype float32|bfloat16] [--device cuda] [--steps 5] [--rows 15]

`layer` is the benchmark's layer (C = O = 64, K = 9, morph 0), forward + backward; a model step is its
forward, a mean loss and the backward. On CUDA the table lists kernels by their own GPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from test_dsconv_bench import layer_inputs  # noqa: E402

import retina_kernels  # noqa: E402
from retina.models import S3OCTA, DSCNet  # noqa: E402

# The autograd-visible names of our op, whose device time (their kernels included) is the op's share.
OP_NAMES = ("retina::dsconv2d", "retina::dsconv2d_backward")


def layer_step(size: int, batch: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    x, offset, weight, bias = layer_inputs(device, size, dtype)
    if batch > 1:
        x, offset = (t.detach().expand(batch, -1, -1, -1).contiguous().requires_grad_() for t in (x, offset))
    grad = torch.randn(x.shape, device=device, dtype=dtype)

    def step() -> None:
        retina_kernels.dsconv2d(x, offset, weight, bias, morph=0).backward(grad)

    return step


def model_step(name: str, size: int, batch: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    torch.manual_seed(0)
    model = (S3OCTA(in_channels=3) if name == "s3octa" else DSCNet(in_channels=1)).to(device)
    x = torch.rand(batch, 3 if name == "s3octa" else 1, size, size, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(x).float().mean()
        loss.backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="layer", choices=["layer", "s3octa", "dscnet"])
    parser.add_argument("--size", type=int, default=304)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps, after two warm-up steps")
    parser.add_argument("--rows", type=int, default=15, help="rows of the kernel table")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.what == "layer":
        step = layer_step(args.size, args.batch, dtype, device)
    else:
        step = model_step(args.what, args.size, args.batch, dtype, device)

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(2):
        step()
    sync()
    # Wall time per step without the profiler: far above the GPU time below, the host sets the pace
    # (kernel launches, Python), and a faster kernel would not show in the step.
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    wall_ms = (time.perf_counter() - start) * 1e3 / args.steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()

    events = prof.key_averages()
    # Kernels (CUDA) or ops (CPU) by the time they spend themselves; the op rows' totals include children.
    own, total = ("self_device_time_total", "device_time_total") if cuda else ("self_cpu_time_total", "cpu_time_total")
    print(f"{args.what} {args.batch}×{args.size}² {args.dtype} on {device} (torch {torch.__version__}), "
          f"{args.steps} steps; backends {retina_kernels.backends()}")
    print(events.table(sort_by=own, row_limit=args.rows))
    # On the GPU an op row's self device time already counts the kernels it launched (torch >= 2.5), so
    # only the device-side rows (kernels, copies, fills) add up to the step.
    timed = [e for e in events if not cuda or e.device_type == torch.autograd.DeviceType.CUDA]
    step_us = sum(getattr(e, own) for e in timed) / args.steps
    op_us = sum(getattr(e, total) for e in events if e.key in OP_NAMES) / args.steps
    print(f"per step: {step_us / 1000:.3f} ms {'on the GPU' if cuda else 'of CPU time'}, "
          f"of which dsconv2d (forward + backward) {op_us / 1000:.3f} ms ({100 * op_us / max(step_us, 1e-9):.0f}%); "
          f"{wall_ms:.3f} ms wall, unprofiled")


if __name__ == "__main__":
    main()
