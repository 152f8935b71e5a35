"""OCTA vessel measurements from a binary vessel mask: area and skeleton density, vessel diameter index,
box-counting fractal dimension, branch tortuosity, branch points and endpoints.

Definitions (each per image; `pixel_mm` is the side of a pixel in mm, e.g. 3 mm / 304 px for OCTA-500 3M):
- vessel area density (VAD, "vessel density"): vessel pixels / pixels inside the field of view
  (Chu et al., J. Biomed. Opt. 2016, "Quantitative assessment of the retinal microvasculature using OCTA").
- vessel skeleton density (VSD, "vessel length density"): skeleton length / field area, in mm⁻¹
  (same reference). The skeleton is retina's own (`retina_kernels.skeletonize`); its length sums the
  steps between 8-connected skeleton pixels (1 or √2 pixels).
- vessel diameter index (VDI): vessel area / skeleton length, the mean vessel calibre, in mm (same
  reference).
- fractal dimension: the box-counting dimension of the mask, the slope of log N(s) against log(1/s) over
  box sides s = 2, 4, ..., ≤ min(H, W) / 4 (Mandelbrot; Zahid et al., 2016 for OCTA).
- tortuosity: per branch of the skeleton (the pieces between junctions and endpoints), arc length /
  chord length; reported as the mean over branches with a chord of at least `min_chord` pixels
  (Hart et al., Int. J. Med. Inform. 1999, measure τ1). Arc lengths are measured on the branch smoothed
  by a 5-point moving average (`polyline_length`): a straight vessel measures 1, a semicircle π/2 to 1%.
- branch points and endpoints: junction clusters and endpoints of the skeleton
  (`retina.metrics.skeleton_points`: a junction is counted once, not once per pixel around it).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

import retina_kernels

from ..metrics import skeleton_points

Array = Union[np.ndarray, torch.Tensor]
_STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def as_mask(mask: Array, name: str = "mask") -> np.ndarray:
    """bool [H, W] from a torch tensor or numpy array ([H, W], or [1, H, W]); nonzero is foreground."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"{name} must be [H, W] (or [1, H, W]), got shape {mask.shape}")
    if mask.dtype.kind == "f" and np.isnan(mask).any():
        raise ValueError(f"{name} contains NaN")
    return mask != 0


def _check_spacing(pixel_mm: Optional[float]) -> None:
    if pixel_mm is not None and not (isinstance(pixel_mm, (int, float)) and pixel_mm > 0 and math.isfinite(pixel_mm)):
        raise ValueError(f"pixel_mm must be a positive number (mm per pixel), got {pixel_mm!r}")


def skeleton_of(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: retina's topology-preserving skeleton of a binary mask."""
    tensor = torch.from_numpy(mask.astype(np.uint8))[None, None]
    return retina_kernels.skeletonize(tensor)[0, 0].numpy().astype(bool)


def skeleton_length(skeleton: np.ndarray) -> float:
    """Length in pixels of an 8-connected skeleton: each pair of neighbouring pixels adds the step
    between them (1 along an axis, √2 diagonally), a diagonal step only where no axis path joins them."""
    s = skeleton.astype(bool)
    length = 0.0
    axis = (s[:, 1:] & s[:, :-1]).sum() + (s[1:, :] & s[:-1, :]).sum()
    length += float(axis)
    for diag in ((s[1:, 1:] & s[:-1, :-1]) & ~(s[1:, :-1] | s[:-1, 1:]),
                 (s[1:, :-1] & s[:-1, 1:]) & ~(s[1:, 1:] | s[:-1, :-1])):
        length += math.sqrt(2) * float(diag.sum())
    return length


def vessel_area_density(mask: Array, fov: Optional[Array] = None) -> float:
    """Vessel pixels / pixels of the field of view (the whole image without `fov`)."""
    m = as_mask(mask)
    inside = as_mask(fov, "fov") if fov is not None else np.ones_like(m)
    if inside.shape != m.shape:
        raise ValueError(f"fov has shape {inside.shape}, the mask {m.shape}")
    if not inside.any():
        raise ValueError("fov is empty")
    return float((m & inside).sum() / inside.sum())


def _skeleton_density(skeleton: np.ndarray, inside: np.ndarray, pixel_mm: Optional[float]) -> float:
    density = skeleton_length(skeleton & inside) / float(inside.sum())
    return density / pixel_mm if pixel_mm else density


def _diameter_index(mask: np.ndarray, skeleton: np.ndarray, pixel_mm: Optional[float]) -> float:
    length = skeleton_length(skeleton)
    if length == 0:
        return float("nan")
    return float(mask.sum() / length * (pixel_mm or 1.0))


def vessel_skeleton_density(mask: Array, pixel_mm: Optional[float] = None, fov: Optional[Array] = None) -> float:
    """Skeleton length / field area: per pixel without `pixel_mm`, in mm⁻¹ with it."""
    _check_spacing(pixel_mm)
    m = as_mask(mask)
    inside = as_mask(fov, "fov") if fov is not None else np.ones_like(m)
    return _skeleton_density(skeleton_of(m), inside, pixel_mm)


def vessel_diameter_index(mask: Array, pixel_mm: Optional[float] = None) -> float:
    """Vessel area / skeleton length: the mean vessel width, in pixels (mm with `pixel_mm`); NaN
    without vessels."""
    _check_spacing(pixel_mm)
    m = as_mask(mask)
    return _diameter_index(m, skeleton_of(m), pixel_mm)


def fractal_dimension(mask: Array, min_box: int = 2, max_box: Optional[int] = None) -> float:
    """Box-counting dimension: the least-squares slope of log N(s) on log(1/s), N(s) the number of s x s
    boxes (a grid from the top-left corner, the image padded to whole boxes) holding foreground, for
    s = min_box, 2·min_box, ... up to `max_box` (default min(H, W) / 4). NaN for an empty mask."""
    m = as_mask(mask)
    if not m.any():
        return float("nan")
    max_box = max_box or max(min(m.shape) // 4, min_box * 2)
    sizes, counts = [], []
    s = min_box
    while s <= max_box:
        h, w = -(-m.shape[0] // s) * s, -(-m.shape[1] // s) * s
        padded = np.zeros((h, w), bool)
        padded[: m.shape[0], : m.shape[1]] = m
        boxes = padded.reshape(h // s, s, w // s, s).any(axis=(1, 3))
        sizes.append(s)
        counts.append(int(boxes.sum()))
        s *= 2
    if len(sizes) < 2:
        raise ValueError(f"the mask ({m.shape}) is too small for box sides from {min_box} to {max_box}")
    slope = np.polyfit(np.log(1 / np.array(sizes, float)), np.log(np.array(counts, float)), 1)[0]
    return float(slope)


def skeleton_branches(skeleton: np.ndarray) -> list[np.ndarray]:
    """The branches of a skeleton: its pixels with the junction pixels (three or more neighbours)
    removed, split into 8-connected pieces, each returned as an ordered path of (row, col) from one end
    to the other (closed loops without a junction: from an arbitrary pixel)."""
    import cv2

    s = skeleton.astype(bool)
    padded = np.pad(s, 1)
    neighbours = sum(np.roll(np.roll(padded, dy, 0), dx, 1) for dy, dx in _STEPS)[1:-1, 1:-1]
    paths = s & (neighbours < 3)
    count, labels = cv2.connectedComponents(paths.astype(np.uint8), connectivity=8)
    points = np.argwhere(labels > 0)  # every path pixel once, grouped by component below
    owner = labels[points[:, 0], points[:, 1]]
    order_by_owner = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order_by_owner], np.arange(1, count + 1))
    branches = []
    steps_axis_first = sorted(_STEPS, key=lambda d: abs(d[0]) + abs(d[1]))
    for label in range(1, count):
        members = {tuple(p) for p in points[order_by_owner[bounds[label - 1] : bounds[label]]].tolist()}
        degree = {p: sum((p[0] + dy, p[1] + dx) in members for dy, dx in _STEPS) for p in members}
        start = next((p for p, d in degree.items() if d <= 1), next(iter(members)))
        order, seen, current = [start], {start}, start
        while True:  # walk: prefer axis steps (a diagonal shortcut would skip a pixel)
            step = next(((current[0] + dy, current[1] + dx) for dy, dx in steps_axis_first
                         if (current[0] + dy, current[1] + dx) in members
                         and (current[0] + dy, current[1] + dx) not in seen), None)
            if step is None:
                break
            order.append(step)
            seen.add(step)
            current = step
        branches.append(np.array(order))
    return branches


def polyline_length(points: np.ndarray, closed: bool = False, window: int = 5) -> float:
    """Length of a digital curve (ordered pixel centres [N, 2]) after a moving average of `window`
    points: summing 8-connected steps overestimates curves by up to 8% (a circle's chain is ~5% long, its
    staircase zig-zags), while the smoothed polyline of a straight run is exactly its length."""
    points = points.astype(float)
    if len(points) < 2:
        return 0.0
    if len(points) > window:
        kernel = np.ones(window) / window
        if closed:
            wrapped = np.concatenate([points[-(window // 2):], points, points[: window // 2]])
            points = np.stack([np.convolve(wrapped[:, k], kernel, "valid") for k in range(2)], 1)
        else:  # keep the ends where they are: shrink the window towards them
            smoothed = points.copy()
            for i in range(1, len(points) - 1):
                half = min(window // 2, i, len(points) - 1 - i)
                smoothed[i] = points[i - half : i + half + 1].mean(0)
            points = smoothed
    steps = np.diff(np.concatenate([points, points[:1]]) if closed else points, axis=0)
    return float(np.hypot(steps[:, 0], steps[:, 1]).sum())


def tortuosity(mask: Array, min_chord: float = 10.0, skeletonize: bool = True) -> dict[str, float]:
    """Arc / chord of each skeleton branch with a chord of at least `min_chord` pixels: {"mean",
    "median", "max", "branches"} (NaN statistics when no branch qualifies). `skeletonize=False` takes
    `mask` as a skeleton already."""
    m = as_mask(mask)
    skeleton = skeleton_of(m) if skeletonize else m
    ratios = []
    for path in skeleton_branches(skeleton):
        chord = float(np.hypot(*(path[-1] - path[0])))
        if len(path) > 1 and chord >= min_chord:
            ratios.append(max(polyline_length(path) / chord, 1.0))
    if not ratios:
        return {"mean": float("nan"), "median": float("nan"), "max": float("nan"), "branches": 0}
    values = np.array(ratios)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "max": float(values.max()),
            "branches": len(ratios)}


def branch_points(mask: Array, skeletonize: bool = True) -> dict[str, int]:
    """{"branch_points", "endpoints"} of the mask's skeleton (junction clusters counted once)."""
    m = as_mask(mask)
    skeleton = skeleton_of(m) if skeletonize else m
    ends, junctions = skeleton_points(torch.from_numpy(skeleton))[0].tolist()
    return {"branch_points": junctions, "endpoints": ends}


def vessel_measurements(mask: Array, pixel_mm: Optional[float] = None, fov: Optional[Array] = None) -> dict:
    """Every vessel measurement of one mask, as a flat dict of floats (units in the key names); the
    skeleton is computed once."""
    _check_spacing(pixel_mm)
    m = as_mask(mask)
    inside = as_mask(fov, "fov") if fov is not None else np.ones_like(m)
    skeleton = skeleton_of(m)
    unit = "mm" if pixel_mm else "px"
    return {
        "vessel_area_density": vessel_area_density(m, inside),
        f"vessel_skeleton_density_per_{unit}": _skeleton_density(skeleton, inside, pixel_mm),
        f"vessel_diameter_index_{unit}": _diameter_index(m, skeleton, pixel_mm),
        "fractal_dimension": fractal_dimension(m),
        "tortuosity_mean": tortuosity(skeleton, skeletonize=False)["mean"],
        **branch_points(skeleton, skeletonize=False),
    }
