#!/usr/bin/env bash
# Builds the wheel as a user would (`pip wheel --no-build-isolation .`, against the torch of PYTHON's
# environment), installs it into a new, empty virtual environment with the pinned torch, and runs a smoke
# test there, outside the repository: a file the wheel misses (a module, the compiled extension) fails it.
#   bash scripts/wheel_smoke.sh [python]     (default .venv/bin/python; RETINA_TORCH as setup_env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
torch_spec=${RETINA_TORCH:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "wheel_smoke: building the wheel"
"$python" -m pip wheel --quiet --disable-pip-version-check --no-build-isolation --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/retina-*.whl)
echo "wheel_smoke: $(basename "$wheel"): installing into a new virtual environment"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$torch_spec" "$wheel"
cd "$work"  # not the repository: the installed files must be the ones imported
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys, torch
import retina, retina_kernels
from retina.data import vessel_mask

venv = sys.argv[1]
for module in (retina, retina_kernels):
    assert module.__file__.startswith(venv), f"{module.__name__} imported from {module.__file__}, not the wheel"
info = retina_kernels.backends()
assert info["extension"] == "loaded" and info["cpu"] == "C++", info
mask = torch.from_numpy(vessel_mask(96, 96, seed=0))[None, None]
skeleton = retina_kernels.skeletonize(mask)
assert skeleton.shape == mask.shape and 0 < skeleton.sum() < mask.sum()
assert torch.equal(retina.metrics.betti_numbers(skeleton), retina.metrics.betti_numbers(mask))
model = retina.models.create("unet", width=4, depth=2)
assert model(torch.rand(1, 1, 20, 20)).shape == (1, 1, 20, 20)
print("wheel_smoke: ok", info)
PY
