import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

# Without a GPU the Triton kernels run under Triton's interpreter on CPU tensors; the variable must be
# set before triton is first imported (retina_kernels imports it only where CUDA is available).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture
def golden():
    """Loads tests/goldens/<name>.npz (copied from shared/goldens: outputs of the public references)."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(GOLDENS / f"{name}.npz") as data:
            return {k: data[k] for k in data.files}

    return load


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh)")


@pytest.hookimpl(tryfirst=True)  # before -k selects: the marker must be there when it does
def pytest_collection_modifyitems(items):
    # Every test that needs a GPU carries the `cuda` marker, whatever its name, so scripts/gpu_check.sh's
    # TEST_FILTER=cuda selects it (a test named without "cuda" was nearly left out of a GPU run).
    for item in items:
        if any(mark == requires_cuda.mark for mark in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.cuda)


@contextmanager
def torch_threads(n: int):
    """torch.set_num_threads(n) inside the block, the previous count restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def deterministic_algorithms(warn_only: bool = False):
    """torch.use_deterministic_algorithms(True, warn_only=...) inside the block, the previous mode after."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
