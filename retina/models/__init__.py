"""Segmentation models; all return logits and take any H x W.

    >>> retina.models.create("dscnet", in_channels=1, num_classes=1)
"""

from __future__ import annotations

from torch import nn

from .dscnet import DSCNet
from .s3octa import S3OCTA
from .unet import UNet

MODELS = {"unet": UNet, "dscnet": DSCNet, "s3octa": S3OCTA}


def create(name: str, **kwargs) -> nn.Module:
    """Builds a model by name ("unet", "dscnet", "s3octa"; case-insensitive) with its keyword arguments."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[key](**kwargs)


__all__ = ["DSCNet", "MODELS", "S3OCTA", "UNet", "create"]
