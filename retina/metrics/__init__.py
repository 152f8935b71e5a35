"""Segmentation metrics on torch tensors (CPU or GPU), per image or pooled.

Overlap scores (`overlap_scores`, `confusion`), `roc_auc` and `pr_auc` pooled inside the FOV (IterNet
protocol), `iou_per_class` / `mean_iou`, `hd95`, `cldice` on hard skeletons, and topology:
`betti_numbers` (β0, β1[, β2]), `betti_errors`, `euler_characteristic` (docs/metrics.md connectivity);
`evaluate(pred, label, protocol="s3octa" | "iternet")` writes a per-image CSV and a summary.
"""

from .evaluate import PROTOCOLS, evaluate, remove_small_components
from .pixel import (
                    SCORES,
                    cldice,
                    confusion,
                    hd95,
                    iou_per_class,
                    mean_iou,
                    overlap_scores,
                    pr_auc,
                    roc_auc,
                    scores_from_confusion,
)
from .topology import betti_errors, betti_numbers, euler_characteristic

__all__ = ["PROTOCOLS", "SCORES", "betti_errors", "evaluate", "remove_small_components", "betti_numbers", "cldice",
           "confusion", "euler_characteristic", "hd95", "iou_per_class", "mean_iou", "overlap_scores", "pr_auc", "roc_auc",
           "scores_from_confusion"]
