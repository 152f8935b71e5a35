"""Turns pytest-benchmark JSON files into a markdown table: per group, each implementation's median
time, its speed-up over every other implementation in the table, and its peak memory. Several files
(runs of different builds on one machine, e.g. gpu_check.sh's BASELINE run) merge into one table.

    python benchmarks/report.py results.json [baseline.json ...] > table.md
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict


def commit(data: dict) -> str:
    """GIT_COMMIT wins: on the GPU machine the tree is a copy whose .git, if any, may be stale."""
    return os.environ.get("GIT_COMMIT") or data.get("commit_info", {}).get("id", "?")[:10]


def table(data: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"]].append(bench)
    lines = [
        "| case | implementation | median ms | min ms | peak MiB | speed-up vs others (same run) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for group in sorted(groups):
        rows = sorted(groups[group], key=lambda b: b["stats"]["median"])
        for bench in rows:
            median = bench["stats"]["median"]
            ratios = ", ".join(
                f"{other['extra_info']['impl']} {other['stats']['median'] / median:.1f}×"
                for other in rows
                if other is not bench and other["stats"]["median"] > median
            )
            lines.append(
                f"| {group} | {bench['extra_info']['impl']} | {1e3 * median:.2f} | "
                f"{1e3 * bench['stats']['min']:.2f} | {bench['extra_info']['peak_mib']:.1f} | {ratios or '—'} |"
            )
    machine = data.get("machine_info", {})
    header = f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, " \
             f"{machine.get('cpu', {}).get('count', '?')} CPUs; commit {commit(data)}; " \
             f"{data.get('datetime', '?')}\n\n"
    return header + "\n".join(lines) + "\n"


def merged(runs: list[dict]) -> dict:
    """The first run with every run's benchmarks."""
    return {**runs[0], "benchmarks": [bench for run in runs for bench in run["benchmarks"]]}


if __name__ == "__main__":
    runs = []
    for path in sys.argv[1:]:
        with open(path) as f:
            runs.append(json.load(f))
    print(table(merged(runs)))
