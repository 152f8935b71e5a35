"""PatchDataset: random patches are a function of (seed, epoch, index) alone, so DataLoader worker counts
do not change the data; grid patches cover every image deterministically; masks and FOV are cut with the
image; small images are padded."""

import pytest
import torch
from torch.utils.data import DataLoader

from retina.data import PatchDataset, SyntheticOCTA


def patches(dataset, workers: int) -> list[tuple]:
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, shuffle=False,
                        collate_fn=lambda batch: [(s["patch"], s["image"], s["mask"]) for s in batch])
    return [item for batch in loader for item in batch]


def test_random_patches_do_not_depend_on_the_worker_count():
    base = SyntheticOCTA(length=3, size=48, channels=1)
    dataset = PatchDataset(base, 16, per_image=4, seed=5, foreground_bias=0.5)
    single, double = patches(dataset, 0), patches(dataset, 2)
    assert len(single) == 12 and [p[0] for p in single] == [p[0] for p in double]
    for (_, image_a, mask_a), (_, image_b, mask_b) in zip(single, double):
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    corners = [p[0] for p in single]
    dataset.set_epoch(1)
    assert [p[0] for p in patches(dataset, 0)] != corners  # new patches each epoch
    dataset.set_epoch(0)
    assert [p[0] for p in patches(dataset, 0)] == corners  # and the same again for epoch 0
    # every entry is cut at the same place as the image
    sample = dataset[5]
    y, x = sample["patch"]
    whole = base[5 // 4]
    assert torch.equal(sample["image"], whole["image"][:, y : y + 16, x : x + 16])
    assert torch.equal(sample["mask"], whole["mask"][:, y : y + 16, x : x + 16])


def test_foreground_bias_centres_patches_on_vessels():
    base = SyntheticOCTA(length=2, size=64, channels=1)
    biased = PatchDataset(base, 8, per_image=40, seed=0, foreground_bias=1.0)
    plain = PatchDataset(base, 8, per_image=40, seed=0)
    share = [sum(float(d[i]["mask"].mean()) for i in range(len(d))) / len(d) for d in (biased, plain)]
    assert share[0] > share[1]


def test_grid_patches_cover_the_image_deterministically():
    base = SyntheticOCTA(length=2, size=50, channels=1)
    grid = PatchDataset(base, 16, grid=True)
    assert grid.per_image == len(grid.corners) == 25 and len(grid) == 50
    covered = torch.zeros(50, 50, dtype=torch.int64)
    for i in range(grid.per_image):
        y, x = grid[i]["patch"]
        covered[y : y + 16, x : x + 16] += 1
    assert covered.min() >= 1  # every pixel, the last patches flush with the border
    assert [grid[i]["patch"] for i in range(5)] == [PatchDataset(base, 16, grid=True)[i]["patch"] for i in range(5)]


def test_small_images_are_padded_and_bad_arguments_named():
    base = SyntheticOCTA(length=1, size=20, channels=1)
    sample = PatchDataset(base, 24)[0]
    assert sample["image"].shape == (1, 24, 24) and sample["image"][:, 20:].abs().sum() == 0
    for kwargs, message in ((dict(size=0), "size"), (dict(size=8, per_image=0), "per_image"),
                            (dict(size=8, foreground_bias=2.0), "foreground_bias")):
        with pytest.raises(ValueError, match=message):
            PatchDataset(base, **kwargs)
    with pytest.raises(IndexError):
        PatchDataset(base, 8)[1]
