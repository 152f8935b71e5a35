"""Pixel metrics on torch tensors (CPU or GPU): overlap scores per image or pooled, ROC-AUC and PR-AUC
pooled inside the field of view, per-class IoU, clDice on hard skeletons (distances: `distance`)."""

from __future__ import annotations

import torch

import retina_kernels

SCORES = ("dice", "jaccard", "precision", "recall", "specificity", "accuracy", "f1")


def _as_images(name: str, t: torch.Tensor) -> torch.Tensor:
    """[H, W] / [N, H, W] / [N, 1, H, W] -> [N, H, W]."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 2:
        return t[None]
    if t.dim() == 4 and t.shape[1] == 1:
        return t[:, 0]
    if t.dim() != 3:
        raise ValueError(f"{name} must be [H, W], [N, H, W] or [N, 1, H, W], got {tuple(t.shape)}")
    return t


def _binary(name: str, t: torch.Tensor, threshold: float) -> torch.Tensor:
    t = _as_images(name, t)
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name} contains NaN")
    return t > threshold if t.is_floating_point() else t != 0


def confusion(pred: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None,
              threshold: float = 0.5) -> torch.Tensor:
    """(tp, fp, fn, tn) per image, counted inside `fov` when given: long [N, 4]. Floating `pred` is
    thresholded (> threshold); integer / bool inputs are nonzero = positive."""
    p, t = _binary("pred", pred, threshold), _binary("target", target, 0.5)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must have the same shape")
    inside = torch.ones_like(p) if fov is None else _binary("fov", fov, 0.5).expand_as(p)
    counts = [(p & t & inside), (p & ~t & inside), (~p & t & inside), (~p & ~t & inside)]
    return torch.stack([c.flatten(1).sum(1) for c in counts], 1)


def scores_from_confusion(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice (= F1), Jaccard, precision, recall (sensitivity), specificity, accuracy from [..., 4] counts.
    A ratio with an empty denominator is 1 when its numerator's set is also empty (both masks empty
    agree perfectly), as in MONAI's `ignore_empty=False`."""
    tp, fp, fn, tn = (counts[..., i].double() for i in range(4))

    def ratio(num, den):
        return torch.where(den > 0, num / den.clamp(min=1), torch.ones_like(num))

    dice = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "dice": dice,
        "jaccard": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
        "f1": dice,
    }


def overlap_scores(pred, target, fov=None, threshold: float = 0.5, pooled: bool = False) -> dict[str, torch.Tensor]:
    """SCORES per image ([N] each), or over all pixels of all images when `pooled` (scalars)."""
    counts = confusion(pred, target, fov, threshold)
    return scores_from_confusion(counts.sum(0) if pooled else counts)


def _pooled_scores(prob, target, fov):
    p = _as_images("prob", prob)
    if not p.is_floating_point():
        raise TypeError("prob must be floating (scores), got " + str(p.dtype))
    if bool(torch.isnan(p).any()):
        raise ValueError("prob contains NaN")
    t = _binary("target", target, 0.5)
    if p.shape != t.shape:
        raise ValueError(f"prob {tuple(p.shape)} and target {tuple(t.shape)} must have the same shape")
    inside = torch.ones_like(t) if fov is None else _binary("fov", fov, 0.5).expand_as(t)
    scores, labels = p[inside].double(), t[inside]
    if labels.all() or not labels.any():
        raise ValueError("ROC/PR-AUC need both positive and negative pixels inside the FOV")
    return scores, labels


def roc_auc(prob: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
    """Area under the ROC curve of all pixels inside the FOV pooled over the images (IterNet protocol);
    ties count one half (the Mann-Whitney statistic with average ranks, as scikit-learn)."""
    scores, labels = _pooled_scores(prob, target, fov)
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    # Average rank of each run of equal scores.
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = average[inverse]
    n_pos = labels.sum().double()
    n_neg = labels.numel() - n_pos
    return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def pr_auc(prob: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
    """Average precision of the pooled pixels inside the FOV: Σ_n (R_n - R_{n-1}) P_n over the distinct
    score thresholds, highest first (scikit-learn's `average_precision_score`)."""
    scores, labels = _pooled_scores(prob, target, fov)
    order = torch.argsort(scores, descending=True)
    s, y = scores[order], labels[order].double()
    tp = torch.cumsum(y, 0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the end of each run of equal scores is a threshold
    tp, count = tp[last], torch.arange(1, s.numel() + 1, device=s.device, dtype=torch.float64)[last]
    precision, recall = tp / count, tp / y.sum()
    previous = torch.cat([recall.new_zeros(1), recall[:-1]])
    return ((recall - previous) * precision).sum()


def iou_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """IoU of each class of integer class maps [N, H, W] pooled over the images: double [num_classes]
    (nan for a class absent from both). mIoU = its nanmean."""
    p, t = _as_images("pred", pred).long(), _as_images("target", target).long()
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must have the same shape")
    for name, m in (("pred", p), ("target", t)):
        if m.numel() and (m.min() < 0 or m.max() >= num_classes):
            raise ValueError(f"{name} has class indices outside [0, {num_classes})")
    joint = torch.bincount((t * num_classes + p).flatten(), minlength=num_classes**2).view(num_classes, num_classes)
    inter = joint.diag().double()
    union = joint.sum(0).double() + joint.sum(1).double() - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nanmean(iou_per_class(pred, target, num_classes))


def cldice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """clDice on hard masks (the formula of docs/soft_skeleton.md; skeletons by `retina_kernels.skeletonize`
    to convergence): 2·Tprec·Tsens / (Tprec + Tsens), Tprec = |S(pred) ∩ target| / |S(pred)|, Tsens =
    |S(target) ∩ pred| / |S(target)|. double [N]; 1 when both are empty."""
    p, t = _binary("pred", pred, threshold), _binary("target", target, 0.5)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must have the same shape")
    sp = retina_kernels.skeletonize(p[:, None]).squeeze(1)
    st = retina_kernels.skeletonize(t[:, None]).squeeze(1)

    def ratio(num, den):
        return torch.where(den > 0, num / den.clamp(min=1), torch.ones_like(num))

    tprec = ratio((sp & t).flatten(1).sum(1).double(), sp.flatten(1).sum(1).double())
    tsens = ratio((st & p).flatten(1).sum(1).double(), st.flatten(1).sum(1).double())
    return torch.where(tprec + tsens > 0, 2 * tprec * tsens / (tprec + tsens).clamp(min=1e-300), torch.zeros_like(tprec))
