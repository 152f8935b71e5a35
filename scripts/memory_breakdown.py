"""Where a model's training-step memory goes: bytes saved for backward per module type, and the step's
peak, with our dsconv2d and with the reference op (which materialises the samples). Also the operators
at which the step peaks: what was in use before each and what it added while it ran (its outputs and any
workspace, e.g. cuDNN's, or on the CPU the convolutions' scratch buffers), so a peak made of a workspace
is told from one made of activations (CPU: resident-set figures, Linux only). Each step is measured
after one unmeasured step, as the benchmarks are, so one-time allocations (cuBLAS handles and
workspaces, cuDNN plans) are not in it. A cuDNN workspace at the peak is whatever the chosen
algorithm asks for while memory is plentiful (CUDNN_CONV_WSCAP_DBG did not cap it: H200, torch 2.11);
--gpu-limit-mib runs the step with the process limited to that much GPU memory, as on a small GPU: the
step's peak then shows whether torch found an algorithm whose workspace fits, or "out of memory".

    python scripts/memory_breakdown.py [--model s3octa|dscnet] [--size 304] [--batch 1] [--device cuda]
                                       [--checkpointing] [--gpu-limit-mib MiB]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from memory import allocations_visible, peak_mib, reset_resident_peak, resident_mib, resident_peak_mib  # noqa: E402

import retina_kernels  # noqa: E402
from retina.models import S3OCTA, DSCNet  # noqa: E402
from retina_kernels.reference import dsconv as reference  # noqa: E402


def saved_by_module(model: torch.nn.Module, x: torch.Tensor) -> collections.Counter:
    """MiB of distinct storages saved for backward during one forward, by the innermost module type."""
    saved: collections.Counter = collections.Counter()
    stack: list[str] = []
    hooks = []
    def enter(module, inputs):
        stack.append(type(module).__name__)

    def leave(module, inputs, output):
        stack.pop()

    for module in model.modules():
        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    seen = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            saved[stack[-1] if stack else "(top)"] += storage.nbytes() / 2**20
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    for hook in hooks:
        hook.remove()
    return saved


def describe(func, args) -> str:
    """An operator and the shapes of its first tensor operands (which tell which layer it was: a
    convolution's workspace depends on them)."""
    operands = " ".join("x".join(map(str, a.shape)) for a in args[:3] if isinstance(a, torch.Tensor))
    return f"{func.overloadpacket} {operands}"


class OperatorOutOfMemory(TorchDispatchMode):
    """Names the operator that raised torch.OutOfMemoryError while active (the error itself says only how
    much was asked for). Allocations torch retries internally (a cuDNN workspace) never reach it."""

    def __init__(self):
        super().__init__()
        self.name: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        try:
            return func(*args, **(kwargs or {}))
        except torch.OutOfMemoryError:
            self.name = self.name or describe(func, args)  # the innermost: the first to see it
            raise


class PeakByOperator(TorchDispatchMode):
    """Records, for every operator dispatched while active (backward ones included), the memory in use
    before it and the high-water mark while it ran, in MiB: on CUDA torch's allocator counters (host-side,
    no synchronisation); on the CPU the resident set (VmRSS, VmHWM reset before each operator), to be used
    inside memory.allocations_visible() so freed memory leaves it."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.records: list[tuple[str, float, float]] = []  # (operator, in use before, peak during)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.device.type == "cuda":
            before = torch.cuda.memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
            out = func(*args, **(kwargs or {}))
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            before = resident_mib()
            reset_resident_peak()
            out = func(*args, **(kwargs or {}))
            peak = resident_peak_mib()
        self.records.append((describe(func, args), before, peak))
        return out

    def report(self, rows: int = 6) -> str:
        """The operators with the highest peaks, the step's own first."""
        start = self.records[0][1] if self.records else 0
        lines = ["    operators at the step's highest peaks (MiB above the step's start):",
                 f"    {'operator, shapes of its first operands':72s} {'peak':>8s} {'before':>8s} {'added':>8s}"]
        for name, before, peak in sorted(self.records, key=lambda r: -r[2])[:rows]:
            lines.append(f"    {name:72s} {peak - start:8.0f} {before - start:8.0f} {peak - before:8.0f}")
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="s3octa", choices=["s3octa", "dscnet"])
    parser.add_argument("--size", type=int, default=304)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--checkpointing", action="store_true", help="build the models with checkpointing=True")
    parser.add_argument("--gpu-limit-mib", type=int, help="limit the process to this much GPU memory (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.gpu_limit_mib is not None:
        if device.type != "cuda":
            parser.error("--gpu-limit-mib needs --device cuda")
        # set_per_process_memory_fraction takes a device index (torch 2.11 rejects a bare "cuda")
        index = torch.cuda.current_device() if device.index is None else device.index
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.gpu_limit_mib * 2**20 / total), index)
    notes = [f"GPU memory limited to {args.gpu_limit_mib} MiB"] * (args.gpu_limit_mib is not None) + \
        ["checkpointing"] * args.checkpointing
    ours = retina_kernels.dsconv2d
    for impl, op in (("ours", ours), ("reference", reference.dsconv2d)):
        retina_kernels.dsconv2d = op
        label = f"{impl} ({', '.join(notes)})" if notes else impl
        where = OperatorOutOfMemory()
        try:
            with where:
                report(args, device, label)
        except torch.OutOfMemoryError as error:  # what failed: where, how much it asked for, how much was in use
            print(f"{label}: {args.model} {args.batch}x{args.size}² on {device}: out of memory in "
                  f"{where.name or 'no operator'} ({'. '.join(str(error).split('. ')[1:4])})")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    retina_kernels.dsconv2d = ours


def report(args: argparse.Namespace, device: torch.device, label: str) -> None:
    """Prints one model's step peak, what it saves for backward by module, and the operators at its peaks."""
    torch.manual_seed(0)
    model_class = S3OCTA if args.model == "s3octa" else DSCNet
    model = model_class(in_channels=3 if args.model == "s3octa" else 1, checkpointing=args.checkpointing).to(device)
    x = torch.rand(args.batch, 3 if args.model == "s3octa" else 1, args.size, args.size, device=device)
    saved = saved_by_module(model, x)
    model(x).float().mean().backward()  # the unmeasured step
    peak = peak_mib(lambda: model(x).float().mean().backward(), device)
    print(f"{label}: "
          f"{args.model} {args.batch}x{args.size}² on {device}: step peak {peak:.0f} MiB, "
          f"saved for backward {sum(saved.values()):.0f} MiB")
    for name, mib in saved.most_common(8):
        print(f"    {name:24s} {mib:8.1f} MiB")
    with allocations_visible() as visible:
        if device.type == "cuda" or visible:
            peaks = PeakByOperator(device)
            with peaks:
                model(x).float().mean().backward()
            print(peaks.report())


if __name__ == "__main__":
    main()
