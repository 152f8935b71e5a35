"""OCTA datasets: OCTA-500, ROSE-1, ROSE-2 (layouts of docs/datasets.md; none can be downloaded here, so
each is tested on a generated tree of the same layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from .base import FileDataset, Label, PathLike, Record, Transform, files_by_stem, pair_by_stem, require_dir

# id ranges, inclusive
OCTA500_IDS = {"3M": (10301, 10500), "6M": (10001, 10300)}
OCTA500_SPLITS = {
    "3M": {"train": (10301, 10440), "val": (10441, 10450), "test": (10451, 10500)},
    "6M": {"train": (10001, 10180), "val": (10181, 10200), "test": (10201, 10300)},
}
# folder names as released, and as several public re-packagings name them
_SUBSET_DIRS = {"3M": ("OCTA_3mm", "OCTA_3M", "OCTA-500_3M"), "6M": ("OCTA_6mm", "OCTA_6M", "OCTA-500_6M")}
_LABEL_DIRS = {
    "RV": ("RV", "GT_LargeVessel", "GT_RV"),
    "Artery": ("Artery", "GT_Artery"),
    "Vein": ("Vein", "GT_Vein"),
    "FAZ": ("FAZ", "GT_FAZ"),
    "Capillary": ("Capillary", "GT_Capillary"),
}
_COMBINED_DIRS = ("GT_RV_FAZ", "RV_FAZ", "Label")  # older releases: RV = 255 and FAZ = 100 in one image
COMBINED_VALUES = {"RV": 255, "FAZ": 100}
PROJECTIONS = ("OCTA(FULL)", "OCTA(ILM_OPL)", "OCTA(OPL_BM)")


def _find_dir(base: Path, names: Sequence[str], what: str, max_depth: int = 3) -> Path:
    """The one folder under `base` (depth <= max_depth) named like one of `names` (case-insensitive)."""
    wanted = {n.lower() for n in names}
    hits, level = [], [base]
    for _ in range(max_depth):
        level = [d for parent in level for d in sorted(parent.iterdir()) if d.is_dir()]
        hits += [d for d in level if d.name.lower() in wanted]
        if hits:
            break
    if not hits:
        raise FileNotFoundError(f"{what}: no folder named {' or '.join(names)} under {base}")
    if len(hits) > 1:
        raise ValueError(f"{what}: several folders match under {base}: {[str(h) for h in hits]}")
    return hits[0]




class OCTA500(FileDataset):
    """OCTA-500 (Li et al.). `subset` "3M" (ids 10301-10500, 304²) or "6M" (10001-10300, 400²);
    `split` "train" / "val" / "test" (3M: 140/10/50, 6M: 180/20/100) or "all".

    Layout under `root` (folders are found by name up to three levels below the subset folder, so both
    the release's `Projection Maps/` and re-packaged trees work):

        OCTA_3mm/ProjectionMaps/OCTA(FULL)/10301.bmp    (also OCTA(ILM_OPL), OCTA(OPL_BM))
        OCTA_3mm/GroundTruth/RV/10301.bmp               (also Artery, Vein, FAZ, Capillary; or GT_LargeVessel, ...)
        OCTA_3mm/GroundTruth/GT_RV_FAZ/10301.bmp        (older combined label: RV = 255, FAZ = 100)

    Without an `OCTA_3mm` / `OCTA_6mm` folder, `root` itself is searched (the flat tree S3-OCTA's code
    uses, `ProjectionMaps/OCTA(FULL)/` and `RV/` with both subsets' ids side by side).

    `projections` are the channels of `image` (default the three OCTA projections; OCT(FULL) etc. work too).
    `labels` are the channels of `mask`, from their own folders, or `combined=True` to cut RV and FAZ out
    of the older single label image. Every file of every id in the split must exist."""

    def __init__(self, root: PathLike, subset: str = "3M", split: str = "train", *,
                 labels: Sequence[str] = ("RV",), projections: Sequence[str] = PROJECTIONS,
                 combined: bool = False, transform: Optional[Transform] = None):
        if subset not in OCTA500_IDS:
            raise ValueError(f"subset must be '3M' or '6M', got {subset!r}")
        splits = OCTA500_SPLITS[subset]
        if split not in (*splits, "all"):
            raise ValueError(f"split must be one of {[*splits, 'all']}, got {split!r}")
        if isinstance(labels, str):
            labels = (labels,)
        known = COMBINED_VALUES if combined else _LABEL_DIRS
        unknown = [name for name in labels if name not in known]
        if unknown:
            raise ValueError(f"labels {unknown} not available{' in the combined label' if combined else ''}; "
                             f"choose from {list(known)}")
        base = require_dir(Path(root), "OCTA-500 root")
        # the release has one folder per subset; some re-packagings put both subsets' ids in one flat tree
        named = {n.lower() for n in _SUBSET_DIRS[subset]}
        subset_dirs = [d for d in sorted(base.iterdir()) if d.is_dir() and d.name.lower() in named]
        subset_dir = subset_dirs[0] if len(subset_dirs) == 1 else base
        image_dirs = [_find_dir(subset_dir, (name,), f"OCTA-500 projection {name}") for name in projections]
        if combined:
            combined_dir = _find_dir(subset_dir, _COMBINED_DIRS, "OCTA-500 combined label")
            label_dirs = {name: combined_dir for name in labels}
        else:
            label_dirs = {name: _find_dir(subset_dir, _LABEL_DIRS[name], f"OCTA-500 label {name}") for name in labels}

        first, last = OCTA500_IDS[subset] if split == "all" else splits[split]
        listings = {d: files_by_stem(d, "OCTA-500") for d in {*image_dirs, *label_dirs.values()}}
        records, missing = [], []
        for sample_id in map(str, range(first, last + 1)):
            images = [listings[d].get(sample_id) for d in image_dirs]
            label_files = {name: listings[d].get(sample_id) for name, d in label_dirs.items()}
            missing += [str(d / f"{sample_id}.bmp") for d, f in zip(image_dirs, images) if f is None]
            missing += [str(label_dirs[n] / f"{sample_id}.bmp") for n, f in label_files.items() if f is None]
            if all(images) and all(label_files.values()):
                records.append(Record(
                    id=sample_id, images=tuple(images),
                    labels=tuple(Label(label_files[n], COMBINED_VALUES[n] if combined else None) for n in labels)))
        if missing:
            raise FileNotFoundError(f"OCTA-500 {subset} {split} (ids {first}-{last}): {len(missing)} file(s) "
                                    f"missing, first {missing[0]}")
        self.label_names = tuple(labels)
        self.channel_sources = tuple(projections) if len(projections) > 1 else None
        super().__init__(records, gray=True, transform=transform)


def _stem_records(image_dir: Path, label_dirs: dict[str, Path]) -> list[Record]:
    images = files_by_stem(image_dir, "images")
    per_label = {name: files_by_stem(d, f"labels {name}") for name, d in label_dirs.items()}
    for name, files in per_label.items():
        pair_by_stem(images, files, image_dir, label_dirs[name])
    return [Record(id=stem, images=(images[stem],), labels=tuple(Label(per_label[n][stem]) for n in label_dirs))
            for stem in sorted(images)]


class ROSE1(FileDataset):
    """ROSE-1 (Ma et al.): 39 subjects, 304², train 30 / test 9, three en-face images per subject.

        {SVC,DVC,SVC_DVC}/{train,test}/img/*        images
        {SVC,DVC,SVC_DVC}/{train,test}/gt/*         centreline-level vessel labels ("gt")
        SVC/{train,test}/{thin_gt,thick_gt}/*       capillary- and pixel-level labels (SVC only)

    Images and labels are matched by file stem (extensions differ between folders in the release)."""

    PLEXUSES = ("SVC", "DVC", "SVC_DVC")

    def __init__(self, root: PathLike, plexus: str = "SVC", split: str = "train", *,
                 labels: Union[str, Sequence[str]] = ("gt",), transform: Optional[Transform] = None):
        if plexus not in self.PLEXUSES:
            raise ValueError(f"plexus must be one of {self.PLEXUSES}, got {plexus!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        labels = (labels,) if isinstance(labels, str) else tuple(labels)
        bad = [name for name in labels if name not in ("gt", "thin_gt", "thick_gt")]
        if bad:
            raise ValueError(f"labels {bad} unknown; choose from gt, thin_gt, thick_gt")
        base = require_dir(Path(root) / plexus / split, f"ROSE-1 {plexus} {split}")
        records = _stem_records(base / "img", {name: base / name for name in labels})
        self.label_names = labels
        super().__init__(records, gray=True, transform=transform)


class ROSE2(FileDataset):
    """ROSE-2: `{train,test}/original/*` images and `{train,test}/gt/*` vessel labels, matched by stem."""

    def __init__(self, root: PathLike, split: str = "train", *, transform: Optional[Transform] = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        base = require_dir(Path(root) / split, f"ROSE-2 {split}")
        self.label_names = ("gt",)
        super().__init__(_stem_records(base / "original", {"gt": base / "gt"}), gray=True, transform=transform)
