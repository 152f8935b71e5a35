"""Evaluation protocols, each computed as the code it is named after computes it (docs/metrics.md).

- "s3octa": ShellRedia/S3-OCTA's `ResultRecorder.calculate_metrics` (funcs/funcs/record/segmentation.py):
  prediction > 0.8; optionally both maps resized (nearest) to the OCTA-500 field's size; components of
  the prediction removed unless their area is >= min(50, the 10th percentile of that image's component
  areas); then per image medpy's Dice, Jaccard, Hausdorff and HD95 and clDice on scikit-image's skeleton
  (custom_metrics.py), each 0 when the prediction is empty; averaged over images.
- "iternet": conscienceli/IterNet's utils/evaluate.py on every pixel inside the FOV pooled: ROC AUC,
  the trapezoidal area under the precision-recall curve, and at score >= 0.5 accuracy, specificity,
  sensitivity, precision and F1.
- "retina": ours: > 0.5; per image the overlap scores, clDice on retina's skeleton, MONAI's HD95 and
  the Betti-0 / Betti-1 errors.
- "classes": class-index maps (OCT layers): IoU and Dice of every class, per image and pooled over all
  pixels, their means, and pixel accuracy.

Each protocol takes lists of per-image arrays (images may differ in size) and returns per-image values
({name: float64 [N]}) and a summary ({name: float}).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from .distance import hd95, medpy_hd, medpy_hd95
from .pixel import cldice, confusion, roc_auc, scores_from_confusion
from .topology import betti_errors

THRESHOLDS = {"s3octa": 0.8, "iternet": 0.5, "retina": 0.5}
# S3-OCTA's `fov` option: the OCTA-500 field's image size, to which label and prediction are resized.
FIELD_SIZES = {"3M": 304, "6M": 400}


def remove_small_components(mask: np.ndarray, min_area: int = 50, min_percent: Optional[float] = 10) -> np.ndarray:
    """S3-OCTA's post-processing of one 2D prediction: its 8-connected components are kept when their area
    is >= min(min_area, the `min_percent` percentile of the image's component areas); `min_percent=None`
    keeps those of at least `min_area` pixels. Returns bool [H, W]."""
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    if min_percent is not None and not 0 <= min_percent <= 100:
        raise ValueError(f"min_percent must be in [0, 100] or None, got {min_percent}")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.size == 0:
        return np.zeros(mask.shape, bool)
    limit = min_area if min_percent is None else min(min_area, np.percentile(areas, min_percent))
    keep = np.concatenate([[False], areas >= limit])
    return keep[labels]


def skimage_cldice(pred: np.ndarray, label: np.ndarray) -> float:
    """S3-OCTA's clDice (custom_metrics.py): skeletons by scikit-image's `skeletonize`, ratios without
    smoothing, 2·a·b / (a + b + 1e-8). Called as S3-OCTA calls it, label first; the value is symmetric."""
    from skimage.morphology import skeletonize

    def covered(mask: np.ndarray, skeleton: np.ndarray) -> float:
        return float(np.sum(mask * skeleton) / np.sum(skeleton))

    a, b = label.astype(np.uint8), pred.astype(np.uint8)
    tprec, tsens = covered(a, skeletonize(b)), covered(b, skeletonize(a))
    return 2 * tprec * tsens / (tprec + tsens + 1e-8)


def _resized(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)


def _no_report(line: str) -> None:
    pass


def _count(n: int, total: int, what: str) -> str:
    return f"{n} of {total} {what}"


def s3octa(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, threshold: float = 0.8,
           min_area: int = 50, min_percent: Optional[float] = 10, field: Optional[str] = None,
           report: Callable[[str], None] = _no_report):
    """The S3-OCTA protocol (module docstring). probs: float [H, W] per image in [0, 1]; labels: bool.
    `field`: "3M" / "6M" resizes both to 304² / 400² first (S3-OCTA's `fov` option); None leaves them.
    Where the label is empty but the prediction is not, the distances are NaN (S3-OCTA's code stops with
    medpy's error there). `report` is told how many predictions were empty (scored 0 on every metric, the
    distances included, which is not a perfect distance) and how many labels were empty."""
    if field is not None and field not in FIELD_SIZES:
        raise ValueError(f"field must be one of {sorted(FIELD_SIZES)} or None, got {field!r}")
    names = ("dice", "jaccard", "cldice", "hausdorff", "hd95")
    per_image: dict[str, list[float]] = {name: [] for name in names}
    empty_preds = empty_labels = 0
    for prob, label in zip(probs, labels):
        pred, label = prob > threshold, label.astype(bool)
        if field is not None:
            pred, label = _resized(pred, FIELD_SIZES[field]), _resized(label, FIELD_SIZES[field])
        pred = remove_small_components(pred, min_area, min_percent)
        empty_labels += not label.any()
        if not pred.any():
            empty_preds += 1
            values = dict.fromkeys(names, 0.0)
        else:
            both, total = np.count_nonzero(pred & label), np.count_nonzero(pred) + np.count_nonzero(label)
            values = {"dice": 2 * both / total, "jaccard": both / np.count_nonzero(pred | label),
                      "cldice": skimage_cldice(pred, label) if label.any() else 0.0,
                      "hausdorff": medpy_hd(label, pred) if label.any() else float("nan"),
                      "hd95": medpy_hd95(label, pred) if label.any() else float("nan")}
        for name in names:
            per_image[name].append(values[name])
    total = len(per_image["dice"])
    if empty_preds:
        report(f"{_count(empty_preds, total, 'predictions')} are empty (nothing > {threshold:g} after "
               "small-component removal): the s3octa protocol scores them 0 on every metric, hausdorff and hd95 "
               "included, as S3-OCTA's code does; a 0 distance there is not a perfect one (the retina protocol "
               "leaves such distances out as NaN and says how many)")
    if empty_labels:
        report(f"{_count(empty_labels, total, 'labels')} are empty: their hausdorff and hd95 are NaN where the "
               "prediction is not, which makes those means NaN (S3-OCTA's code stops there)")
    per_image_t = {name: torch.tensor(values, dtype=torch.float64) for name, values in per_image.items()}
    return per_image_t, {name: float(np.mean(values)) for name, values in per_image.items()}


def pr_auc_trapezoid(scores: np.ndarray, labels: np.ndarray) -> float:
    """IterNet's area under the precision-recall curve: the trapezoidal rule over scikit-learn's
    `precision_recall_curve` points (one per distinct score, plus precision 1 at recall 0), by recall.
    (Not average precision, which `retina.metrics.pr_auc` computes.)"""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of equal scores is a threshold
    tp = np.cumsum(y)[last]
    seen = (np.arange(1, s.size + 1, dtype=np.float64))[last]
    precision = np.r_[1.0, tp / seen]
    recall = np.r_[0.0, tp / y.sum()]
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))


def _pooled_confusion_scores(hard: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """IterNet's confusion-matrix scores (a ratio with an empty denominator is 0, as there)."""
    tp, fp = np.count_nonzero(hard & truth), np.count_nonzero(hard & ~truth)
    fn, tn = np.count_nonzero(~hard & truth), np.count_nonzero(~hard & ~truth)

    def ratio(num: float, den: float) -> float:
        return num / den if den else 0.0

    return {"accuracy": ratio(tp + tn, tp + fp + fn + tn), "specificity": ratio(tn, tn + fp),
            "sensitivity": ratio(tp, tp + fn), "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def iternet(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], fovs: Optional[Sequence[np.ndarray]] = None, *,
            threshold: float = 0.5):
    """The IterNet protocol (module docstring): summary pooled over every pixel inside the FOVs (every
    pixel without FOVs); per image the same scores on that image's pixels."""
    fovs = fovs if fovs is not None else [np.ones(p.shape, bool) for p in probs]
    names = ("roc_auc", "pr_auc", "accuracy", "specificity", "sensitivity", "precision", "f1")

    def scores(prob: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        out = {"roc_auc": float(roc_auc(torch.from_numpy(prob)[None], torch.from_numpy(truth)[None]))
               if 0 < truth.sum() < truth.size else float("nan"),
               "pr_auc": pr_auc_trapezoid(prob, truth) if truth.any() else float("nan")}
        out.update(_pooled_confusion_scores(prob >= threshold, truth))
        return out

    inside = [(p[f.astype(bool)].astype(np.float64), t[f.astype(bool)].astype(bool)) for p, t, f in zip(probs, labels, fovs)]
    per_image = {name: [] for name in names}
    for prob, truth in inside:
        for name, value in scores(prob, truth).items():
            per_image[name].append(value)
    summary = scores(np.concatenate([p for p, _ in inside]), np.concatenate([t for _, t in inside]))
    return {n: torch.tensor(v, dtype=torch.float64) for n, v in per_image.items()}, summary


def binarize(protocol: str, prob: np.ndarray, threshold: float) -> np.ndarray:
    """The prediction mask a protocol scores, before any post-processing: prob >= threshold for "iternet"
    (as its code compares), prob > threshold otherwise (as S3-OCTA's code and `retina predict`)."""
    return prob >= threshold if protocol == "iternet" else prob > threshold


def mean_where_defined(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def retina(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], fovs: Optional[Sequence[np.ndarray]] = None, *,
           threshold: float = 0.5, report: Callable[[str], None] = _no_report):
    """retina's own protocol: per image the overlap scores (inside the FOV when given), clDice on
    retina's skeleton, HD95 in MONAI's convention and the Betti-0 / Betti-1 errors; averaged over the
    images where defined. HD95 is NaN where the prediction or the label is empty (MONAI's convention);
    `report` is told how many predictions were empty and how many images the HD95 mean leaves out."""
    per_image: dict[str, list[float]] = {}
    empty_preds = 0
    for i, (prob, label) in enumerate(zip(probs, labels)):
        pred = binarize("retina", prob, threshold)
        empty_preds += not pred.any()
        hard, truth = torch.from_numpy(pred)[None], torch.from_numpy(label.astype(bool))[None]
        fov = None if fovs is None else torch.from_numpy(fovs[i].astype(bool))[None]
        values = {k: float(v[0]) for k, v in scores_from_confusion(confusion(hard, truth, fov)).items()}
        values["cldice"] = float(cldice(hard, truth)[0])
        values["hd95"] = float(hd95(hard, truth)[0])
        errors = betti_errors(hard, truth)[0]
        values["betti0_error"], values["betti1_error"] = float(errors[0]), float(errors[1])
        for name, value in values.items():
            per_image.setdefault(name, []).append(value)
    total = len(probs)
    if empty_preds:
        report(f"{_count(empty_preds, total, 'predictions')} are empty (nothing > {threshold:g}): their recall, "
               "dice and cldice are 0 against a non-empty label, their precision 1 (no false positive)")
    undefined = int(np.isnan(per_image.get("hd95", [])).sum())
    if undefined:
        report(f"hd95 is undefined (NaN) for {_count(undefined, total, 'images')}, whose prediction or label is "
               f"empty; its mean is over the other {total - undefined}" if undefined < total else
               "hd95 is undefined (NaN) for every image: each has an empty prediction or label")
    per_image_t = {name: torch.tensor(values, dtype=torch.float64) for name, values in per_image.items()}
    return per_image_t, {name: mean_where_defined(values) for name, values in per_image.items()}


def classes(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: Optional[int] = None, *,
            report: Callable[[str], None] = _no_report):
    """Class-index maps (OCT layers; `retina predict` writes a multi-class model's as `prob/`). preds and
    labels: integer [H, W] per image. Per image: pixel accuracy, the IoU and Dice of each class (NaN for a
    class in neither map) and their means over the classes present (miou, mdice). Summary: every pixel of
    every image pooled per class (IoU_c = sum |P_c ∩ T_c| / sum |P_c ∪ T_c|, as `iou_per_class`), their
    mean with and without class 0 (miou, miou_foreground), the pooled Dice, and the pooled pixel accuracy.
    `num_classes`: None takes the largest index found + 1 (and reports it)."""
    if num_classes is None:
        num_classes = 1 + max((int(max(p.max(), t.max())) for p, t in zip(preds, labels) if p.size), default=0)
        report(f"{num_classes} classes (the largest index found + 1; set num_classes / --classes to fix it)")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    k = num_classes
    per_image: dict[str, list[float]] = {name: [] for name in
                                         ("pixel_accuracy", "miou", "mdice", *(f"iou_{c}" for c in range(k)),
                                          *(f"dice_{c}" for c in range(k)))}
    pooled = np.zeros((k, k), np.int64)
    for pred, label in zip(preds, labels):
        for name, m in (("prediction", pred), ("label", label)):
            if m.size and (m.min() < 0 or m.max() >= k):
                raise ValueError(f"a {name} has class indices outside [0, {k}) (found {int(m.min())}..{int(m.max())})")
        joint = np.bincount((label.astype(np.int64) * k + pred).ravel(), minlength=k * k).reshape(k, k)
        pooled += joint
        scores = _class_scores(joint)
        per_image["pixel_accuracy"].append(scores["pixel_accuracy"])
        per_image["miou"].append(mean_where_defined(list(scores["iou"])))
        per_image["mdice"].append(mean_where_defined(list(scores["dice"])))
        for c in range(k):
            per_image[f"iou_{c}"].append(float(scores["iou"][c]))
            per_image[f"dice_{c}"].append(float(scores["dice"][c]))
    scores = _class_scores(pooled)
    summary = {"pixel_accuracy": scores["pixel_accuracy"], "miou": mean_where_defined(list(scores["iou"])),
               "miou_foreground": mean_where_defined(list(scores["iou"][1:])),
               "mdice": mean_where_defined(list(scores["dice"])),
               **{f"iou_{c}": float(scores["iou"][c]) for c in range(k)},
               **{f"dice_{c}": float(scores["dice"][c]) for c in range(k)}}
    return {n: torch.tensor(v, dtype=torch.float64) for n, v in per_image.items()}, summary


def _class_scores(joint: np.ndarray) -> dict:
    """IoU and Dice per class (NaN where the class is in neither map) and pixel accuracy, from the
    confusion matrix joint[label, pred]."""
    inter = np.diag(joint).astype(np.float64)
    pred_count, label_count = joint.sum(0).astype(np.float64), joint.sum(1).astype(np.float64)
    union = pred_count + label_count - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        dice = np.where(union > 0, 2 * inter / (pred_count + label_count), np.nan)
    total = joint.sum()
    return {"iou": iou, "dice": dice, "pixel_accuracy": float(inter.sum() / total) if total else float("nan")}
