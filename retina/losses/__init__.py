"""Losses for thin, topology-sensitive structures (vessels, FAZ, layers), MONAI-style."""

from .losses import (
    DiceCELoss,
    DiceLoss,
    IBPclDiceLoss,
    MultiTaskLoss,
    SkeletonRecallLoss,
    SoftclDiceLoss,
    SoftDiceclDiceLoss,
)

__all__ = [
    "DiceCELoss",
    "DiceLoss",
    "IBPclDiceLoss",
    "MultiTaskLoss",
    "SkeletonRecallLoss",
    "SoftDiceclDiceLoss",
    "SoftclDiceLoss",
]
