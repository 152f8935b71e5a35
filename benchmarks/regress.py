"""Benchmark regression checks that survive noisy machines: compare each case's ratio to its reference
measured in the same run (ours / reference, lower is better), not absolute times.

    python benchmarks/regress.py save    [--baseline FILE] [--quick] [--runs 3]  # run, and store the ratios
    python benchmarks/regress.py compare [--baseline FILE] [--quick] [--margin 0.3]

`save` runs the benchmarks (all, or the quick CPU subset with `--quick`) through pytest-benchmark and
writes, per benchmark group with both an "ours" and a "reference" row, the ratio of their fastest rounds
(noise on a shared machine only adds time) and of their peak memories to FILE (default:
benchmarks/baselines/<machine>.json). `compare` runs the same selection and fails (exit 1) when a
group's time ratio exceeds the baseline's by more than `margin` (30% by default; CI uses 50%: on the
shared 2-core machine a small case's ratio moved by up to 35% between two runs), or when a baseline
group is missing; it prints one line per group either way. Groups new since the baseline are listed,
not judged. Noise is kept out both ways: `save --runs N` stores each ratio's slowest of N runs (the
CI baseline: 3), and `compare` measures again when a ratio is beyond its limit, a regression counting
only when the second run shows it too.

For absolute times on a fixed machine pytest-benchmark's own compare works too:
    pytest benchmarks --benchmark-autosave
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The quick subset: CPU cases with "ours" and "reference" rows, a few seconds each (under 3 minutes in all
# on the 2-core CI machine), as regular expressions over the benchmarks' node ids.
QUICK = (  # (pytest writes non-ASCII characters of ids escaped: × is \xd7, ² is \xb2)
    r"test_dsconv_layer\[fwd(\+bwd)?-(ours|reference)-1.*cpu\]$",
    r"test_dsconv_s3octa_layer\[(ours|reference)-.*cpu\]$",
    r"test_differentiable_skeleton_fwd_bwd\[cpu-(ours|reference)-1\\xd7512",
    r"test_soft_skeleton_fwd_bwd\[cpu-(ours|reference)-1\\xd71\\xd7512",
    r"test_skeletonize_2d\[cpu-(ours|reference)-512",
)


def machine_name() -> str:
    """A name for this machine kind: CPU count and processor (baselines are per machine kind)."""
    cpu = platform.processor() or platform.machine()
    return f"cpu{os.cpu_count()}-{cpu}".replace(" ", "_").lower()


def selected(patterns: tuple[str, ...]) -> list[str]:
    """The benchmark node ids that match any of the regular expressions."""
    listing = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", str(HERE)],
                             cwd=ROOT, capture_output=True, text=True).stdout
    ids = [line.strip() for line in listing.splitlines() if "::" in line]
    return [i for i in ids if any(re.search(p, i) for p in patterns)]


def run_benchmarks(selection: str | None, node_ids: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}"]
        command += node_ids if node_ids else [str(HERE)]
        if selection:
            command += ["-k", selection]
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0 or not out.is_file():
            raise SystemExit(f"regress: the benchmarks failed (pytest exit {result.returncode})")
        return json.loads(out.read_text())


def ratios(data: dict) -> dict[str, dict[str, float]]:
    """{group: {"time": ours / reference fastest round, "memory": ours / reference peak}} for the groups that
    have both rows."""
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"].get("impl", "?")] = bench
    out = {}
    for group, rows in sorted(groups.items()):
        if "ours" in rows and "reference" in rows:
            ours, ref = rows["ours"], rows["reference"]
            memory = ref["extra_info"].get("peak_mib") or 0
            # minima: noise on a shared machine only ever adds time, so the fastest round is the steadiest
            out[group] = {"time": ours["stats"]["min"] / ref["stats"]["min"],
                          "memory": (ours["extra_info"].get("peak_mib", 0) / memory) if memory > 0 else None}
    return out


def merge(runs: list[dict[str, dict]], pick) -> dict[str, dict]:
    """Per group, the run whose time ratio `pick` (max or min) chooses, over the runs that measured it."""
    out = {}
    for group in sorted({g for run in runs for g in run}):
        out[group] = pick((run[group] for run in runs if group in run), key=lambda r: r["time"])
    return out


def compare(current: dict[str, dict], baseline: dict[str, dict], margin: float) -> list[str]:
    """The failures: groups whose time ratio grew beyond (1 + margin) x the baseline's, or that vanished."""
    failures = []
    for group, base in sorted(baseline.items()):
        if group not in current:
            failures.append(f"{group}: in the baseline, not measured now")
            print(f"MISSING  {group}")
            continue
        now, then = current[group]["time"], base["time"]
        verdict = "REGRESSED" if now > then * (1 + margin) else "ok"
        print(f"{verdict:9s}{group}: ours/reference {now:.3f} (baseline {then:.3f}, limit {then * (1 + margin):.3f})")
        if verdict != "ok":
            failures.append(f"{group}: ours/reference {now:.3f} > {then:.3f} x {1 + margin:g}")
    for group in sorted(set(current) - set(baseline)):
        print(f"NEW      {group}: ours/reference {current[group]['time']:.3f} (not in the baseline)")
    return failures


def compare_quietly(current: dict[str, dict], baseline: dict[str, dict], margin: float) -> list[str]:
    """compare() without its printed lines."""
    with contextlib.redirect_stdout(io.StringIO()):
        return compare(current, baseline, margin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["save", "compare"])
    parser.add_argument("--baseline", default=None, help="baseline file (default: benchmarks/baselines/<machine>.json)")
    parser.add_argument("--quick", action="store_true", help="the quick CPU subset (CI)")
    parser.add_argument("-k", dest="selection", default=None, help="a pytest -k selection instead")
    parser.add_argument("--margin", type=float, default=0.3, help="allowed growth of a ratio (default 0.3)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs of the selection (save keeps each ratio's slowest; default 1)")
    args = parser.parse_args(argv)
    if not args.margin >= 0:
        parser.error(f"--margin must be >= 0, got {args.margin}")
    node_ids = selected(QUICK) if args.quick else None
    if args.quick and not node_ids:
        raise SystemExit("regress: the quick selection matched no benchmark")
    selection = None if args.quick else args.selection
    path = Path(args.baseline or HERE / "baselines" / f"{machine_name()}{'-quick' if args.quick else ''}.json")
    if args.action == "compare" and not path.is_file():
        parser.error(f"--baseline {path}: not found (run `save` first)")
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    # save: the slowest ratio of `runs` runs, a baseline that already holds this machine's noise rather than
    # one lucky run; compare: a regression must show in a second run too (the faster of the two counts).
    runs = [ratios(run_benchmarks(selection, node_ids)) for _ in range(args.runs)]
    current = merge(runs, max)
    if args.action == "save":
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"machine": machine_name(), "selection": "quick" if args.quick else selection, "ratios": current}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        print(f"saved {len(current)} ratios to {path}")
        return 0
    baseline = json.loads(path.read_text())["ratios"]
    current = merge(runs, min)
    if compare_quietly(current, baseline, args.margin):
        print("regress: a ratio beyond its limit; measuring once more")
        current = merge([current, ratios(run_benchmarks(selection, node_ids))], min)
    failures = compare(current, baseline, args.margin)
    if failures:
        print(f"{len(failures)} regression(s):\n  " + "\n  ".join(failures))
        return 1
    print("no regression")
    return 0


if __name__ == "__main__":
    sys.exit(main())
