import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from memory import peak_mib  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def measure(benchmark):
    """measure(fn, device, group=..., impl=..., rounds=...): times fn with pytest-benchmark and records
    its peak memory (MiB) and the implementation name in extra_info, for benchmarks/report.py."""

    def run(fn, device, *, group, impl, rounds=5, warmup=1):
        device = torch.device(device)

        def call():
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        for _ in range(warmup):
            call()
        benchmark.group = group
        # RETINA_BENCH_LABEL marks a run of another build or setting (scripts/gpu_check.sh: BASELINE=<commit>,
        # a capped cuDNN workspace), so its rows sit beside this run's in one table: "ours@<label>".
        label = os.environ.get("RETINA_BENCH_LABEL")
        impl = f"{impl}@{label}" if label else impl
        benchmark.extra_info.update(impl=impl, device=str(device), peak_mib=round(peak_mib(call, device), 2))
        return benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)

    return run
