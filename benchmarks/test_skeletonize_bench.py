"""skeletonize: ours (C++ on 1 thread and on all threads, CUDA) vs skimage (Zhang 2D, Lee 3D) and the
plain-PyTorch reference, on seeded vessel-like masks. Issue targets: CPU 1 thread >= 2x skimage Zhang
at 1024²; CUDA <= 1 ms at 1024² (>= 100x skimage) and <= 50 ms at 256³ (H100)."""

import functools

import numpy as np
import pytest
import torch
from conftest import DEVICES
from skimage.morphology import skeletonize as skimage_skeletonize

import retina_kernels
from retina.data import vessel_mask, vessel_volume
from retina_kernels.reference import skeletonize as reference

CASES_2D = {"512²": (1, 512), "1024²": (1, 1024), "2048²": (1, 2048), "8×1024²": (8, 1024)}
CASES_3D = {"128³": 128, "256³": 256}


@functools.lru_cache(maxsize=None)
def masks_2d(batch, size):
    return np.stack([vessel_mask(size, size, seed=i) for i in range(batch)])


@functools.lru_cache(maxsize=None)
def volume_3d(size):
    return vessel_volume(size, size, size, seed=0)


def single_thread(fn):
    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return run


@pytest.mark.parametrize("case", CASES_2D)
@pytest.mark.parametrize("impl", ["ours-1thread", "ours", "reference", "skimage-zhang"])
@pytest.mark.parametrize("device", DEVICES)
def test_skeletonize_2d(measure, case, impl, device):
    batch, size = CASES_2D[case]
    masks = masks_2d(batch, size)
    if impl == "skimage-zhang":
        if device != "cpu":
            pytest.skip("skimage runs on the CPU only")
        fn = lambda: [skimage_skeletonize(m) for m in masks]  # noqa: E731
    else:
        if impl == "ours-1thread" and device != "cpu":
            pytest.skip("thread count applies to the CPU")
        x = torch.from_numpy(masks[:, None]).to(torch.uint8).to(device)
        op = reference.skeletonize if impl == "reference" else retina_kernels.skeletonize
        fn = (lambda: op(x)) if impl != "ours-1thread" else single_thread(lambda: op(x))
    slow = impl == "reference" and device == "cpu"
    measure(fn, device, group=f"skeletonize 2D {case} {device}", impl=impl, rounds=2 if slow else 5)


@pytest.mark.parametrize("case", CASES_3D)
@pytest.mark.parametrize("impl", ["ours-1thread", "ours", "reference", "skimage-lee"])
@pytest.mark.parametrize("device", DEVICES)
def test_skeletonize_3d(measure, case, impl, device):
    vol = volume_3d(CASES_3D[case])
    if impl == "skimage-lee":
        if device != "cpu":
            pytest.skip("skimage runs on the CPU only")
        fn = lambda: skimage_skeletonize(vol, method="lee")  # noqa: E731
    else:
        if impl == "ours-1thread" and device != "cpu":
            pytest.skip("thread count applies to the CPU")
        if impl == "reference" and device == "cpu" and CASES_3D[case] > 128:
            pytest.skip("the plain-PyTorch 3D reference takes over 6 minutes at 256³ on 2 CPU cores; see 128³")
        x = torch.from_numpy(vol[None, None]).to(torch.uint8).to(device)
        op = reference.skeletonize if impl == "reference" else retina_kernels.skeletonize
        fn = (lambda: op(x)) if impl != "ours-1thread" else single_thread(lambda: op(x))
    slow = impl in ("reference", "skimage-lee")
    measure(fn, device, group=f"skeletonize 3D {case} {device}", impl=impl, rounds=1 if slow else 3, warmup=0 if slow else 1)
