#!/usr/bin/env bash
# Creates ./.venv (unless it exists) with the pinned CPU torch, then builds and installs retina into it
# (editable, with the test extras). Idempotent: a second run only rebuilds what changed.
#   PYTHON=python3.11 RETINA_VENV=.venv RETINA_TORCH=torch==2.13.0 bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${RETINA_VENV:-.venv}
torch_spec=${RETINA_TORCH:-torch==2.13.0}

if [ ! -x "$venv/bin/python" ]; then
  echo "setup_env: creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup_env: installing $torch_spec"
  "${pip[@]}" "$torch_spec"
fi
# The extension is built against the torch in the venv, hence no build isolation.
"${pip[@]}" setuptools wheel ninja
echo "setup_env: building and installing retina (C++ extension; CUDA too where torch and a toolkit have it)"
"${pip[@]}" --no-build-isolation -e ".[test]"
"$venv/bin/python" -c "import retina_kernels; print('setup_env: backends', retina_kernels.backends())"
