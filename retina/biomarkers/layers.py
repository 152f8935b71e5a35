"""OCT retinal layer thickness from a class map of a B-scan (rows = depth, columns = A-scans).

Classes 1..K-1 are the layers from the inner (top) to the outer retina, 0 the background (vitreous and
choroid), as `retina.data.OCTID_LAYERS`. Per A-scan (column), a layer's thickness is its pixel count in
that column (times the axial pixel size); its boundary surfaces are the rows of its first and last pixel.
A column where a layer lies above a layer that precedes it (classes out of order, read top to bottom) is
reported, and its thicknesses are left out of the means rather than silently averaged.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .vessels import Array, _check_spacing


def _class_map(classes: Array) -> np.ndarray:
    if isinstance(classes, torch.Tensor):
        classes = classes.detach().cpu().numpy()
    classes = np.asarray(classes)
    if classes.ndim != 2 or classes.dtype.kind not in "iu":
        raise ValueError(f"classes must be an integer class map [H, W], got {classes.dtype} {classes.shape}")
    return classes.astype(np.int64)


def layer_thickness(classes: Array, num_classes: int, axial_mm: Optional[float] = None,
                    names: Optional[Sequence[str]] = None) -> dict:
    """Thickness profiles and their means for layers 1..num_classes-1.

    Returns {"profiles": float [num_classes - 1, W] per-column thickness (pixels, or mm with `axial_mm`),
    "mean": {name: mean over the columns in order}, "top" / "bottom": int [num_classes - 1, W] boundary rows
    (-1 where the layer is absent), "out_of_order": the columns whose layers are not in order}."""
    _check_spacing(axial_mm)
    c = _class_map(classes)
    if c.min(initial=0) < 0 or c.max(initial=0) >= num_classes:
        raise ValueError(f"classes must lie in [0, {num_classes}), got [{c.min()}, {c.max()}]")
    layers = range(1, num_classes)
    names = list(names) if names is not None else [f"layer{k}" for k in layers]
    if len(names) == num_classes:  # names given with the background first
        names = names[1:]
    height, width = c.shape
    profiles = np.stack([(c == k).sum(0) for k in layers]).astype(float)
    rows = np.arange(height)[:, None]
    top = np.stack([np.where((c == k).any(0), np.where(c == k, rows, height).min(0), -1) for k in layers])
    bottom = np.stack([np.where((c == k).any(0), np.where(c == k, rows, -1).max(0), -1) for k in layers])
    # in order: reading a column downwards, the layer index never decreases (background aside)
    labelled = np.where(c > 0, c, 0)
    running = np.maximum.accumulate(labelled, axis=0)
    out_of_order = np.nonzero(((labelled > 0) & (labelled < running)).any(0))[0]
    ordered = np.ones(width, bool)
    ordered[out_of_order] = False
    scale = axial_mm or 1.0
    profiles *= scale
    means = {name: float(profiles[i, ordered].mean()) if ordered.any() else float("nan")
             for i, name in enumerate(names)}
    return {"profiles": profiles, "mean": means, "top": top, "bottom": bottom,
            "out_of_order": out_of_order.tolist()}
