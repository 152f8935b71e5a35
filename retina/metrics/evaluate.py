"""`evaluate`: score predictions against labels under a named protocol; per-image CSV and a summary.

Protocols (docs/datasets.md):
- "iternet": vessel AUC / accuracy / sensitivity / specificity / F1 pooled over every test pixel inside
  the FOV, threshold 0.5.
- "s3octa": threshold 0.8, connected components smaller than `min_size` pixels removed, then Dice,
  Jaccard, clDice and HD95 per image, averaged.
Both also report per-image overlap scores and Betti-0/1 errors.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..image_files import images_by_stem, read_image, write_bytes_atomic
from .pixel import cldice, confusion, hd95, pr_auc, roc_auc, scores_from_confusion
from .topology import betti_errors

PROTOCOLS = {"iternet": 0.5, "s3octa": 0.8}


def remove_small_components(mask: torch.Tensor, min_size: int) -> torch.Tensor:
    """Drops 8-connected foreground components smaller than min_size pixels from bool [N, H, W]."""
    out = []
    for m in mask.cpu().numpy().astype(np.uint8):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_size
        keep[0] = False  # background
        out.append(keep[labels])
    return torch.from_numpy(np.stack(out)).to(mask.device) if out else mask


def _load_folder(folder: Path, label: str) -> dict[str, np.ndarray]:
    files = images_by_stem(folder, f"{label} folder")
    if not files:
        raise ValueError(f"{label} folder {folder} has no images")
    return {stem: read_image(path, grayscale=True) for stem, path in files.items()}


def _stack_folders(pred: Path, label: Path, fov: Path | None):
    preds, labels = _load_folder(pred, "prediction"), _load_folder(label, "label")
    missing = sorted(set(preds) - set(labels))
    if missing:
        raise ValueError(f"no label for prediction(s) {missing[:5]} in {label} (matched by file stem)")
    ids = sorted(preds)
    for i in ids:
        if preds[i].shape != labels[i].shape:
            raise ValueError(f"{pred / i}: prediction is {preds[i].shape} but its label is {labels[i].shape}")
    prob = torch.from_numpy(np.stack([preds[i] for i in ids])).double() / 255.0
    target = torch.from_numpy(np.stack([labels[i] for i in ids]) > 127)
    fov_t = None
    if fov is not None:
        fovs = _load_folder(fov, "FOV")
        fov_t = torch.from_numpy(np.stack([fovs[i] for i in ids]) > 127)
    return ids, prob, target, fov_t


def evaluate(pred, label, *, fov=None, protocol: str = "s3octa", min_size: int = 20, ids: list[str] | None = None,
             out_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Scores predictions against labels.

    Args:
        pred: probabilities [N, H, W] (or [N, 1, H, W]) in [0, 1], or a folder of 8-bit images
            (value / 255), matched to `label` by file stem.
        label: binary labels of the same shape, or a folder of images (> 127 = vessel).
        fov: optional field-of-view masks (tensor or folder); pixels outside are ignored by the pooled
            metrics and the confusion counts.
        protocol: "s3octa" (threshold 0.8, small components removed) or "iternet" (threshold 0.5).
        min_size: components below this many pixels are removed ("s3octa").
        ids: names of the images for the CSV (default: file stems, or 0..N-1).
        out_dir: when given, writes `per_image.csv` and `summary.json` there (atomically).

    Returns:
        The summary: per-image means of every score, plus pooled AUCs and scores for "iternet".
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    if isinstance(pred, (str, os.PathLike)):
        ids, prob, target, fov = _stack_folders(Path(pred), Path(label), Path(fov) if fov is not None else None)
    else:
        prob, target = pred, label
        if prob.dim() == 4:
            prob, target = prob[:, 0], target[:, 0] if target.dim() == 4 else target
        if not prob.is_floating_point():
            raise TypeError(f"pred must be probabilities (floating), got {prob.dtype}")
        if prob.numel() and (bool(torch.isnan(prob).any()) or prob.min() < 0 or prob.max() > 1):
            raise ValueError("pred must hold probabilities in [0, 1] (no NaN)")
        target = target > 0.5 if target.is_floating_point() else target != 0
        ids = ids or [str(i) for i in range(prob.shape[0])]
    if prob.shape != target.shape:
        raise ValueError(f"pred {tuple(prob.shape)} and label {tuple(target.shape)} must have the same shape")
    threshold = PROTOCOLS[protocol]
    hard = prob > threshold
    if protocol == "s3octa":
        hard = remove_small_components(hard, min_size)
    counts = confusion(hard, target, fov)
    per_image = scores_from_confusion(counts)
    per_image["cldice"] = cldice(hard, target)
    per_image["hd95"] = hd95(hard, target)
    errors = betti_errors(hard, target)
    per_image["betti0_error"], per_image["betti1_error"] = errors[:, 0].double(), errors[:, 1].double()
    summary = {name: float(values.double().mean()) for name, values in per_image.items()}
    if protocol == "iternet":
        pooled = scores_from_confusion(counts.sum(0))
        summary.update({f"pooled_{k}": float(v) for k, v in pooled.items()})
        summary["roc_auc"] = float(roc_auc(prob.double(), target, fov))
        summary["pr_auc"] = float(pr_auc(prob.double(), target, fov))
    if out_dir is not None:
        out = Path(out_dir)
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["id", *per_image])
        for row, name in enumerate(ids):
            writer.writerow([name, *(f"{float(v[row]):.6g}" for v in per_image.values())])
        write_bytes_atomic(out / "per_image.csv", table.getvalue().encode())
        write_bytes_atomic(out / "summary.json", json.dumps({"protocol": protocol, **summary}, indent=2).encode())
    return summary
