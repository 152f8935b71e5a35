#!/usr/bin/env bash
# Run on the GPU machine (device tool): builds the extension with CUDA for Hopper, runs every test
# (the CUDA ones included), a memory and a time breakdown, and the benchmarks, and writes logs and a
# results table to $OUT (8 files: the most the device tool brings back).
# Needs no network: the machine's python3 already has torch, pytest-benchmark, scikit-image, scipy, opencv.
#   device run: GIT_COMMIT=<sha> [TEST_FILTER=<pytest -k>] [TEST_TIMEOUT=<s>] [BENCH_FILTER=<pytest -k>]
#               [BASELINE=<commit>] [BASELINE_MODELS=<commit>] [INDUCTOR_TIMEOUT=<s>] bash scripts/gpu_check.sh
#   Order: build, tests, benchmarks, memory and time breakdowns, the baselines, then the CUDA inductor
#   test; results.md is rewritten after each benchmark stage, so a call cut short still brings back what
#   it measured. The CUDA inductor test compiles for minutes (H200, torch 2.11: 225 s), so it runs last,
#   for at most INDUCTOR_TIMEOUT seconds (default 300; 0 skips it), its log appended to tests.log.
#   (then copy $OUT/results.md into benchmarks/RESULTS.md)
# BASELINE: last, build the kernels (csrc/) of that commit in a copy of this tree (its Python) and run our
# rows of the same benchmarks labelled "<impl>@<commit>", so one table compares the two builds on one card;
# and profile S3-OCTA's step on them too (profile.txt, after this tree's profiles).
# BASELINE_MODELS: also run our model-step rows with the models (retina/) of that commit on this tree's
# kernels (no build), labelled "<impl>@models-<commit>", then this tree's again ("<impl>@again"): a
# Python-only change to the models, A/B/A on one card.
# The device gets a copy of the working tree without .git, so a baseline's sources go with it: first, here,
#   BASELINE=<commit> BASELINE_MODELS=<commit> bash scripts/gpu_check.sh --sources
# writes them to .baseline/<commit>/ (git-ignored); then name ".baseline" in the device call's carry.
# INFERENCE_PROOF=1: last, issue #30's proof (scripts/inference_proof.py) within GPU_LIMIT_MIB, for at most
# PROOF_TIMEOUT seconds (default 420); its table in $OUT/inference_proof.md.
# STAGES: which stages run, of "build tests bench memory profile baselines inductor proof" (default: all
# but proof, and proof with INFERENCE_PROOF=1). A session's device time is short (15 minutes, machine
# start included), so e.g. STAGES="tests bench proof" skips the diagnostics that earlier runs recorded.
# Without "build" the extension in place is reused when it has the CUDA kernels (a second call on the
# still-warm machine, csrc/ unchanged since the first), and built otherwise.
# GPU_LIMIT_MIB (default 2048): a second memory breakdown with the process limited to that much GPU
# memory, as on a small GPU: the 1x304² S3-OCTA peak was one cuDNN workspace of 2.6 GiB (H200) that
# CUDNN_CONV_WSCAP_DBG did not cap; does torch pick an algorithm that fits, and what is the peak then?
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
GPU_LIMIT_MIB=${GPU_LIMIT_MIB:-2048}
mkdir -p "$out" && out=$(cd "$out" && pwd)  # absolute: the baseline runs work in other directories
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
# The GPU image's default CXX (/opt/gcc/bin/g++) produces an extension that segfaults inside
# std::ostream when a TORCH_CHECK message is formatted (its libstdc++ differs from the one torch was
# built against); the distribution's gcc links the same libstdc++ as torch and works.
if [ -z "${RETINA_KEEP_CXX:-}" ] && [ -x /usr/bin/g++ ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
echo "compiler: ${CXX:-default}"
status=0
stage() { echo; echo "== [${SECONDS}s] $*"; }
STAGES=${STAGES:-build tests bench memory profile baselines inductor$([ "${INFERENCE_PROOF:-0}" = 0 ] || echo " proof")}
want() { [[ " $STAGES " == *" $1 "* ]]; }  # want <stage>: whether STAGES names it
echo "stages: $STAGES"

{
  date -u
  echo "commit: ${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

build() {  # build <tree>: the extension in place, from that tree's csrc/; logs to build.log
  (cd "$1" && FORCE_CUDA=1 "$python" setup.py build_ext --inplace --force) >> "$out/build.log" 2>&1 \
    || { tail -40 "$out/build.log"; echo "BUILD FAILED in $1"; return 1; }
}
benchmarks() {  # benchmarks <tree> <json> [pytest -k]: that tree's benchmarks (python -m puts the tree
  # first on sys.path, so its retina/ and retina_kernels/ are the ones imported); logs to bench.log
  (cd "$1" && "$python" -m pytest -q -p no:cacheprovider benchmarks ${3:+-k "$3"} \
    --benchmark-json="$2" --benchmark-columns=min,median,max) >> "$out/bench.log" 2>&1 \
    || { status=1; tail -30 "$out/bench.log"; }
}
# Every benchmark JSON written so far; results.md is rewritten from them after each stage, so a run cut
# short by the device's time limit still brings back the table of what it measured.
jsons=()
report() {
  local done=() json
  for json in "${jsons[@]}"; do [ -s "$json" ] && done+=("$json"); done
  [ ${#done[@]} -eq 0 ] || "$python" benchmarks/report.py "${done[@]}" > "$out/results.md"
}
baseline_tree() {  # baseline_tree <commit> <path>: prints a fresh copy of this tree (sources and build, no
  # baselines or logs) whose <path> is that commit's
  local sources tree
  sources=$(baseline_sources "$1" "$2") && tree=$(mktemp -d) || return 1
  tar -c --exclude=./.baseline --exclude=./build --exclude=./gpu_out . | tar -x -C "$tree" \
    && rm -rf "${tree:?}/$2" && cp -r "$sources/$2" "$tree/" && echo "$tree"
}
breakdown() {  # breakdown [memory_breakdown.py options]: S3-OCTA's 1x304² step on the GPU, into memory.txt
  PYTHONPATH=. "$python" scripts/memory_breakdown.py --model s3octa --size 304 --device cuda "$@" 2>&1 \
    | tee -a "$out/memory.txt"
}
: > "$out/build.log"; : > "$out/bench.log"; : > "$out/memory.txt"
# Order: what this commit must show first (build, CUDA tests, benchmarks), then the diagnostics, then
# the A/B baselines, which cost a second build.

has_cuda_kernels() {
  "$python" -c "import retina_kernels as r; b = r.backends(); print(b); assert b['cuda'] == 'CUDA' and b['cuda dsconv2d'] == 'CUDA', b"
}
if want build || ! has_cuda_kernels > /dev/null 2>&1; then
  stage "build (CUDA, arch $TORCH_CUDA_ARCH_LIST)"
  build . || exit 1
else
  stage "build: reusing the extension in place (it has the CUDA kernels)"
fi
has_cuda_kernels || exit 1

# run_tests <seconds> <pytest -k>: those tests (and TEST_FILTER's), for that long at most, so a hung test
# does not take the rest of the run with it. SIGINT, so pytest stops as on Ctrl-C and logs the test it
# was in and the summary of those that ran.
run_tests() {
  timeout --signal=INT --kill-after=30 "$1" \
    "$python" -m pytest -q -p no:cacheprovider tests -k "${TEST_FILTER:+($TEST_FILTER) and }($2)" 2>&1
}
inductor="inductor and cuda"  # the test that compiles for minutes: last (below)

if want tests; then
  stage "tests (CUDA included)"
  run_tests "${TEST_TIMEOUT:-300}" "not ($inductor)" | tee "$out/tests.log" | tail -25
  tests_rc=${PIPESTATUS[0]}
  [ "$tests_rc" -eq 0 ] || { status=1; echo "TESTS FAILED or timed out (rc $tests_rc)"; }
fi

if want bench; then
  stage "benchmarks"
  jsons+=("$out/bench.json")
  benchmarks . "$out/bench.json" "${BENCH_FILTER:-}"
  report
fi

if want memory; then
  stage "S3-OCTA step memory by module, ours vs reference op (1x304²)"
  breakdown
  stage "the same with the process limited to ${GPU_LIMIT_MIB} MiB of GPU memory (a small GPU)"
  breakdown --gpu-limit-mib "$GPU_LIMIT_MIB"
  stage "the same with checkpointing=True (what a small GPU would run)"
  breakdown --checkpointing
fi

if want profile; then
  stage "where the time goes: dsconv2d layer, S3-OCTA and DSCNet steps, kernel by kernel (1x304², fp32)"
  for what in layer s3octa dscnet; do PYTHONPATH=. "$python" scripts/dsconv_profile.py --what $what --size 304 --device cuda; done \
    > "$out/profile.txt" 2>&1
  grep "^per step" "$out/profile.txt"
fi

if want baselines && [ -n "${BASELINE_MODELS:-}" ]; then
  stage "model steps with the models of $BASELINE_MODELS on this tree's kernels"
  # A copy of the tree whose retina/ is that commit's; its retina_kernels/ holds the build above.
  if tree=$(baseline_tree "$BASELINE_MODELS" retina); then
    steps="${BENCH_FILTER:+($BENCH_FILTER) and }model_step and ours"
    jsons+=("$(mktemp --suffix .json)")
    RETINA_BENCH_LABEL=models-$BASELINE_MODELS benchmarks "$tree" "${jsons[-1]}" "$steps"
    # Then this tree's rows once more ("@again"): DSCNet's batch-1 steps (host-bound) moved by a quarter
    # between two calls on one H200, so an A/B needs the A measured on both sides of the B.
    jsons+=("$(mktemp --suffix .json)")
    RETINA_BENCH_LABEL=again benchmarks . "${jsons[-1]}" "$steps"
    report
  else
    status=1; echo "BASELINE_MODELS $BASELINE_MODELS: no sources"
  fi
fi
if want baselines && [ -n "${BASELINE:-}" ]; then
  stage "the kernels of $BASELINE, built in a copy of this tree, benchmarked"
  # Only our implementations: the references do not depend on csrc/ and ran above.
  if tree=$(baseline_tree "$BASELINE" csrc) && build "$tree"; then
    jsons+=("$(mktemp --suffix .json)")
    RETINA_BENCH_LABEL=$BASELINE benchmarks "$tree" "${jsons[-1]}" \
      "${BENCH_FILTER:+($BENCH_FILTER) and }ours and not checkpointing"
    report
    # The same S3-OCTA profile on those kernels: which of the three (forward, input and weight gradient)
    # each tile design wins, which the step times alone cannot tell.
    stage "where the time goes with the kernels of $BASELINE: S3-OCTA step (1x304², fp32)"
    { echo; echo "== the kernels of $BASELINE"; (cd "$tree" && PYTHONPATH=. "$python" scripts/dsconv_profile.py \
      --what s3octa --size 304 --device cuda); } >> "$out/profile.txt" 2>&1
    grep "^per step" "$out/profile.txt" | tail -1
  else
    status=1; echo "BASELINE $BASELINE: no sources or no build"
  fi
fi
if want inductor && [ "${INDUCTOR_TIMEOUT:-300}" -gt 0 ]; then
  stage "the CUDA inductor test (at most ${INDUCTOR_TIMEOUT:-300} s)"
  { echo; echo "== $inductor"; run_tests "${INDUCTOR_TIMEOUT:-300}" "$inductor" | grep -v "^DEBUG"; } \
    | tee -a "$out/tests.log" | tail -5
  # 5: no test selected (TEST_FILTER leaves it out)
  case ${PIPESTATUS[0]} in 0|5) ;; *) status=1; echo "THE INDUCTOR TEST FAILED or timed out" ;; esac
fi
if want proof; then
  # issue #30's proof: training and 2048²/4096² inference with the GPU limited to GPU_LIMIT_MIB
  stage "inference and training within ${GPU_LIMIT_MIB:-2048} MiB (scripts/inference_proof.py)"
  timeout "${PROOF_TIMEOUT:-420}" "$python" scripts/inference_proof.py --limit-mib "${GPU_LIMIT_MIB:-2048}" \
    --out "$out/inference_proof.md" > "$out/inference_proof.log" 2>&1 || { status=1; echo "THE INFERENCE PROOF FAILED"; }
  tail -25 "$out/inference_proof.log"
fi
stage "results"
cat "$out/results.md" 2>/dev/null
exit $status
