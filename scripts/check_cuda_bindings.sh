#!/usr/bin/env bash
# Syntax-checks the torch-facing CUDA binding files (csrc/ops/cuda/*.cpp) on a machine whose torch is a
# CPU build. Those wheels ship c10/cuda's headers but not the generated c10/cuda/impl/cuda_cmake_macros.h;
# an empty stand-in is enough for a syntax check. (The kernels themselves, csrc/core/*.cu, are compiled
# with nvcc by the CMake build.) Usage: scripts/check_cuda_bindings.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
torch_include=$("$python" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
echo "#pragma once" > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
for f in csrc/ops/cuda/*.cpp; do
  echo "check_cuda_bindings: $f"
  # shellcheck disable=SC2086
  g++ -std=c++20 -fsyntax-only -Wall -Werror -I"$stub" $torch_include -I"$cuda_home/include" "$f"
done
