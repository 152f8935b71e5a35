"""Data: datasets (OCTA-500, ROSE, DRIVE, STARE, CHASE-DB1, CAVRI-C, OCT layers, image folders,
synthetic), synthetic generators with exact labels, preprocessing and paired augmentation."""

from .augment import PairedAugment
from .datasets import (
                       CAVRIC,
                       CHASEDB1,
                       DRIVE,
                       OCTA500,
                       OCTID_LAYERS,
                       ROSE1,
                       ROSE2,
                       STARE,
                       FileDataset,
                       ImageFolderDataset,
                       OCTLayers,
                       SyntheticFundus,
                       SyntheticOCTA,
                       shared_samples,
                       split_stems,
)
from .patches import PatchDataset
from .preprocess import clahe, equalize_histogram, estimate_fov, green_channel, normalize
from .sample_preprocess import Preprocess
from .synthetic import TreeStyle, fundus_image, octa_image, vessel_mask, vessel_volume
from .synthetic_files import synthetic_label_folders, write_synthetic_dataset
from .vgg import mask_from_regions, polygons_to_masks

__all__ = ["CAVRIC", "CHASEDB1", "DRIVE", "FileDataset", "ImageFolderDataset", "OCTA500", "OCTID_LAYERS", "OCTLayers",
           "PairedAugment", "PatchDataset", "Preprocess", "ROSE1", "ROSE2", "STARE", "SyntheticFundus", "SyntheticOCTA",
           "TreeStyle", "clahe",
           "equalize_histogram", "estimate_fov", "fundus_image", "green_channel", "mask_from_regions", "normalize",
           "shared_samples", "split_stems",
           "octa_image", "polygons_to_masks", "synthetic_label_folders", "vessel_mask", "vessel_volume",
           "write_synthetic_dataset"]
