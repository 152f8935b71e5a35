"""Shared input handling of the losses: activation, target conversion, validation, reduction."""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


class SegmentationLoss(nn.Module):
    """MONAI-style front end, with MONAI's arguments and their meaning (`monai.losses.DiceLoss`).

    `forward(input, target)`: input [B, C, *spatial] (2D or 3D); target shaped like input (binary /
    one-hot, values in [0, 1]) or class indices [B, 1, *spatial] (one-hot encoded to C channels, as
    MONAI's `to_onehot_y=True`; retina also does it unasked, and takes [B, *spatial]).

    Args:
        include_background: False drops channel 0 of input and target (with one channel: a warning, and
            the channel is kept, as MONAI).
        to_onehot_y: one-hot encode a [B, 1, *spatial] class-index target (ignored, with a warning, for a
            single-channel input).
        sigmoid, softmax: activation of `input` (softmax over one channel: ignored with a warning).
        other_act: any other activation callable (instead of sigmoid / softmax).
        reduction: "mean", "sum" or "none" ([B, C] values; MONAI keeps singleton spatial dims).

    Unlike MONAI, bad values raise: NaN in input or target, probabilities outside [0, 1] when no
    activation is set, class indices outside [0, C).

    Subclasses implement forward with `prepare(input, target) -> (prob, target)` and `reduce`.
    """

    def __init__(self, *, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reduction: str = "mean"):
        super().__init__()
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("sigmoid, softmax and other_act are mutually exclusive: set at most one")
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be callable, got {type(other_act).__name__}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.sigmoid, self.softmax, self.other_act = sigmoid, softmax, other_act
        self.include_background, self.to_onehot_y, self.reduction = include_background, to_onehot_y, reduction

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated probabilities and a float target of the same shape, background dropped if asked."""
        if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("input and target must be torch.Tensors")
        if not input.is_floating_point():
            raise TypeError(f"input must be floating, got {input.dtype}")
        if input.dim() not in (4, 5):
            raise ValueError(f"input must be [B, C, H, W] or [B, C, D, H, W], got shape {tuple(input.shape)}")
        if torch.isnan(input.detach()).any():
            raise ValueError("input contains NaN")
        if target.device != input.device:
            raise ValueError(f"target is on {target.device} but input is on {input.device}")
        channels = input.shape[1]
        if self.to_onehot_y and channels == 1:
            warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=3)
        target = self._target_like(input, target)
        if self.sigmoid:
            prob = torch.sigmoid(input)
        elif self.softmax and channels > 1:
            prob = torch.softmax(input, dim=1)
        elif self.other_act is not None:
            prob = self.other_act(input)
        else:
            if self.softmax:
                warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
            elif input.numel():  # (an empty batch has no range to check)
                low, high = input.detach().min().item(), input.detach().max().item()
                if low < 0 or high > 1:
                    raise ValueError(f"input must be probabilities in [0, 1] (or set sigmoid/softmax), "
                                     f"found [{low}, {high}]")
            prob = input
        if not self.include_background:
            if channels == 1:
                warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
            else:
                prob, target = prob[:, 1:], target[:, 1:]
        return prob, target

    @staticmethod
    def _target_like(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_floating_point(target) and torch.isnan(target).any():
            raise ValueError("target contains NaN")
        if target.shape == input.shape:
            target = target.to(input.dtype)
            if target.numel() and (target.min() < 0 or target.max() > 1):
                raise ValueError("target must be in [0, 1] (binary or one-hot) when shaped like input")
            return target
        spatial = input.shape[2:]
        if target.shape == (input.shape[0], *spatial) or target.shape == (input.shape[0], 1, *spatial):
            if target.is_floating_point() and not torch.equal(target, target.round()):
                raise ValueError("a class-index target must hold integers")
            labels = target.reshape(input.shape[0], *spatial).long()
            classes = input.shape[1]
            if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
                raise ValueError(f"target class indices must be in [0, {classes - 1}], "
                                 f"found [{labels.min()}, {labels.max()}]")
            return F.one_hot(labels, classes).movedim(-1, 1).to(input.dtype)
        raise ValueError(f"target shape {tuple(target.shape)} matches neither input {tuple(input.shape)} nor a class map "
                         f"{(input.shape[0], *spatial)}")

    def reduce(self, values: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return values.mean()
        if self.reduction == "sum":
            return values.sum()
        return values


def spatial_sum(x: torch.Tensor) -> torch.Tensor:
    """[B, C, *spatial] -> [B, C]."""
    return x.flatten(2).sum(-1)


def soft_dice(prob: torch.Tensor, target: torch.Tensor, smooth_nr: float, smooth_dr: float) -> torch.Tensor:
    """[B, C] soft Dice coefficient."""
    return (2 * spatial_sum(prob * target) + smooth_nr) / (spatial_sum(prob) + spatial_sum(target) + smooth_dr)


def cl_dice(skel_pred: torch.Tensor, prob: torch.Tensor, skel_true: torch.Tensor, target: torch.Tensor,
            smooth: float) -> torch.Tensor:
    """[B, C] clDice: harmonic mean of topology precision and sensitivity (docs/soft_skeleton.md)."""
    t_prec = (spatial_sum(skel_pred * target) + smooth) / (spatial_sum(skel_pred) + smooth)
    t_sens = (spatial_sum(skel_true * prob) + smooth) / (spatial_sum(skel_true) + smooth)
    return 2 * t_prec * t_sens / (t_prec + t_sens)
