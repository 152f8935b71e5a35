#!/usr/bin/env bash
# Run on the GPU machine (device tool): builds the extension with CUDA for Hopper, runs every test
# (the CUDA ones included), a memory and a time breakdown, and the benchmarks, and writes logs and a
# results table to $OUT (8 files: the most the device tool brings back).
# Needs no network: the machine's python3 already has torch, pytest-benchmark, scikit-image, scipy, opencv.
#   device run: GIT_COMMIT=<sha> [TEST_FILTER=<pytest -k>] [BENCH_FILTER=<pytest -k>] [BASELINE=<commit>]
#               [BASELINE_MODELS=<commit>] bash scripts/gpu_check.sh
#   (then copy $OUT/results.md into benchmarks/RESULTS.md)
# BASELINE: first build the kernels (csrc/) of that commit, with this tree's Python, and run our rows of
# the same benchmarks labelled "<impl>@<commit>", so one table compares the two builds on the same card.
# BASELINE_MODELS: also run our model-step rows with the models (retina/) of that commit on this tree's
# kernels (no build), labelled "<impl>@models-<commit>": a Python-only change to the models, A/B on one card.
# The device gets a copy of the working tree without .git, so a baseline's sources go with it: first, here,
#   BASELINE=<commit> BASELINE_MODELS=<commit> bash scripts/gpu_check.sh --sources
# writes them to .baseline/<commit>/ (git-ignored); then name ".baseline" in the device call's carry.
# WSCAP (MiB, default 64): the cuDNN workspace cap of a second memory breakdown and, when the model
# steps are benchmarked, of a second run of S3-OCTA's steps ("ours@wscap<MiB>").
set -uo pipefail
cd "$(dirname "$0")/.."

baseline_sources() {  # baseline_sources <commit> <path>: prints .baseline/<commit>, which holds its <path>
  local dir=.baseline/$1
  if [ ! -e "$dir/$2" ]; then
    mkdir -p "$dir" && git archive "$1" "$2" 2>/dev/null | tar -x -C "$dir" 2>/dev/null && [ -e "$dir/$2" ] || {
      echo "no $dir/$2 (and no git history here to take it from): run, where the repository is," >&2
      echo "  BASELINE=... BASELINE_MODELS=... bash scripts/gpu_check.sh --sources, and carry .baseline" >&2
      return 1
    }
  fi
  echo "$dir"
}
if [ "${1:-}" = "--sources" ]; then
  [ -z "${BASELINE:-}" ] || baseline_sources "$BASELINE" csrc || exit 1
  [ -z "${BASELINE_MODELS:-}" ] || baseline_sources "$BASELINE_MODELS" retina || exit 1
  exit 0
fi
out=${OUT:-gpu_out}
WSCAP=${WSCAP:-64}
mkdir -p "$out" && out=$(cd "$out" && pwd)  # absolute: the BASELINE_MODELS run works in another directory
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

build() {  # build() <log>: the extension in place, from the csrc/ now in the tree
  FORCE_CUDA=1 "$python" setup.py build_ext --inplace --force >> "$1" 2>&1 || { tail -40 "$1"; echo "BUILD FAILED"; exit 1; }
}
benchmarks() {  # benchmarks <json> [pytest -k]: the benchmarks; logs to bench.log
  "$python" -m pytest -q -p no:cacheprovider benchmarks ${2:+-k "$2"} \
    --benchmark-json="$1" --benchmark-columns=min,median,max >> "$out/bench.log" 2>&1
}
: > "$out/build.log"; : > "$out/bench.log"
baseline_json=
if [ -n "${BASELINE:-}" ]; then
  echo "== baseline: the kernels of $BASELINE, built and benchmarked first"
  sources=$(baseline_sources "$BASELINE" csrc) || exit 1
  keep=$(mktemp -d) && cp -r csrc "$keep/" && rm -rf csrc && cp -r "$sources/csrc" . || exit 1
  build "$out/build.log"
  baseline_json=$(mktemp --suffix .json)
  # Only our implementations: the references do not depend on csrc/ and run once, below.
  RETINA_BENCH_LABEL=$BASELINE benchmarks "$baseline_json" \
    "${BENCH_FILTER:+($BENCH_FILTER) and }ours and not checkpointing" || { status=1; tail -30 "$out/bench.log"; }
  rm -rf csrc && cp -r "$keep/csrc" .
fi

echo "== build (CUDA, arch $TORCH_CUDA_ARCH_LIST)"
build "$out/build.log"
"$python" -c "import retina_kernels as r; b = r.backends(); print(b); assert b['cuda'] == 'CUDA' and b['cuda dsconv2d'] == 'CUDA', b"  || exit 1

echo "== tests (CUDA included)"
"$python" -m pytest -q -p no:cacheprovider tests ${TEST_FILTER:+-k "$TEST_FILTER"} 2>&1 | tee "$out/tests.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== S3-OCTA step memory by module, ours vs reference op (1x304²)"
PYTHONPATH=. "$python" scripts/memory_breakdown.py --model s3octa --size 304 --device cuda 2>&1 | tee "$out/memory.txt"
# The 1x304² step peaked 1.9 GiB above the CPU's (3.0 vs 1.2 GiB) while 4x304² did not: is it a cuDNN
# convolution workspace chosen for batch 1? The same breakdown with the workspace capped tells.
echo "== the same with cuDNN's convolution workspace capped at ${WSCAP} MiB"
CUDNN_CONV_WSCAP_DBG=$WSCAP PYTHONPATH=. "$python" scripts/memory_breakdown.py --model s3octa --size 304 \
  --device cuda 2>&1 | tee -a "$out/memory.txt"
echo "== the same with checkpointing=True (what a small GPU would run)"
PYTHONPATH=. "$python" scripts/memory_breakdown.py --model s3octa --size 304 --device cuda --checkpointing 2>&1 \
  | tee -a "$out/memory.txt"

echo "== where the time goes: dsconv2d layer and S3-OCTA step, kernel by kernel (1x304², fp32)"
for what in layer s3octa; do PYTHONPATH=. "$python" scripts/dsconv_profile.py --what $what --size 304 --device cuda; done \
  > "$out/profile.txt" 2>&1
grep "^per step" "$out/profile.txt"

echo "== benchmarks"
benchmarks "$out/bench.json" "${BENCH_FILTER:-}" || { status=1; tail -30 "$out/bench.log"; }
capped_json=
if [[ -z "${BENCH_FILTER:-}" || "$BENCH_FILTER" == *model_step* ]]; then
  echo "== S3-OCTA steps with cuDNN's workspace capped at ${WSCAP} MiB (what the cap costs in time)"
  capped_json=$(mktemp --suffix .json)
  CUDNN_CONV_WSCAP_DBG=$WSCAP RETINA_BENCH_LABEL=wscap$WSCAP benchmarks "$capped_json" \
    "model_step and s3octa and ours and not checkpointing" || { status=1; tail -30 "$out/bench.log"; }
fi
models_json=
if [ -n "${BASELINE_MODELS:-}" ]; then
  echo "== model steps with the models of $BASELINE_MODELS on this tree's kernels"
  models_json=$(mktemp --suffix .json)
  # A copy of the tree whose retina/ is that commit's (python -m puts the working directory first on
  # sys.path, so the copy's retina/ is the one imported); retina_kernels/ carries the build above.
  models_tree=$(mktemp -d)
  sources=$(baseline_sources "$BASELINE_MODELS" retina) \
    && cp -r benchmarks retina_kernels "$sources/retina" "$models_tree"/ \
    && (cd "$models_tree" && RETINA_BENCH_LABEL=models-$BASELINE_MODELS benchmarks "$models_json" \
        "model_step and ours") || { status=1; echo "BASELINE_MODELS $BASELINE_MODELS failed"; tail -30 "$out/bench.log"; }
fi
"$python" benchmarks/report.py "$out/bench.json" $baseline_json $capped_json $models_json > "$out/results.md" \
  && cat "$out/results.md"
exit $status
