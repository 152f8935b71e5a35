#!/usr/bin/env bash
# Run on the GPU machine (device tool): builds the extension with CUDA for Hopper, runs every test
# (the CUDA ones included), a memory and a time breakdown, and the benchmarks, and writes logs and a
# results table to $OUT (8 files: the most the device tool brings back).
# Needs no network: the machine's python3 already has torch, pytest-benchmark, scikit-image, scipy, opencv.
#   device run: GIT_COMMIT=<sha> [TEST_FILTER=<pytest -k>] [BENCH_FILTER=<pytest -k>] bash scripts/gpu_check.sh
#   (then copy $OUT/results.md into benchmarks/RESULTS.md)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
# The GPU image's default CXX (/opt/gcc/bin/g++) produces an extension that segfaults inside
# std::ostream when a TORCH_CHECK message is formatted (its libstdc++ differs from the one torch was
# built against); the distribution's gcc links the same libstdc++ as torch and works.
if [ -z "${RETINA_KEEP_CXX:-}" ] && [ -x /usr/bin/g++ ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
echo "compiler: ${CXX:-default}"
status=0

{
  date -u
  echo "commit: ${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== build (CUDA, arch $TORCH_CUDA_ARCH_LIST)"
FORCE_CUDA=1 "$python" setup.py build_ext --inplace > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; echo "BUILD FAILED"; exit 1; }
"$python" -c "import retina_kernels as r; b = r.backends(); print(b); assert b['cuda'] == 'CUDA' and b['cuda dsconv2d'] == 'CUDA', b"  || exit 1

echo "== tests (CUDA included)"
"$python" -m pytest -q -p no:cacheprovider tests ${TEST_FILTER:+-k "$TEST_FILTER"} 2>&1 | tee "$out/tests.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== S3-OCTA step memory by module, ours vs reference op (1x304²)"
PYTHONPATH=. "$python" scripts/memory_breakdown.py --model s3octa --size 304 --device cuda 2>&1 | tee "$out/memory.txt"

echo "== where the time goes: dsconv2d layer and S3-OCTA step, kernel by kernel (1x304², fp32)"
for what in layer s3octa; do PYTHONPATH=. "$python" scripts/dsconv_profile.py --what $what --size 304 --device cuda; done \
  > "$out/profile.txt" 2>&1
grep "^per step" "$out/profile.txt"

echo "== benchmarks"
"$python" -m pytest -q -p no:cacheprovider benchmarks ${BENCH_FILTER:+-k "$BENCH_FILTER"} \
  --benchmark-json="$out/bench.json" --benchmark-columns=min,median,max > "$out/bench.log" 2>&1
[ $? -eq 0 ] || { status=1; tail -30 "$out/bench.log"; }
"$python" benchmarks/report.py "$out/bench.json" > "$out/results.md" && cat "$out/results.md"
exit $status
