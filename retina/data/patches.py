"""`PatchDataset`: random (training) or grid (validation) patches of another dataset's samples."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

_SPATIAL_KEYS = ("image", "mask", "fov")


class PatchDataset(Dataset):
    """`per_image` patches of `size` x `size` from each sample of `dataset` (dicts with `image`
    [C, H, W] and optionally `mask` ([K, H, W] or [H, W]) and `fov` [1, H, W]); every spatial entry is cut
    at the same place. Item i is patch i % per_image of sample i // per_image.

    Random patches are drawn from (seed, epoch, item index), so the worker count does not change the
    data and `set_epoch(e)` gives new ones each epoch. `foreground_bias`: the probability that a patch is
    centred on a random foreground pixel of the mask's first channel (vessels are sparse). `grid=True`:
    deterministic, overlapping patches covering each image (per_image is then computed from the first
    sample's size), for validation. Images smaller than `size` are padded with zeros (and a FOV of 0).
    """

    def __init__(self, dataset: Dataset, size: int, per_image: int = 1, *, foreground_bias: float = 0.0,
                 seed: int = 0, grid: bool = False):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if not 0 <= foreground_bias <= 1:
            raise ValueError(f"foreground_bias must be in [0, 1], got {foreground_bias}")
        self.dataset, self.size, self.seed, self.grid = dataset, size, seed, grid
        self.foreground_bias, self.epoch = foreground_bias, 0
        if grid:
            h, w = dataset[0]["image"].shape[-2:]
            self.corners = [(y, x) for y in self._starts(h) for x in self._starts(w)]
            per_image = len(self.corners)
        if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
            raise ValueError(f"per_image must be a positive integer, got {per_image!r}")
        self.per_image = per_image

    def _starts(self, extent: int) -> list[int]:
        if extent <= self.size:
            return [0]
        count = -(-extent // self.size) + 1  # overlapping, so the last patch ends at the border
        return sorted({round(i * (extent - self.size) / (count - 1)) for i in range(count)})

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset) * self.per_image

    def _corner(self, sample: dict, index: int) -> tuple[int, int]:
        h, w = sample["image"].shape[-2:]
        if self.grid:
            return self.corners[index % self.per_image]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        mask = sample.get("mask")
        if self.foreground_bias and mask is not None and rng.random() < self.foreground_bias:
            first = mask if mask.dim() == 2 else mask[0]
            points = torch.nonzero(first > 0)
            if len(points):
                cy, cx = points[rng.integers(len(points))].tolist()
                return (min(max(cy - self.size // 2, 0), max(h - self.size, 0)),
                        min(max(cx - self.size // 2, 0), max(w - self.size, 0)))
        return int(rng.integers(max(h - self.size, 0) + 1)), int(rng.integers(max(w - self.size, 0) + 1))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        sample = self.dataset[index // self.per_image]
        y, x = self._corner(sample, index)
        out = dict(sample)
        for key in _SPATIAL_KEYS:
            if key in sample:
                out[key] = self._cut(sample[key], y, x)
        out["index"] = index
        out["patch"] = (y, x)
        return out

    def _cut(self, tensor: torch.Tensor, y: int, x: int) -> torch.Tensor:
        patch = tensor[..., y : y + self.size, x : x + self.size]
        short_h, short_w = self.size - patch.shape[-2], self.size - patch.shape[-1]
        if short_h or short_w:
            patch = torch.nn.functional.pad(patch, (0, short_w, 0, short_h))
        return patch.contiguous()


def patch_dataset(dataset: Dataset, size: Optional[int], per_image: int, seed: int) -> Dataset:
    """`PatchDataset(dataset, size, per_image, seed=seed)`, or the dataset itself when size is None."""
    return dataset if size is None else PatchDataset(dataset, size, per_image, seed=seed, foreground_bias=0.5)
