"""Foveal avascular zone (FAZ) shape from a binary FAZ mask (its largest connected component):
area, perimeter, circularity, acircularity index, axis ratio.

Definitions: area in mm² (pixels · pixel_mm²); perimeter the length of the component's outer contour
(the boundary pixels' centres, smoothed by a 5-point moving average: the raw 8-connected chain runs ~5%
long on a disc); circularity 4π·area / perimeter² (1 for a
disc); acircularity index perimeter / (2·sqrt(π·area)), the perimeter over that of the disc of the same
area (Domalpally et al., Invest. Ophthalmol. Vis. Sci. 2015; 1 for a disc, larger for irregular zones);
axis ratio the major / minor axis of the ellipse with the component's second moments. The contour runs
through the boundary pixels' centres, half a pixel inside the zone's edge, so π (the growth of a convex
curve offset by 1/2) is added: a digital disc of radius r measures 2πr to 1%.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from .vessels import Array, _check_spacing, as_mask, polyline_length


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def faz_measurements(mask: Array, pixel_mm: Optional[float] = None) -> dict[str, float]:
    """{"area", "perimeter", "circularity", "acircularity_index", "axis_ratio"} of the largest FAZ
    component (area in mm² and perimeter in mm with `pixel_mm`, else pixels); NaN values when empty."""
    _check_spacing(pixel_mm)
    faz = largest_component(as_mask(mask, "faz"))
    unit = "mm" if pixel_mm else "px"
    keys = (f"area_{unit}2", f"perimeter_{unit}", "circularity", "acircularity_index", "axis_ratio")
    if not faz.any():
        return dict.fromkeys(keys, float("nan"))
    area = float(faz.sum())
    contours, _ = cv2.findContours(faz.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    # the contour runs through the boundary pixels' centres, half a pixel inside the zone's edge: offset
    # outwards by 1/2, a closed convex curve grows by 2π·(1/2)
    perimeter = max(polyline_length(c[:, 0, ::-1], closed=True) for c in contours) + math.pi
    rows, cols = np.nonzero(faz)
    covariance = np.cov(np.stack([rows, cols]).astype(float)) if len(rows) > 1 else np.zeros((2, 2))
    eigen = np.sort(np.linalg.eigvalsh(covariance + np.eye(2) / 12))  # + a pixel's own spread
    scale = pixel_mm or 1.0
    return {
        keys[0]: area * scale**2,
        keys[1]: perimeter * scale,
        "circularity": 4 * math.pi * area / perimeter**2 if perimeter > 0 else float("nan"),
        "acircularity_index": perimeter / (2 * math.sqrt(math.pi * area)),
        "axis_ratio": float(math.sqrt(eigen[1] / eigen[0])),
    }
