"""`write_synthetic_dataset`: a synthetic OCTA or fundus dataset on disk, in `ImageFolderDataset` layout
(`images/` and one folder per label, PNG), resumable."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..image_files import read_image, write_image
from .datasets.synthetic import SyntheticFundus, SyntheticOCTA
from .synthetic import fundus_image, octa_image

KINDS = ("octa", "fundus")


def synthetic_label_folders(kind: str) -> tuple[str, ...]:
    """The folders besides `images/` that `write_synthetic_dataset` writes for `kind`: every label of
    the matching dataset class (`SyntheticOCTA.LABELS`, `SyntheticFundus.LABELS`), and `fov` for fundus."""
    if kind == "octa":
        return SyntheticOCTA.LABELS
    if kind == "fundus":
        return (*SyntheticFundus.LABELS, "fov")
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def write_synthetic_dataset(out: str | os.PathLike, *, kind: str = "octa", count: int = 20, size: int = 304,
                            seed: int = 0, progress: Optional[Callable[[str], None]] = None) -> Path:
    """Writes `count` synthetic images with exact labels to `out`: `images/<kind>-<seed>.png` (OCTA: the
    FULL projection, gray; fundus: RGB) and `<label>/<kind>-<seed>.png` (0/255) for each of
    `synthetic_label_folders(kind)`; image i uses seed + i. Files are written atomically, labels before
    the image, so an image's presence marks a complete sample: a rerun (after a killed run) skips complete
    samples and redoes the rest. `progress(line)` is called about ten times. Returns `out`."""
    labels = synthetic_label_folders(kind)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    out = Path(out)
    start = time.perf_counter()
    for i in range(count):
        name = f"{kind}-{seed + i:05d}.png"
        complete = (out / "images" / name).is_file() and all((out / label / name).is_file() for label in labels)
        if complete:  # skipped only if it is what this call would write: a rerun with another size must not mix
            shape = read_image(out / "images" / name).shape[:2]
            if shape != (size, size):
                raise ValueError(f"{out / 'images' / name} is {shape[1]}x{shape[0]}, not {size}x{size}: {out} holds "
                                 "another size's dataset; write this one to another folder")
        else:
            if kind == "octa":
                sample = octa_image(size, seed + i)
                image = np.rint(sample.image[0] * 255).astype(np.uint8)  # the FULL projection
            else:
                sample = fundus_image(size, size, seed + i)
                image = np.rint(sample.image.transpose(1, 2, 0) * 255).astype(np.uint8)
            for label in labels:  # labels first: the image is the marker that a sample is complete
                write_image(out / label / name, getattr(sample, label).astype(np.uint8) * 255)
            write_image(out / "images" / name, image)
        if progress is not None and ((i + 1) % max(1, count // 10) == 0 or i + 1 == count):
            progress(f"{i + 1}/{count} images ({time.perf_counter() - start:.1f} s)")
    return out
