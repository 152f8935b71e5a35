"""Datasets kept as plain folders: a generic image/mask folder pair, CAVRI-C style cross-validation
folders, and OCT layer segmentation (class-map masks, e.g. made by `retina.data.vgg.polygons_to_masks`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

from .base import FileDataset, Label, PathLike, Record, Transform, files_by_stem, pair_by_stem


class ImageFolderDataset(FileDataset):
    """`root/images/*` and `root/masks/*` matched by file stem (optional `root/<fov>/*` FOV masks).
    `gray`: single-channel images; `class_map`: masks hold class indices (int64 [H, W]) rather than a
    binary foreground (float32 [1, H, W]).

    One folder, two datasets: `split="train"` and `split="val"` divide the stems (or `ids`) into a
    validation share of `val_fraction` (at least one sample) and the rest, by a seeded hash of each
    stem (`split_stems`): the same division on every machine and in every file order, and an image added
    later moves at most one earlier image between the two. `folds=k, fold=i`: cross-validation, fold i
    of k validates."""

    def __init__(self, root: PathLike, *, images: str = "images", masks: str = "masks", fov: Optional[str] = None,
                 gray: bool = False, class_map: bool = False, ids: Optional[list[str]] = None,
                 split: str = "all", val_fraction: float = 0.2, split_seed: int = 0, folds: Optional[int] = None,
                 fold: int = 0, transform: Optional[Transform] = None):
        root = Path(root)
        image_files = files_by_stem(root / images, "images")
        mask_files = files_by_stem(root / masks, "masks")
        stems = pair_by_stem(image_files, mask_files, root / images, root / masks)
        fov_files = None
        if fov is not None:
            fov_files = files_by_stem(root / fov, "FOV masks")
            pair_by_stem(image_files, fov_files, root / images, root / fov)
        if ids is not None:
            unknown = sorted(set(ids) - set(stems))
            if unknown:
                raise ValueError(f"ids {unknown[:5]} not in {root / images}")
            stems = list(ids)
        if split != "all":
            stems = split_stems(stems, split, val_fraction, split_seed, folds=folds, fold=fold)
        records = [Record(id=s, images=(image_files[s],), labels=(Label(mask_files[s]),),
                          fov=None if fov_files is None else fov_files[s]) for s in stems]
        super().__init__(records, gray=gray, class_map=class_map, transform=transform)


def split_stems(stems: list[str], split: str, val_fraction: float = 0.2, seed: int = 0, *,
                folds: Optional[int] = None, fold: int = 0) -> list[str]:
    """The `split` ("train" or "val") share of `stems`, each returned in the given order. Stems are ranked
    by a seeded hash: the round(len · val_fraction) first (at least one, and one fewer than all) are
    validation, the others training. Hashes rather than a shuffled list keep the division independent
    of the file order, and an image added later moves at most one earlier image between the shares.

    Cross-validation: with `folds` = k, validation is fold `fold` of k folds of equal size (±1) dealt
    round the ranking (`val_fraction` unused); the k validation shares cover every stem once."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
    if len(stems) < 2:
        raise ValueError(f"split {split!r}: {len(stems)} sample(s) cannot be divided into training and validation")
    ranked = sorted(stems, key=lambda stem: hashlib.blake2b(f"{seed}:{stem}".encode(), digest_size=8).digest())
    if folds is not None:
        if not 2 <= folds <= len(stems):
            raise ValueError(f"folds must be in [2, {len(stems)}] for {len(stems)} samples, got {folds}")
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds}), got {fold}")
        validation = set(ranked[fold::folds])
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        validation = set(ranked[:min(max(round(len(stems) * val_fraction), 1), len(stems) - 1)])
    return [stem for stem in stems if (stem in validation) == (split == "val")]


class CAVRIC(ImageFolderDataset):
    """CAVRI-C style OCT fundus reconstructions (bmp), evaluated by 6-fold cross-validation:
    `root/images/*.bmp` and `root/labels/*.bmp`, matched by stem. The samples, sorted by id, are cut
    into `folds` contiguous folds; `split="test"` is fold `fold`, `split="train"` the others."""

    def __init__(self, root: PathLike, fold: int = 0, split: str = "train", *, folds: int = 6,
                 transform: Optional[Transform] = None):
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds}), got {fold}")
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        stems = sorted(files_by_stem(Path(root) / "images", "CAVRI-C images"))
        if len(stems) < folds:
            raise ValueError(f"CAVRI-C: {len(stems)} images in {Path(root) / 'images'}, fewer than {folds} folds")
        parts = np.array_split(np.arange(len(stems)), folds)
        chosen = {"test": parts[fold], "train": np.concatenate([p for k, p in enumerate(parts) if k != fold]),
                  "all": np.arange(len(stems))}[split]
        super().__init__(root, images="images", masks="labels", gray=True,
                         ids=[stems[i] for i in chosen], transform=transform)


OCTID_LAYERS = ("background", "NFL", "GCL+IPL", "INL", "OPL", "ONL", "IS", "OS", "RPE")


class OCTLayers(ImageFolderDataset):
    """OCT B-scans with layer class maps: `root/images/*` (gray) and `root/masks/*.png` whose pixel
    values are class indices 0..len(classes)-1 (`retina convert-vgg` writes them from VGG-JSON
    polygons). `mask` is int64 [H, W]; a value outside the classes is an error naming the file.
    `split` / `val_fraction` / `split_seed` / `folds` / `fold` divide one folder as `ImageFolderDataset` does."""

    def __init__(self, root: PathLike, *, classes: tuple[str, ...] = OCTID_LAYERS, ids: Optional[list[str]] = None,
                 split: str = "all", val_fraction: float = 0.2, split_seed: int = 0, folds: Optional[int] = None,
                 fold: int = 0, transform: Optional[Transform] = None):
        self.classes = tuple(classes)
        super().__init__(root, images="images", masks="masks", gray=True, class_map=True, ids=ids, split=split,
                         val_fraction=val_fraction, split_seed=split_seed, folds=folds, fold=fold,
                         transform=transform)

    def _read_labels(self, record: Record, size: tuple[int, int]) -> np.ndarray:
        labels = super()._read_labels(record, size)
        if labels.max(initial=0) >= len(self.classes):
            raise ValueError(f"{record.labels[0].path}: class {int(labels.max())} in the mask, but only "
                             f"{len(self.classes)} classes {self.classes}")
        return labels
