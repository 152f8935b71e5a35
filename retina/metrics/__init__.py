"""Segmentation metrics on torch tensors (CPU or GPU), per image or pooled.

Overlap scores (`overlap_scores`, `confusion`), `roc_auc` and `pr_auc` pooled inside the FOV (IterNet
protocol), `iou_per_class` / `mean_iou`, `hausdorff_distance` / `hd95` (MONAI's convention) and `medpy_hd95`
(medpy's, S3-OCTA's), `cldice` on hard skeletons, and topology:
`betti_numbers` (β0, β1[, β2]), `betti_errors`, `euler_characteristic` (docs/metrics.md connectivity);
`evaluate(pred, label, protocol="s3octa" | "iternet" | "retina")` writes a per-image CSV and a summary.
"""

from .distance import hausdorff_distance, hd95, medpy_hd, medpy_hd95
from .evaluate import PROTOCOLS, evaluate, remove_small_components
from .pixel import (
                    SCORES,
                    cldice,
                    confusion,
                    iou_per_class,
                    mean_iou,
                    overlap_scores,
                    pr_auc,
                    roc_auc,
                    scores_from_confusion,
)
from .topology import betti_errors, betti_numbers, euler_characteristic, skeleton_points

__all__ = ["PROTOCOLS", "SCORES", "betti_errors", "betti_numbers", "cldice", "confusion", "euler_characteristic",
           "evaluate", "hausdorff_distance", "hd95", "iou_per_class", "mean_iou", "medpy_hd", "medpy_hd95",
           "overlap_scores", "pr_auc", "remove_small_components", "roc_auc", "scores_from_confusion",
           "skeleton_points"]
