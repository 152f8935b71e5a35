"""Data: synthetic vessels (built-in data); dataset loaders, preprocessing and augmentation come next."""

from .synthetic import TreeStyle, vessel_mask, vessel_volume

__all__ = ["TreeStyle", "vessel_mask", "vessel_volume"]
