"""Issue #30's proof: whole-image results on a small GPU. With the process limited to `--limit-mib` of GPU
memory (torch.cuda.set_per_process_memory_fraction), it
  1. plans and runs S3-OCTA training steps (published, width 72, depth 3, K 11, MiT) on 400² crops with
     IBP-clDice at `plan_memory`'s settings;
  2. predicts 2048² and 4096² images with S3-OCTA in exact and blend modes, and DSCNet at 4096², beside
     the whole-image forward on the unlimited GPU (its logits are the exact mode's reference) and MONAI's
     sliding_window_inference with the same model and tile where MONAI is installed;
and prints a markdown table: time, device peak, max |exact − whole| / max |whole|, and the targets (peak
≤ limit; exact ≤ 3x and blend ≤ 1.5x the whole-image time).

    python scripts/inference_proof.py --limit-mib 2048 [--sizes 2048 4096] [--out results.md]
    python scripts/inference_proof.py --device cpu --sizes 96 --train-size 64 --tile 32   # a smoke run

The whole-image reference needs room: S3-OCTA's whole-image forward peaked at 0.3 / 1.1 / 4.5 GiB at
256² / 512² / 1024² on the CPU (x4 per doubling), i.e. about 72 GiB at 4096², too close to an 80 GB card's
capacity: run the proof on the 141 GB card (the device tool's nvidia-h200 kind), or a 4096² whole-image
row reads "out of memory" and the exact rows there carry no difference.
"""

from __future__ import annotations

import argparse
import time

import torch

from retina.image_files import write_bytes_atomic
from retina.inference import predict
from retina.losses import IBPclDiceLoss
from retina.models import S3OCTA, DSCNet
from retina.train import plan_memory


def timed(fn, device: torch.device):
    """(result, seconds, peak bytes on a CUDA device or None)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return result, seconds, peak


def mib(value) -> str:
    return "—" if value is None else f"{value / 2**20:.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit-mib", type=int, default=2048)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--tile", type=int, default=256, help="blend and MONAI tile")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    limit = args.limit_mib * 2**20
    rows: list[str] = []

    def emit(row: str) -> None:
        """Prints the row and rewrites the table file with it: a run cut short by the device's time limit
        still leaves every row it measured."""
        rows.append(row)
        print(row, flush=True)
        if args.out:
            write_bytes_atomic(args.out, ("\n".join(rows) + "\n").encode())

    emit("| case | mode | time s | device peak MiB | vs whole time | max abs diff / max abs whole | target met |")
    emit("|---|---|---:|---:|---:|---:|---|")
    torch.manual_seed(0)
    models = {"s3octa": S3OCTA(in_channels=3).eval(), "dscnet": DSCNet(in_channels=1).eval()}

    # whole-image references first, on the unlimited device
    references = {}
    for name, model in models.items():
        for size in args.sizes if name == "s3octa" else args.sizes[-1:]:
            x = torch.rand(1, model.config["in_channels"], size, size)
            try:
                whole, seconds, peak = timed(lambda: predict(model, x, mode="whole", device=device), device)
                references[(name, size)] = (x, whole, seconds)
                emit(f"| {name} {size}² | whole, unlimited | {seconds:.2f} | {mib(peak)} | 1.0× | 0 | — |")
            except torch.OutOfMemoryError:
                emit(f"| {name} {size}² | whole, unlimited | out of memory | | | | |")
                references[(name, size)] = (x, None, None)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(limit / total, device)

    # 1. training within the limit
    model = S3OCTA(in_channels=3).to(device)
    loss = IBPclDiceLoss(sigmoid=True)
    measure = None if device.type == "cuda" else (lambda p, b, c, a: 0)  # the CPU has no allocator peak
    plan = plan_memory(model, loss, in_channels=3, budget=limit, max_patch=args.train_size, min_patch=64,
                       device=device, measure=measure)
    model.checkpointing = plan.checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = {"bfloat16": torch.bfloat16}.get(plan.amp or "")
    x = torch.rand(plan.batch_size, 3, plan.patch, plan.patch, device=device)
    target = (torch.rand(plan.batch_size, 1, plan.patch, plan.patch, device=device) > 0.8).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            value = loss(model(x).float(), target)
        value.backward()
        optimizer.step()

    step()
    _, seconds, peak = timed(step, device)
    met = "—" if peak is None else ("yes" if peak <= limit else "no")
    emit(f"| s3octa train {plan.patch}² | {plan} | {seconds:.2f} | {mib(peak)} | | | {met} |")
    model = optimizer = None  # (free the training state before inference)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2. inference within the limit
    for (name, size), (x, whole, whole_seconds) in references.items():
        model = models[name]
        modes = ["exact", "blend"] + (["monai"] if name == "s3octa" or size == args.sizes[-1] else [])
        for mode in modes:
            try:
                if mode == "monai":
                    try:
                        from monai.inferers import sliding_window_inference
                    except ImportError:
                        continue
                    model.to(device)

                    def run():
                        with torch.no_grad():
                            return sliding_window_inference(x, (args.tile, args.tile), 1, model, overlap=0.25,
                                                            mode="gaussian", sw_device=device, device="cpu")
                else:
                    def run():
                        return predict(model, x, mode=mode, tile=args.tile, max_memory=limit, device=device,
                                       output_device="cpu")
                out, seconds, peak = timed(run, device)
            except torch.OutOfMemoryError:
                emit(f"| {name} {size}² | {mode}, {args.limit_mib} MiB | out of memory | | | | no |")
                continue
            ratio = f"{seconds / whole_seconds:.2f}×" if whole_seconds else "—"
            difference = "—"
            if whole is not None:
                difference = f"{((out - whole).abs().max() / whole.abs().max()).item():.2e}"
            bound = {"exact": 3.0, "blend": 1.5}.get(mode)
            met = "—"
            if peak is not None and bound is not None and whole_seconds:
                met = "yes" if peak <= limit and seconds <= bound * whole_seconds else "no"
            emit(f"| {name} {size}² | {mode}, {args.limit_mib} MiB | {seconds:.2f} | {mib(peak)} | {ratio} | "
                 f"{difference} | {met} |")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
