"""Built-in datasets drawn on the fly by the synthetic generators: deterministic per (seed, index),
so any worker count gives the same data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..synthetic.fundus import fundus_image
from ..synthetic.octa import octa_image
from .base import Transform
from .octa import PROJECTIONS


def _check_labels(labels: Sequence[str], known: tuple[str, ...]) -> tuple[str, ...]:
    labels = (labels,) if isinstance(labels, str) else tuple(labels)
    bad = [name for name in labels if name not in known]
    if bad or not labels:
        raise ValueError(f"labels must be a non-empty subset of {known}, got {list(labels)}")
    return labels


class _Synthetic(Dataset, ABC):
    def __init__(self, length: int, seed: int, transform: Optional[Transform]):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length, self.seed, self.transform = length, seed, transform

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return index % self.length

    def _finish(self, sample: dict) -> dict:
        return self.transform(sample) if self.transform is not None else sample

    @abstractmethod
    def _drawing(self) -> tuple:
        """The generator and the arguments besides the seed that fix what index i draws."""

    def sample_sources(self) -> list[tuple[str, tuple]]:
        """(id, drawing) per sample: two datasets hold the same sample when the generator draws it with
        the same arguments and seed (`retina.data.shared_samples`)."""
        kind, *arguments = self._drawing()
        return [(f"{kind}-{self.seed + i}", (kind, *arguments, self.seed + i)) for i in range(self.length)]


class SyntheticOCTA(_Synthetic):
    """`length` OCTA-like scans (`retina.data.synthetic.octa_image(size, seed + index)`).
    `image` float32 [3, H, W] (FULL, ILM_OPL, OPL_BM) or [1, H, W] with `channels=1` (FULL);
    `mask` float32 [K, H, W] for `labels` drawn from vessel, artery, vein, capillary, faz."""

    LABELS = ("vessel", "artery", "vein", "capillary", "faz")

    def __init__(self, length: int = 100, size: int = 304, *, labels: Sequence[str] = ("vessel",),
                 channels: int = 3, field_mm: float = 3.0, seed: int = 0, transform: Optional[Transform] = None):
        super().__init__(length, seed, transform)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.size, self.channels, self.field_mm = size, channels, field_mm
        self.label_names = _check_labels(labels, self.LABELS)
        # three projections are three images of a real scan (OCTA-500's layout)
        self.channel_sources = PROJECTIONS if channels == 3 else None

    def _drawing(self) -> tuple:
        return ("octa", self.size, self.field_mm)

    def __getitem__(self, index: int) -> dict:
        index = self._index(index)
        drawn = octa_image(self.size, self.seed + index, field_mm=self.field_mm)
        image = drawn.image[: self.channels]
        mask = np.stack([getattr(drawn, name) for name in self.label_names]).astype(np.float32)
        return self._finish({"image": torch.from_numpy(np.ascontiguousarray(image)), "mask": torch.from_numpy(mask),
                             "id": f"octa-{self.seed + index}", "index": index})


class SyntheticFundus(_Synthetic):
    """`length` fundus-like photographs (`retina.data.synthetic.fundus_image`). `image` float32
    [3, H, W] RGB; `mask` float32 [K, H, W] for `labels` from vessel, artery, vein, optic_disc;
    `fov` float32 [1, H, W]."""

    LABELS = ("vessel", "artery", "vein", "optic_disc")

    def __init__(self, length: int = 100, height: int = 584, width: int = 565, *,
                 labels: Sequence[str] = ("vessel",), seed: int = 0, transform: Optional[Transform] = None):
        super().__init__(length, seed, transform)
        self.height, self.width = height, width
        self.label_names = _check_labels(labels, self.LABELS)

    def _drawing(self) -> tuple:
        return ("fundus", self.height, self.width)

    def __getitem__(self, index: int) -> dict:
        index = self._index(index)
        drawn = fundus_image(self.height, self.width, self.seed + index)
        mask = np.stack([getattr(drawn, name) for name in self.label_names]).astype(np.float32)
        return self._finish({"image": torch.from_numpy(drawn.image), "mask": torch.from_numpy(mask),
                             "fov": torch.from_numpy(drawn.fov[None].astype(np.float32)),
                             "id": f"fundus-{self.seed + index}", "index": index})
