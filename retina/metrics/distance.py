"""Boundary distances between binary masks: the Hausdorff distance and its percentiles.

Two conventions, each equal to the library it names (docs/metrics.md):
- `hausdorff_distance` / `hd95`: MONAI's `HausdorffDistanceMetric` — the larger of the two directed
  percentiles (or the one direction with `directed=True`); NaN when either mask is empty.
- `medpy_hd` / `medpy_hd95`: medpy's `metric.binary.hd` / `hd95`, which S3-OCTA's evaluation uses —
  hd95 takes one percentile of both directions' distances pooled.
Both take a mask's boundary as the pixels that a 3×3 cross erosion removes (the outside counts as
background) and measure exact Euclidean distances in float64, in pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .pixel import _binary

_CROSS = ndimage.generate_binary_structure(2, 1)


def boundary(mask: np.ndarray) -> np.ndarray:
    """The boundary of a 2D bool mask: the foreground pixels that a 3×3 cross erosion removes."""
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def directed_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Euclidean distances (float64, pixels) from each boundary pixel of `a` to the nearest boundary
    pixel of `b`; both 2D bool masks with foreground."""
    to_b = ndimage.distance_transform_edt(~boundary(b))
    return to_b[boundary(a)]


def _masks(pred: torch.Tensor, target: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    p, t = _binary("pred", pred, threshold).cpu().numpy(), _binary("target", target, 0.5).cpu().numpy()
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} must have the same shape")
    return p, t


def _check_percentile(percentile: float | None) -> None:
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100] or None, got {percentile}")


def hausdorff_distance(pred: torch.Tensor, target: torch.Tensor, *, percentile: float | None = None,
                       directed: bool = False, threshold: float = 0.5) -> torch.Tensor:
    """Hausdorff distance per image, MONAI's convention (`HausdorffDistanceMetric`).

    Args:
        pred, target: [N, H, W] (or [N, 1, H, W]) masks; floating `pred` is thresholded (> threshold).
        percentile: None for the maximum, else that percentile (linear interpolation, as torch.quantile)
            of the boundary distances.
        directed: only pred → target (MONAI's `directed=True`); else the larger of both directions.

    Returns:
        double [N], pixels; NaN where pred or target is empty (as MONAI, which also warns).
    """
    _check_percentile(percentile)
    out = []
    for a, b in zip(*_masks(pred, target, threshold)):
        if not a.any() or not b.any():
            out.append(float("nan"))
            continue
        directions = [directed_distances(a, b)] if directed else [directed_distances(a, b), directed_distances(b, a)]
        out.append(max(d.max() if percentile is None else np.percentile(d, percentile) for d in directions))
    return torch.tensor(out, dtype=torch.float64)


def hd95(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5, *, directed: bool = False) -> torch.Tensor:
    """95th-percentile Hausdorff distance per image, MONAI's convention: `hausdorff_distance(...,
    percentile=95)`. double [N] in pixels; NaN where either mask is empty."""
    return hausdorff_distance(pred, target, percentile=95, directed=directed, threshold=threshold)


def medpy_hd(pred: np.ndarray, target: np.ndarray) -> float:
    """medpy's `hd` of two 2D masks with foreground: the larger of the two directed maxima."""
    return float(max(directed_distances(pred, target).max(), directed_distances(target, pred).max()))


def medpy_hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """medpy's `hd95` of two 2D masks with foreground: the 95th percentile of both directions' distances
    pooled (not the larger of two percentiles, as MONAI)."""
    pooled = np.concatenate([directed_distances(pred, target), directed_distances(target, pred)])
    return float(np.percentile(pooled, 95))
