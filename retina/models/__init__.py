"""Segmentation models; all return logits and take any H x W. Layers live in `retina.nn`.

    >>> model = retina.models.create("dscnet", in_channels=1, num_classes=1)
    >>> model.config                 # {'name': 'dscnet', 'in_channels': 1, 'num_classes': 1, 'width': 16, ...}
    >>> retina.models.create(**model.config)   # the same architecture again
"""

from __future__ import annotations

from .base import SegmentationModel, main_output, model_name, named_outputs
from .dscnet import DSCNet
from .ensemble import Ensemble
from .iternet import IterNet
from .published import PUBLISHED, import_published
from .s3octa import S3OCTA
from .unet import TwoHeadUNet, UNet
from .vessel_faz import VesselFAZNet

MODELS: dict[str, type[SegmentationModel]] = {
    model_name(cls): cls for cls in (UNet, TwoHeadUNet, DSCNet, S3OCTA, IterNet, VesselFAZNet)
}


def create(name: str, **kwargs) -> SegmentationModel:
    """Builds a model by name ("unet", "twoheadunet", "dscnet", "s3octa", "iternet", "vesselfaznet";
    case-insensitive, "-" and "_" ignored) with its keyword arguments. `create(**model.config)` rebuilds a
    model from its recorded config."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[key](**kwargs)


__all__ = ["DSCNet", "Ensemble", "IterNet", "MODELS", "PUBLISHED", "S3OCTA", "SegmentationModel", "TwoHeadUNet", "UNet",
           "VesselFAZNet", "create", "import_published", "main_output", "named_outputs"]
