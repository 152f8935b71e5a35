"""File-backed segmentation datasets: a list of records (which files make one sample) and one reader.

Every dataset returns dicts:
- `image`: float32 [C, H, W] in [0, 1] (8-bit files / 255, 16-bit / 65535);
- `mask`: float32 [K, H, W] of 0/1, one channel per requested label, or int64 [H, W] class indices;
- `fov`: float32 [1, H, W] of 0/1, where the dataset has a field-of-view mask (or estimates one);
- `id`: the sample's name; `index`: its position in the dataset (seeds per-sample augmentation).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...image_files import images_by_stem, read_image


@dataclass(frozen=True)
class Label:
    """One label channel: the file, and which pixel values are foreground (`value=None`: any nonzero
    pixel; an integer: exactly that value, as in OCTA-500's older combined label with RV=255, FAZ=100)."""

    path: Path
    value: Optional[int] = None


@dataclass(frozen=True)
class Record:
    """The files of one sample. `images` are stacked along channels (OCTA-500's three projections are
    three files); `labels` give the mask channels, or a single class-map file when `class_map` is set."""

    id: str
    images: tuple[Path, ...]
    labels: tuple[Label, ...] = ()
    fov: Optional[Path] = None


Transform = Callable[[dict], dict]


def _to_unit(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype in (np.float32, np.float64):
        return image.astype(np.float32)
    raise ValueError(f"{path}: unsupported pixel type {image.dtype} (expected 8-bit, 16-bit or float)")


def _single_channel(image: np.ndarray) -> np.ndarray:
    """[H, W] from a gray or gray-stored-as-colour image (gif and some bmp decode to 3 equal channels)."""
    if image.ndim == 2:
        return image
    image = image[..., :3]
    if (image == image[..., :1]).all():
        return image[..., 0]
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _check_size(array: np.ndarray, size: tuple[int, int], path: Path, what: str) -> None:
    if array.shape[:2] != size:
        raise ValueError(f"{path}: {what} is {array.shape[1]}x{array.shape[0]} (width x height), expected "
                         f"{size[1]}x{size[0]} like the sample's first image")


_reported_multivalued: list[Path] = []


def foreground(raw: np.ndarray, path: Path) -> np.ndarray:
    """bool [H, W]: the foreground of a binary label or FOV image in any encoding. Two values (0/1,
    0/255, any two): the larger. One value: nonzero. More (a JPEG's compression noise around 0 and 255,
    anti-aliased edges): above the midpoint of the least and greatest, with one warning, where reading
    every nonzero pixel as foreground would grow each vessel by its noisy rim."""
    if raw.dtype in (np.uint8, np.uint16):
        counts = np.bincount(raw.ravel())  # distinct values without sorting a large photograph's label
        present = np.flatnonzero(counts)
    else:
        present = np.unique(raw)
    if len(present) <= 1:
        return raw != 0
    low, high = present[0], present[-1]
    if len(present) == 2:
        return raw == high
    if not _reported_multivalued:  # once per process, not once per file and epoch
        _reported_multivalued.append(path)
        warnings.warn(f"{path}: a binary label with {len(present)} distinct values (a JPEG, or anti-aliased): read "
                      f"as foreground above {(float(low) + float(high)) / 2:g} (reported for the first such file "
                      "only)", stacklevel=2)
    return raw > (float(low) + float(high)) / 2


def read_label_file(path: Path) -> np.ndarray:
    """A label image as [H, W] integers (colour labels with equal channels are reduced to one)."""
    return _single_channel(read_image(path))


class FileDataset(Dataset):
    """Reads `records`. `gray`: images are single-channel (OCTA, OCT) rather than RGB (fundus).
    `class_map`: the one label file holds class indices (returned as int64 [H, W]). `fov_fn`, when
    given, computes a FOV from the image (float32 [C, H, W] -> bool [H, W]) for records without a file.
    `transform(sample) -> sample` runs last (augmentation, preprocessing).

    `channel_sources`: when a sample's channels come from separate images (OCTA-500's projections), their
    names in channel order; None when one image holds them all. Checkpoints record it, so that
    `retina predict` asks for one image per source rather than repeating a gray image into each."""

    channel_sources: Optional[tuple[str, ...]] = None

    def __init__(self, records: Sequence[Record], *, gray: bool, class_map: bool = False,
                 fov_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 transform: Optional[Transform] = None):
        if not records:
            raise ValueError(f"{type(self).__name__}: no samples found")
        self.records = list(records)
        files_per_sample = {len(r.images) for r in self.records}
        if self.channel_sources is None and files_per_sample != {1}:
            self.channel_sources = tuple(f"image {i + 1}" for i in range(max(files_per_sample)))
        self.gray = gray
        self.class_map = class_map
        self.fov_fn = fov_fn
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def sample_sources(self) -> list[tuple[str, tuple]]:
        """(id, image files) per sample: what `retina.data.shared_samples` compares, by content, to find
        one sample in two datasets."""
        return [(r.id, r.images) for r in self.records]

    def _read_image(self, record: Record) -> np.ndarray:
        channels, size = [], None
        for path in record.images:
            image = read_image(path)
            if self.gray:
                image = _single_channel(image)[..., None]
            elif image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            else:
                image = image[..., :3]
            if size is None:
                size = image.shape[:2]
            _check_size(image, size, path, "image")
            channels.append(_to_unit(image, path))
        return np.concatenate(channels, axis=2).transpose(2, 0, 1)

    def _read_labels(self, record: Record, size: tuple[int, int]) -> np.ndarray:
        cache: dict[Path, np.ndarray] = {}
        masks = []
        for label in record.labels:
            if label.path not in cache:
                cache[label.path] = read_label_file(label.path)
                _check_size(cache[label.path], size, label.path, "label")
            raw = cache[label.path]
            if self.class_map:
                return raw.astype(np.int64)
            masks.append(foreground(raw, label.path) if label.value is None else raw == label.value)
        return np.stack(masks).astype(np.float32)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        record = self.records[index]
        image = self._read_image(record)
        size = image.shape[1:]
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image)), "id": record.id, "index": index % len(self)}
        if record.labels:
            sample["mask"] = torch.from_numpy(self._read_labels(record, size))
        if record.fov is not None:
            fov = read_label_file(record.fov)
            _check_size(fov, size, record.fov, "FOV mask")
            sample["fov"] = torch.from_numpy(foreground(fov, record.fov).astype(np.float32)[None])
        elif self.fov_fn is not None:
            sample["fov"] = torch.from_numpy(self.fov_fn(image).astype(np.float32)[None])
        return self.transform(sample) if self.transform is not None else sample


PathLike = Union[str, Path]


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """{stem: file} of the image files in `folder` (`retina.image_files.images_by_stem`: hidden and
    non-image files skipped, two images with one stem an error)."""
    return images_by_stem(folder, what)


def pair_by_stem(images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path) -> list[str]:
    """The stems present in both folders; an image without a label (or the reverse) is an error."""
    missing = sorted(set(images) - set(labels))
    if missing:
        raise FileNotFoundError(f"no label in {label_dir} for image(s) {missing[:5]} of {image_dir}"
                                + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    extra = sorted(set(labels) - set(images))
    if extra:
        raise FileNotFoundError(f"no image in {image_dir} for label(s) {extra[:5]} of {label_dir}")
    return sorted(images)
