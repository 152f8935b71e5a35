#!/usr/bin/env bash
# CPU benchmarks on this machine, as a markdown table (benchmarks/report.py) on stdout.
#   bash scripts/bench_cpu.sh [pytest -k filter]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
json=$(mktemp --suffix=.json)
"$python" -m pytest -q -p no:cacheprovider benchmarks ${1:+-k "$1"} --benchmark-json="$json" >&2
"$python" benchmarks/report.py "$json"
rm -f "$json"
