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


class DiceLoss(SegmentationLoss):
    """1 - soft Dice per (sample, channel): 1 - (2 sum(p t) + smooth_nr) / (sum p + sum t + smooth_dr)."""

    def __init__(self, *, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, **flags):
        super().__init__(**flags)
        self.smooth_nr, self.smooth_dr = smooth_nr, smooth_dr

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob, target = self.prepare(input, target)
        return self.reduce(1 - soft_dice(prob, target, self.smooth_nr, self.smooth_dr))


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


class DiceCELoss(SegmentationLoss):
    """Multi-class: lambda_dice * Dice(softmax) + lambda_ce * cross-entropy. Input logits [B, C, ...]."""

    def __init__(self, *, lambda_dice: float = 1.0, lambda_ce: float = 1.0, include_background: bool = True,
                 reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5):
        super().__init__(softmax=True, include_background=include_background, reduction=reduction)
        if reduction == "none":
            raise ValueError("DiceCELoss supports reduction 'mean' or 'sum'")
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.smooth_nr, self.smooth_dr = smooth_nr, smooth_dr

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = self._target_like(input, target)  # once; prepare() accepts it as a like-input target
        prob, fg_target = self.prepare(input, one_hot)
        dice = self.reduce(1 - soft_dice(prob, fg_target, self.smooth_nr, self.smooth_dr))
        ce = F.cross_entropy(input, one_hot.argmax(1), reduction=self.reduction)
        return self.lambda_dice * dice + self.lambda_ce * ce


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
