"""Segmentation losses for thin structures. All take (input, target) as `SegmentationLoss` describes and
return a scalar (reduction "mean"/"sum") or [B, C] values ("none")."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

import retina_kernels

from ._base import SegmentationLoss, cl_dice, soft_dice, spatial_sum


def _class_weight(weight, channels: int) -> torch.Tensor | None:
    """MONAI's `weight` of the Dice terms: a scalar (every class) or one non-negative value per class."""
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=torch.float64)
    if weight.dim() == 0:
        weight = weight.repeat(channels)
    if weight.dim() != 1 or weight.shape[0] != channels:
        raise ValueError(f"weight must hold one value per class ({channels} here; without the background class when "
                         f"include_background=False), got shape {tuple(weight.shape)}")
    if weight.min() < 0:
        raise ValueError("weight must be >= 0")
    return weight


class DiceLoss(SegmentationLoss):
    """Dice loss with MONAI's arguments, meanings and values (`monai.losses.DiceLoss`).

    Per (sample, channel), or per channel with `batch=True` (sums over the batch too):
    1 - (2 Σ p t + smooth_nr) / (Σ p^k + Σ t^k + smooth_dr), k = 2 with `squared_pred` else 1; with
    `jaccard`, 1 - (2 Σ p t + smooth_nr) / (2 (Σ p^k + Σ t^k - Σ p t) + smooth_dr). `weight`: per-class
    factors of the terms (after dropping the background), as MONAI; not applied to a single channel.
    The front end's flags (include_background, to_onehot_y, sigmoid, softmax, other_act, reduction) are
    `SegmentationLoss`'s. reduction "none" returns [B, C] ([C] with `batch=True`).
    """

    def __init__(self, *, squared_pred: bool = False, jaccard: bool = False, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch: bool = False, weight=None, **flags):
        super().__init__(**flags)
        self.squared_pred, self.jaccard, self.batch = squared_pred, jaccard, batch
        self.smooth_nr, self.smooth_dr, self.weight = smooth_nr, smooth_dr, weight

    def dice_terms(self, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 - Dice per (sample, channel), or per channel with `batch`, weighted."""
        dims = [0, *range(2, prob.dim())] if self.batch else list(range(2, prob.dim()))
        power = 2 if self.squared_pred else 1
        both = torch.sum(prob * target, dim=dims)
        total = torch.sum(prob**power, dim=dims) + torch.sum(target**power, dim=dims)
        denominator = 2 * (total - both) if self.jaccard else total
        loss = 1 - (2 * both + self.smooth_nr) / (denominator + self.smooth_dr)
        if self.weight is None or target.shape[1] == 1:  # (MONAI weighs classes only when there are several)
            return loss
        return loss * _class_weight(self.weight, target.shape[1]).to(loss)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob, target = self.prepare(input, target)
        return self.reduce(self.dice_terms(prob, target))


class SoftclDiceLoss(SegmentationLoss):
    """1 - clDice with soft skeletons (Shit et al., CVPR 2021) of prediction and target, per (sample,
    channel); works for a single channel. num_iter is a real parameter (public copies ignore it)."""

    def __init__(self, *, num_iter: int = 10, smooth: float = 1.0, **flags):
        super().__init__(**flags)
        self.num_iter, self.smooth = num_iter, smooth

    def cl_dice_loss(self, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        skel_pred = retina_kernels.soft_skeleton(prob, self.num_iter)
        skel_true = retina_kernels.soft_skeleton(target, self.num_iter)
        return 1 - cl_dice(skel_pred, prob, skel_true, target, self.smooth)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob, target = self.prepare(input, target)
        return self.reduce(self.cl_dice_loss(prob, target))


class SoftDiceclDiceLoss(SoftclDiceLoss):
    """(1 - alpha) (1 - softDice) + alpha (1 - clDice), the soft-clDice paper's combined loss (smooth = 1)."""

    def __init__(self, *, num_iter: int = 10, alpha: float = 0.5, smooth: float = 1.0, **flags):
        super().__init__(num_iter=num_iter, smooth=smooth, **flags)
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob, target = self.prepare(input, target)
        dice = 1 - soft_dice(prob, target, self.smooth, self.smooth)
        return self.reduce((1 - self.alpha) * dice + self.alpha * self.cl_dice_loss(prob, target))


class IBPclDiceLoss(SegmentationLoss):
    """S3-OCTA's loss: (1 - alpha) Dice + alpha (1 - clDice), both skeletons from the differentiable
    Euler skeleton (docs/differentiable_skeleton.md). Per sample and channel, so batch elements never mix (S3-OCTA's own 2D
    copy sums neighbour counts across the batch). 2D only, like `differentiable_skeleton`.

    The target's skeleton is the binary skeleton after num_iter iterations: for a 0/1 label the
    stochastic binarisation cannot flip a pixel (|logit| = 18.4 against noise below 0.33 * 18.5)."""

    def __init__(self, *, num_iter: int = 5, alpha: float = 0.5, beta: float = 0.33, tau: float = 1.0,
                 smooth: float = 1.0, **flags):
        super().__init__(**flags)
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.num_iter, self.alpha, self.beta, self.tau, self.smooth = num_iter, alpha, beta, tau, smooth

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob, target = self.prepare(input, target)
        if prob.dim() != 4:
            raise ValueError(f"IBPclDiceLoss is 2D: input must be [B, C, H, W], got {tuple(input.shape)}")
        skel_pred = retina_kernels.differentiable_skeleton(prob, num_iter=self.num_iter, beta=self.beta, tau=self.tau)
        b, c, h, w = target.shape
        hard_target = (target > 0.5).to(torch.uint8).reshape(b * c, 1, h, w)
        skel_true = retina_kernels.skeletonize(hard_target, max_iter=self.num_iter).reshape(b, c, h, w).to(prob.dtype)
        dice = 1 - soft_dice(prob, target, self.smooth, self.smooth)
        loss = (1 - self.alpha) * dice + self.alpha * (1 - cl_dice(skel_pred, prob, skel_true, target, self.smooth))
        return self.reduce(loss)


class SkeletonRecallLoss(SegmentationLoss):
    """1 - recall of the target's binary skeleton (`skeletonize`, to convergence) by the prediction:
    1 - (sum(S_t p) + smooth) / (sum S_t + smooth), per (sample, channel). Penalises broken vessels."""

    def __init__(self, *, smooth: float = 1.0, **flags):
        super().__init__(**flags)
        self.smooth = smooth

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob, target = self.prepare(input, target)
        b, c, *spatial = target.shape
        hard = (target > 0.5).to(torch.uint8).reshape(b * c, 1, *spatial)
        skel = retina_kernels.skeletonize(hard).reshape(target.shape).to(prob.dtype)
        recall = (spatial_sum(skel * prob) + self.smooth) / (spatial_sum(skel) + self.smooth)
        return self.reduce(1 - recall)


class DiceCELoss(nn.Module):
    """lambda_dice · Dice + lambda_ce · cross-entropy, with MONAI's arguments, meanings and values
    (`monai.losses.DiceCELoss`): the Dice part is `DiceLoss` with the same flags (weight without the
    background class when include_background=False); the cross-entropy part takes the raw logits:
    `CrossEntropyLoss(weight, label_smoothing)` over C > 1 channels (a [B, 1, ...] or [B, ...] target is
    class indices; a C-channel target is used as class probabilities, as MONAI), or
    `BCEWithLogitsLoss(pos_weight=weight)` for one channel. reduction "mean" or "sum".

    For multi-class segmentation set `softmax=True` (and `to_onehot_y=True` for a class-index target, or
    leave it: retina one-hot encodes index targets unasked); for one channel, `sigmoid=True`.
    """

    def __init__(self, *, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act=None, squared_pred: bool = False, jaccard: bool = False,
                 reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch: bool = False,
                 weight=None, lambda_dice: float = 1.0, lambda_ce: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"DiceCELoss reduction must be 'mean' or 'sum', got {reduction!r}")
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice} and {lambda_ce}")
        weight = torch.as_tensor(weight) if weight is not None else None  # (its dtype kept, as MONAI)
        dice_weight = weight[1:] if weight is not None and weight.dim() == 1 and not include_background else weight
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid,
                             softmax=softmax, other_act=other_act, squared_pred=squared_pred, jaccard=jaccard,
                             reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
                             weight=dice_weight)
        self.register_buffer("weight", weight, persistent=False)
        self.reduction, self.label_smoothing = reduction, label_smoothing
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce

    def cross_entropy(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(input) if self.weight is not None else None
        if input.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(input, target.to(input.dtype), pos_weight=weight,
                                                      reduction=self.reduction)
        if target.shape[1] == 1:
            target = target[:, 0].long()
        else:
            target = target.to(input.dtype)
        return F.cross_entropy(input, target, weight=weight, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(target, torch.Tensor) and isinstance(input, torch.Tensor) and target.dim() == input.dim() - 1:
            target = target.unsqueeze(1)  # [B, *spatial] class indices
        dice = self.dice(input, target)  # (validates input and target)
        if target.shape[1] not in (1, input.shape[1]):
            raise ValueError(f"target must have 1 (class indices) or {input.shape[1]} channels, got {tuple(target.shape)}")
        return self.lambda_dice * dice + self.lambda_ce * self.cross_entropy(input, target)


class MultiTaskLoss(nn.Module):
    """Weighted sum of per-task losses, e.g. vessels and FAZ.

    `forward(inputs, targets, epoch=None)` takes dicts keyed like `losses` and returns (total, parts).
    weights: a dict of fixed weights, or "s2anet" for S²A-Net's dynamic balance of two tasks,
    alpha = 0.1 + 0.8 sin(pi/2 * epoch / total_epochs) + 0.1 (L1 - L2) / (L1 + L2) (losses detached),
    total = alpha L1 + (1 - alpha) L2 with L1, L2 the first and second task."""

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float] | str | None = None,
                 total_epochs: int | None = None):
        super().__init__()
        self.losses = nn.ModuleDict(dict(losses))
        if weights == "s2anet":
            if len(self.losses) != 2:
                raise ValueError("the s2anet balance needs exactly two tasks")
            if not total_epochs or total_epochs < 1:
                raise ValueError("the s2anet balance needs total_epochs >= 1")
        elif weights is None:
            weights = {name: 1.0 for name in self.losses}
        elif isinstance(weights, Mapping):
            if set(weights) != set(self.losses):
                raise ValueError(f"weights must name the tasks {sorted(self.losses)}, got {sorted(weights)}")
        else:
            raise ValueError(f"weights must be a dict, 's2anet' or None, got {weights!r}")
        self.weights, self.total_epochs = weights, total_epochs

    def balance(self, first: torch.Tensor, second: torch.Tensor, epoch: int) -> float:
        l1, l2 = float(first.detach()), float(second.detach())
        progress = min(max(epoch / self.total_epochs, 0.0), 1.0)
        return 0.1 + 0.8 * math.sin(math.pi / 2 * progress) + 0.1 * (l1 - l2) / (l1 + l2 + 1e-12)

    def forward(self, inputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], epoch: int | None = None):
        missing = set(self.losses) - set(inputs) | set(self.losses) - set(targets)
        if missing:
            raise ValueError(f"inputs and targets must hold every task; missing {sorted(missing)}")
        parts = {name: loss(inputs[name], targets[name]) for name, loss in self.losses.items()}
        if self.weights == "s2anet":
            if epoch is None:
                raise ValueError("the s2anet balance needs the current epoch")
            first, second = parts.values()
            alpha = self.balance(first, second, epoch)
            return alpha * first + (1 - alpha) * second, parts
        return sum(self.weights[name] * value for name, value in parts.items()), parts
