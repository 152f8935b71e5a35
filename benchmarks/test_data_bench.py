"""Data pipeline throughput: the synthetic generators on one thread (issue target: >= 50 images/s at
304²), a DRIVE-layout loader with 0 and 2 workers with and without augmentation, and batched paired
augmentation on CPU and GPU. Per-image figures are the median time / images in the group name."""

import cv2
import pytest
import torch
from conftest import DEVICES
from torch.utils.data import DataLoader

from retina.data import DRIVE, PairedAugment, fundus_image, octa_image, vessel_mask


@pytest.fixture
def one_thread():
    """The target is for one CPU core: OpenCV's own threads would blur it."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.mark.parametrize("kind,size", [("octa", (304, 304)), ("octa", (400, 400)), ("fundus", (304, 304)),
                                       ("fundus", (584, 565))])
def test_generator_throughput(measure, one_thread, kind, size):
    def make():
        for seed in range(10):
            if kind == "octa":
                octa_image(size[0], seed, field_mm=3.0 if size[0] == 304 else 6.0)
            else:
                fundus_image(*size, seed)

    measure(make, "cpu", group=f"generate 10 {kind} {size[0]}×{size[1]}, 1 thread", impl="retina", rounds=3)


def test_vessel_mask_throughput(measure, one_thread):
    measure(lambda: [vessel_mask(304, 304, seed=s) for s in range(10)], "cpu",
            group="generate 10 vessel_mask 304², 1 thread", impl="retina", rounds=3)


@pytest.fixture(scope="module")
def drive_root(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests import dataset_trees

    root = tmp_path_factory.mktemp("drive")
    dataset_trees.drive(root, 584, 565)
    return root


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("augmented", [False, True])
def test_loader_throughput(measure, drive_root, workers, augmented):
    augment = PairedAugment(rotate=180, elastic_alpha=4, contrast=0.2, noise=0.02) if augmented else None
    dataset = DRIVE(drive_root, "training", transform=augment)
    loader = DataLoader(dataset, batch_size=4, num_workers=workers)
    measure(lambda: sum(len(b["id"]) for b in loader), "cpu",
            group=f"DRIVE epoch, 20 images 584×565{' + augment' if augmented else ''}",
            impl=f"{workers} workers", rounds=3)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_augment_throughput(measure, device):
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(8, 3, 304, 304, generator=gen).to(device),
             "mask": (torch.rand(8, 2, 304, 304, generator=gen) > 0.5).float().to(device)}
    augment = PairedAugment(rotate=180, scale=0.1, elastic_alpha=4, contrast=0.2, gamma=0.2, noise=0.02)
    measure(lambda: augment.batch(batch), device, group=f"augment batch 8×3×304² {device}", impl="retina", rounds=5)
