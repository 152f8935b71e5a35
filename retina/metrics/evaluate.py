"""`evaluate`: score predictions against labels under a named protocol (`protocols`: "s3octa",
"iternet" as those papers' code computes them, "retina" ours); a per-image CSV and a summary.

Folders are matched by file stem (`retina.image_files.images_by_stem`). Predictions are probability
images (8-bit / 255, 16-bit / 65535); labels and FOV masks are binary in any encoding
(`retina.image_files.read_mask`). Images may differ in size from one another.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..image_files import images_by_stem, read_gray, read_mask, write_bytes_atomic
from . import protocols
from .pixel import _as_images

PROTOCOLS = (*protocols.THRESHOLDS, "classes")
remove_small_components = protocols.remove_small_components


def _probability(path: Path) -> np.ndarray:
    image = read_gray(path, "a prediction (a probability image such as retina predict's prob/)")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype)
    if scale is None:
        if image.dtype.kind != "f" or np.isnan(image).any() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"{path}: a prediction must be an 8- or 16-bit image, or floats in [0, 1]")
        return image.astype(np.float64)
    return image.astype(np.float64) / scale


Progress = Callable[[str, int, int], None]  # (stage, images done, images in all)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class _Reported:
    """A sequence whose iteration reports each item done to `progress` (the protocols loop over images)."""

    def __init__(self, items: list, stage: str, progress: Progress):
        self.items, self.stage, self.progress = items, stage, progress

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self):
        for done, item in enumerate(self.items):
            yield item
            self.progress(self.stage, done + 1, len(self.items))


BIOMARKERS = ("vessels", "faz")


def _biomarkers(kind: Union[bool, str]) -> Callable:
    from .. import biomarkers

    kind = "vessels" if kind is True else kind
    if kind not in BIOMARKERS:
        raise ValueError(f"biomarkers must be one of {list(BIOMARKERS)} (or True for vessels), got {kind!r}")
    if kind == "faz":
        return lambda mask, pixel_mm, fov: biomarkers.faz_measurements(mask, pixel_mm)  # the zone, FOV or not
    return biomarkers.vessel_measurements


def _class_map(path: Path, what: str) -> np.ndarray:
    image = read_gray(path, f"a class map ({what})")
    if image.dtype.kind not in "ui":
        raise ValueError(f"{path}: a class map ({what}) must hold integer class indices, got {image.dtype} values")
    return image.astype(np.int64)


def _load(pred: Path, label: Path, fov: Optional[Path], allow_missing: bool, report: Callable[[str], None],
          progress: Progress = _no_progress, *, class_maps: bool = False):
    """Reads matched files: predictions as probabilities and labels as binary masks, or (`class_maps`)
    both as class-index maps."""
    read_pred = (lambda path: _class_map(path, "prediction")) if class_maps else _probability
    read_truth = (lambda path: (_class_map(path, "label"), "class indices")) if class_maps else read_mask
    preds = images_by_stem(pred, "prediction folder")
    labels = images_by_stem(label, "label folder")
    if not preds:
        raise ValueError(f"prediction folder {pred} has no images")
    unlabelled = sorted(set(preds) - set(labels))
    if unlabelled:
        raise ValueError(f"no label for prediction(s) {unlabelled[:5]}{' ...' if len(unlabelled) > 5 else ''} "
                         f"in {label} (matched by file stem)")
    unpredicted = sorted(set(labels) - set(preds))
    if unpredicted and not allow_missing:
        raise ValueError(f"{len(unpredicted)} label(s) have no prediction in {pred}: {unpredicted[:5]}"
                         f"{' ...' if len(unpredicted) > 5 else ''} (score only those with one: allow_missing / "
                         "--allow-missing)")
    if unpredicted:
        report(f"scoring {len(preds)} of {len(labels)} labels: {len(unpredicted)} have no prediction "
               f"(e.g. {unpredicted[0]})")
    fovs = images_by_stem(fov, "FOV folder") if fov is not None else None
    if fovs is not None:
        missing = sorted(set(preds) - set(fovs))
        if missing:
            raise ValueError(f"no FOV mask in {fov} for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    ids, probs, truths, masks, encodings = sorted(preds), [], [], [], Counter()
    for stem in _Reported(ids, "read", progress):
        prob = read_pred(preds[stem])
        truth, encoding = read_truth(labels[stem])
        encodings[encoding] += 1
        if truth.shape != prob.shape:
            raise ValueError(f"{preds[stem]}: prediction is {prob.shape[1]}x{prob.shape[0]} (width x height) but its "
                             f"label {labels[stem]} is {truth.shape[1]}x{truth.shape[0]}")
        probs.append(prob)
        truths.append(truth)
        if fovs is not None:
            mask, _ = read_mask(fovs[stem])
            if mask.shape != prob.shape:
                raise ValueError(f"{fovs[stem]}: FOV mask is {mask.shape[1]}x{mask.shape[0]} but the prediction "
                                 f"{preds[stem]} is {prob.shape[1]}x{prob.shape[0]}")
            masks.append(mask)
    if set(encodings) - {"values {0, 255}", "class indices"}:
        report("labels read as: " + "; ".join(f"{encoding} in {n} file(s)" for encoding, n in encodings.items()))
    return ids, probs, truths, (masks if fovs is not None else None)


def _from_class_tensors(pred: torch.Tensor, label: torch.Tensor):
    p, t = _as_images("pred", pred), _as_images("label", label)
    for name, m in (("pred", p), ("label", t)):
        if m.is_floating_point() or m.dtype == torch.bool:
            raise TypeError(f"{name} must be integer class indices for the classes protocol, got {m.dtype}")
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and label {tuple(t.shape)} must have the same shape")
    return list(p.long().cpu().numpy()), list(t.long().cpu().numpy())


def _from_tensors(pred: torch.Tensor, label: torch.Tensor, fov: Optional[torch.Tensor]):
    prob, target = _as_images("pred", pred), _as_images("label", label)
    if not prob.is_floating_point():
        raise TypeError(f"pred must be probabilities (floating), got {prob.dtype}")
    if prob.numel() and (bool(torch.isnan(prob).any()) or prob.min() < 0 or prob.max() > 1):
        raise ValueError("pred must hold probabilities in [0, 1] (no NaN)")
    if prob.shape != target.shape:
        raise ValueError(f"pred {tuple(prob.shape)} and label {tuple(target.shape)} must have the same shape")
    truth = target > 0.5 if target.is_floating_point() else target != 0
    probs = list(prob.detach().double().cpu().numpy())
    truths = list(truth.cpu().numpy())
    masks = None
    if fov is not None:
        f = _as_images("fov", fov)
        f = f > 0.5 if f.is_floating_point() else f != 0
        masks = list(f.expand_as(truth).cpu().numpy())
    return probs, truths, masks


def evaluate(pred, label, *, fov=None, protocol: str = "s3octa", threshold: Optional[float] = None,
             min_area: int = 50, min_percent: Optional[float] = 10, field: Optional[str] = None,
             ids: Optional[list[str]] = None, allow_missing: bool = False,
             out_dir: str | os.PathLike | None = None, report: Callable[[str], None] = lambda line: None,
             biomarkers: Union[bool, str] = False, pixel_mm: Optional[float] = None,
             progress: Progress = _no_progress, num_classes: Optional[int] = None,
             sd: bool = False) -> dict[str, float]:
    """Scores predictions against labels.

    Args:
        pred: probabilities [N, H, W] (or [N, 1, H, W]) in [0, 1], or a folder of probability images;
            "classes": integer class maps, or a folder of them (a multi-class model's `prob/`).
        label: binary labels of the same shape, or a folder of masks (any binary encoding); "classes":
            integer class maps.
        fov: field-of-view masks (tensor or folder); "iternet" and "retina" count only pixels inside.
        protocol: "s3octa" (default), "iternet" or "retina" (docs/metrics.md, `retina.metrics.protocols`);
            "classes" for class-index maps (per-class IoU and Dice; no threshold, FOV or biomarkers).
        num_classes: "classes" only: the number of classes (None: the largest index found + 1).
        threshold: overrides the protocol's (0.8, 0.5, 0.5); in [0, 1].
        min_area, min_percent: "s3octa"'s small-component removal (S3-OCTA's 50 and 10).
        field: "s3octa" only: "3M" or "6M" resizes label and prediction to 304² / 400² (S3-OCTA's option).
        ids: names of the images for the CSV (default: file stems, or 0..N-1).
        allow_missing: folders: score only the labels that have a prediction (listed through `report`);
            otherwise a label without a prediction is an error.
        out_dir: when given, writes `per_image.csv` and `summary.json` there (atomically).
        report: called with one line for each thing worth saying (labels' encodings, skipped labels, empty
            predictions and how the protocol scored them, images an undefined distance leaves out of a mean).
        biomarkers: measurements of each image's thresholded prediction (compared as the protocol
            compares, before "s3octa"'s small-component removal: the mask `retina predict` measures) and
            of its label, as `pred_<name>` and `label_<name>` columns of `per_image.csv` and their means
            (over the images where defined) in the summary. "vessels" (or True):
            `retina.biomarkers.vessel_measurements` with `pixel_mm`, densities inside the FOV masks when
            given; "faz": the FAZ's area and shape (`faz_measurements`, the largest component).
        progress: called as (stage, images done, images in all) while files are read ("read"), scored
            ("score") and measured ("biomarkers"), for a progress bar.
        sd: adds `<metric>_sd`, the standard deviation over the images (n − 1), beside every summary value
            that is a mean over images (the "s3octa" and "retina" metrics, the biomarkers; not the pooled
            "iternet" and "classes" values), as papers report mean ± SD.

    Returns:
        The summary: {metric: value} (per-image means for "s3octa" / "retina", pooled for "iternet").
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    if protocol == "classes":
        return _evaluate_class_maps(pred, label, fov=fov, threshold=threshold, field=field, ids=ids,
                                    allow_missing=allow_missing, out_dir=out_dir, report=report,
                                    biomarkers=biomarkers, progress=progress, num_classes=num_classes)
    if num_classes is not None:
        raise ValueError(f"num_classes applies to the classes protocol only, not {protocol!r}")
    if threshold is None:
        threshold = protocols.THRESHOLDS[protocol]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if field is not None and protocol != "s3octa":
        raise ValueError(f"field applies to the s3octa protocol only, not {protocol!r}")
    if isinstance(pred, (str, os.PathLike)):
        ids, probs, truths, masks = _load(Path(pred), Path(label), Path(fov) if fov is not None else None,
                                          allow_missing, report, progress)
    else:
        probs, truths, masks = _from_tensors(pred, label, fov)
        ids = ids or [str(i) for i in range(len(probs))]
    scored = _Reported(probs, "score", progress)
    if protocol == "s3octa":
        if masks is not None:
            raise ValueError("the s3octa protocol has no field-of-view mask (S3-OCTA's code scores every pixel)")
        per_image, summary = protocols.s3octa(scored, truths, threshold=threshold, min_area=min_area,
                                              min_percent=min_percent, field=field, report=report)
    elif protocol == "retina":
        per_image, summary = protocols.retina(scored, truths, masks, threshold=threshold, report=report)
    else:
        per_image, summary = protocols.iternet(scored, truths, masks, threshold=threshold)
    if biomarkers:
        measure = _biomarkers(biomarkers)
        # The mask `retina predict` measures at this threshold, compared as the protocol compares.
        preds = [protocols.binarize(protocol, p, threshold) for p in probs]
        for side, maps in (("pred", preds), ("label", truths)):
            rows = [measure(m, pixel_mm, None if masks is None else masks[i])
                    for i, m in enumerate(_Reported(maps, f"biomarkers ({side})", progress))]
            for key in rows[0] if rows else ():
                values = [float(r[key]) for r in rows]
                per_image[f"{side}_{key}"] = values
                summary[f"{side}_{key}"] = protocols.mean_where_defined(values)
    if sd:
        summary = _with_sd(summary, per_image, protocol)
    _write_tables(out_dir, protocol, ids, per_image, summary)
    return summary


def _with_sd(summary: dict, per_image: dict, protocol: str) -> dict:
    """`summary` with `<key>_sd` after each value that is the mean of its per-image column: over the same
    images as the mean (every image for "s3octa", whose means are plain; those where defined otherwise)."""
    out = {}
    for key, value in summary.items():
        out[key] = value
        biomarker = key.startswith(("pred_", "label_"))
        if key in per_image and (biomarker or protocol in ("s3octa", "retina")):
            values = np.asarray(per_image[key], dtype=np.float64)
            if protocol != "s3octa" or biomarker:  # means taken where defined (protocols.mean_where_defined)
                values = values[~np.isnan(values)]
            out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return out


def _evaluate_class_maps(pred, label, *, fov, threshold, field, ids, allow_missing, out_dir, report, biomarkers,
                         progress, num_classes) -> dict[str, float]:
    for name, value in (("threshold", threshold), ("fov", fov), ("field", field)):
        if value is not None:
            raise ValueError(f"{name} does not apply to the classes protocol (class maps are compared as they are)")
    if biomarkers:
        raise ValueError("biomarkers do not apply to the classes protocol (retina predict measures layer thickness)")
    if isinstance(pred, (str, os.PathLike)):
        ids, preds, truths, _ = _load(Path(pred), Path(label), None, allow_missing, report, progress, class_maps=True)
    else:
        preds, truths = _from_class_tensors(pred, label)
        ids = ids or [str(i) for i in range(len(preds))]
    if num_classes is None:  # found before the scoring pass, whose progress it would otherwise run through
        num_classes = 1 + max((int(max(p.max(), t.max())) for p, t in zip(preds, truths) if p.size), default=0)
        report(f"{num_classes} classes (the largest index found + 1; set num_classes / --classes to fix it)")
    per_image, summary = protocols.classes(_Reported(preds, "score", progress), truths, num_classes, report=report)
    _write_tables(out_dir, "classes", ids, per_image, summary)
    return summary


def _write_tables(out_dir, protocol: str, ids: list[str], per_image: dict, summary: dict) -> None:
    """`per_image.csv` (one row per image) and `summary.json` in `out_dir`, atomically; nothing for None."""
    if out_dir is None:
        return
    out = Path(out_dir)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["id", *per_image])
    for row, name in enumerate(ids):
        writer.writerow([name, *(f"{float(v[row]):.6g}" for v in per_image.values())])
    write_bytes_atomic(out / "per_image.csv", table.getvalue().encode())
    write_bytes_atomic(out / "summary.json", json.dumps({"protocol": protocol, **summary}, indent=2).encode())
