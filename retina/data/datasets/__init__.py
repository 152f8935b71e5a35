"""Datasets returning dicts of `image` float32 [C, H, W], `mask` (float32 [K, H, W] or int64 [H, W]),
`fov` float32 [1, H, W] where available, `id` and `index` (see `base`)."""

from .base import FileDataset, Label, Record
from .folders import CAVRIC, OCTID_LAYERS, ImageFolderDataset, OCTLayers, split_stems
from .fundus import CHASEDB1, DRIVE, STARE
from .leakage import shared_samples
from .octa import OCTA500, OCTA500_SPLITS, ROSE1, ROSE2
from .synthetic import SyntheticFundus, SyntheticOCTA

__all__ = ["CAVRIC", "CHASEDB1", "DRIVE", "FileDataset", "ImageFolderDataset", "Label", "OCTA500", "OCTA500_SPLITS",
           "OCTID_LAYERS", "OCTLayers", "ROSE1", "ROSE2", "Record", "STARE", "SyntheticFundus", "SyntheticOCTA",
           "shared_samples", "split_stems"]
