"""Colour fundus datasets: DRIVE, STARE, CHASE-DB1 (layouts of docs/datasets.md). STARE and CHASE-DB1 ship
no FOV masks: theirs are estimated from the image (`retina.data.preprocess.estimate_fov`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..preprocess import estimate_fov
from .base import FileDataset, Label, PathLike, Record, Transform, require_dir


def _numbered(folder: Path, pattern: str, what: str) -> dict[str, Path]:
    """{id: file} for files in `folder` whose name matches `pattern` (its first group is the id)."""
    require_dir(folder, what)
    found = {}
    for path in sorted(folder.iterdir()):
        match = re.fullmatch(pattern, path.name, flags=re.IGNORECASE)
        if match:
            found[match.group(1)] = path
    return found


def _matched(images: dict[str, Path], others: dict[str, Path], what: str, folder: Path) -> None:
    missing = sorted(set(images) - set(others))
    if missing:
        raise FileNotFoundError(f"{what}: no file in {folder} for image id(s) {missing[:5]}")


class DRIVE(FileDataset):
    """DRIVE (Staal et al.): 40 RGB tif of 565x584, training ids 21-40, test 01-20.

        {training,test}/images/21_training.tif, 01_test.tif
        {training,test}/1st_manual/21_manual1.gif         vessel labels (2nd_manual/ for the 2nd observer)
        {training,test}/mask/21_training_mask.gif          FOV masks
    """

    def __init__(self, root: PathLike, split: str = "training", *, annotator: int = 1,
                 transform: Optional[Transform] = None):
        split = {"train": "training"}.get(split, split)
        if split not in ("training", "test"):
            raise ValueError(f"split must be 'training' (or 'train') or 'test', got {split!r}")
        if annotator not in (1, 2):
            raise ValueError(f"annotator must be 1 or 2, got {annotator!r}")
        base = require_dir(Path(root) / split, f"DRIVE {split}")
        suffix = "training" if split == "training" else "test"
        images = _numbered(base / "images", rf"(\d+)_{suffix}\.tiff?", "DRIVE images")
        if not images:
            raise FileNotFoundError(f"DRIVE {split}: no *_{suffix}.tif images in {base / 'images'}")
        label_dir = base / ("1st_manual" if annotator == 1 else "2nd_manual")
        labels = _numbered(label_dir, rf"(\d+)_manual{annotator}\.gif", "DRIVE labels")
        fovs = _numbered(base / "mask", rf"(\d+)_{suffix}_mask\.gif", "DRIVE FOV masks")
        _matched(images, labels, "DRIVE labels", label_dir)
        _matched(images, fovs, "DRIVE FOV masks", base / "mask")
        records = [Record(id=i, images=(images[i],), labels=(Label(labels[i]),), fov=fovs[i]) for i in sorted(images)]
        super().__init__(records, gray=False, transform=transform)


class STARE(FileDataset):
    """STARE (Hoover et al.): 20 ppm of 700x605 (optionally .ppm.gz, as distributed), two observers.

        stare-images/im0001.ppm
        labels-ah/im0001.ah.ppm                  (observer "ah", the usual ground truth)
        labels-vk/im0001.vk.ppm

    `split`: "train" = the first 10 ids in order, "test" = the last 10 (the common split), or "all".
    FOV masks are estimated from the images."""

    def __init__(self, root: PathLike, split: str = "all", *, annotator: str = "ah",
                 transform: Optional[Transform] = None):
        if annotator not in ("ah", "vk"):
            raise ValueError(f"annotator must be 'ah' or 'vk', got {annotator!r}")
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        base = require_dir(Path(root), "STARE root")
        images = _numbered(base / "stare-images", r"(im\d+)\.ppm(?:\.gz)?", "STARE images")
        if not images:
            raise FileNotFoundError(f"STARE: no im*.ppm images in {base / 'stare-images'}")
        label_dir = base / f"labels-{annotator}"
        labels = _numbered(label_dir, rf"(im\d+)\.{annotator}\.ppm(?:\.gz)?", "STARE labels")
        _matched(images, labels, "STARE labels", label_dir)
        ids = sorted(images)
        half = len(ids) // 2
        ids = {"train": ids[:half], "test": ids[half:], "all": ids}[split]
        records = [Record(id=i, images=(images[i],), labels=(Label(labels[i]),)) for i in ids]
        super().__init__(records, gray=False, fov_fn=estimate_fov, transform=transform)


class CHASEDB1(FileDataset):
    """CHASE-DB1 (Owen et al.): 28 jpg of 999x960 (14 children, both eyes), one folder:

        Image_01L.jpg, Image_01L_1stHO.png (observer 1), Image_01L_2ndHO.png (observer 2)

    `split`: "train" = the first 20 in order, "test" = the last 8, or "all". FOVs are estimated."""

    def __init__(self, root: PathLike, split: str = "all", *, annotator: int = 1,
                 transform: Optional[Transform] = None):
        if annotator not in (1, 2):
            raise ValueError(f"annotator must be 1 or 2, got {annotator!r}")
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        base = require_dir(Path(root), "CHASE-DB1 root")
        images = _numbered(base, r"Image_(\d+[LR])\.jpg", "CHASE-DB1 images")
        if not images:
            raise FileNotFoundError(f"CHASE-DB1: no Image_*.jpg in {base}")
        tag = "1stHO" if annotator == 1 else "2ndHO"
        labels = _numbered(base, rf"Image_(\d+[LR])_{tag}\.png", "CHASE-DB1 labels")
        _matched(images, labels, f"CHASE-DB1 *_{tag}.png labels", base)
        ids = sorted(images)
        ids = {"train": ids[:20], "test": ids[20:], "all": ids}[split]
        records = [Record(id=i, images=(images[i],), labels=(Label(labels[i]),)) for i in ids]
        super().__init__(records, gray=False, fov_fn=estimate_fov, transform=transform)
