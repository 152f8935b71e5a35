"""Seeded vessel-like binary masks: branching, tapering, tortuous trees whose branches cross (so masks
have holes as well as components). Built-in data for the demo, the tests and the benchmarks.

    >>> mask = vessel_mask(304, 304, seed=0)           # bool [304, 304]
    >>> vol = vessel_volume(64, 64, 64, seed=0)        # bool [64, 64, 64]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TreeStyle:
    """Shape of a generated vessel tree. Lengths are in pixels at a 304-pixel image side, scaled."""

    roots: int = 3
    root_radius: tuple[float, float] = (3.0, 6.0)  # radius of a trunk, drawn uniformly
    step: float = 2.0  # growth step
    tortuosity: float = 0.12  # std of the heading change per step, radians
    taper: float = 0.993  # radius factor per step
    branch_probability: float = 0.035  # per step
    branch_angle: tuple[float, float] = (0.5, 1.2)  # radians off the parent's heading
    min_radius: float = 0.55  # a branch ends below this radius


def _tree_segments(rng: np.random.Generator, extent: np.ndarray, style: TreeStyle, scale: float):
    """Yields (start, end, radius) segments of a random vessel tree in a box of `extent` (any dimension)."""
    dim = len(extent)
    centre = extent / 2.0
    stack = []
    for _ in range(style.roots):
        start = rng.uniform(0, extent)
        axis = rng.integers(dim)
        start[axis] = 0.0 if rng.random() < 0.5 else extent[axis] - 1  # enter from a face
        heading = centre - start + rng.normal(0, extent.mean() / 6, dim)
        stack.append((start, heading / np.linalg.norm(heading), rng.uniform(*style.root_radius) * scale))
    budget = int(40 * extent.sum() / style.step)  # bounds the total work whatever the random draws
    while stack and budget > 0:
        pos, heading, radius = stack.pop()
        while radius >= style.min_radius and budget > 0:
            budget -= 1
            heading = heading + rng.normal(0, style.tortuosity, dim)
            heading /= np.linalg.norm(heading)
            nxt = pos + heading * style.step * scale
            if np.any(nxt < -radius) or np.any(nxt > extent - 1 + radius):
                break
            yield pos, nxt, radius
            pos, radius = nxt, radius * style.taper
            if rng.random() < style.branch_probability:
                turn = rng.normal(0, 1, dim)
                turn -= turn.dot(heading) * heading  # perpendicular to the heading
                turn /= np.linalg.norm(turn) + 1e-12
                angle = rng.uniform(*style.branch_angle)
                child = math.cos(angle) * heading + math.sin(angle) * turn
                stack.append((pos.copy(), child, radius * 0.75))
                radius *= 0.9


def vessel_mask(height: int, width: int, seed: int = 0, style: TreeStyle = TreeStyle()) -> np.ndarray:
    """bool [height, width]: a random vessel tree (widths from about 1 to 12 pixels at 304²)."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    rng = np.random.default_rng(seed)
    scale = min(height, width) / 304.0
    canvas = np.zeros((height, width), np.uint8)
    shift = 4  # sub-pixel precision of cv2's drawing: coordinates are in 1/16 pixel
    for start, end, radius in _tree_segments(rng, np.array([height, width], float), style, max(scale, 0.2)):
        p0 = tuple(int(round(v * (1 << shift))) for v in start[::-1])
        p1 = tuple(int(round(v * (1 << shift))) for v in end[::-1])
        cv2.line(canvas, p0, p1, 1, thickness=max(1, int(round(2 * radius))), lineType=cv2.LINE_8, shift=shift)
    return canvas.astype(bool)


def vessel_volume(depth: int, height: int, width: int, seed: int = 0, style: TreeStyle = TreeStyle()) -> np.ndarray:
    """bool [depth, height, width]: a random 3D vessel tree of tubes (balls swept along the segments)."""
    if min(depth, height, width) < 1:
        raise ValueError(f"depth, height and width must be >= 1, got {depth} x {height} x {width}")
    rng = np.random.default_rng(seed)
    extent = np.array([depth, height, width], float)
    scale = max(min(depth, height, width) / 304.0 * 3.0, 0.4)  # volumes are small: thicker relative tubes
    vol = np.zeros((depth, height, width), bool)
    for start, end, radius in _tree_segments(rng, extent, style, scale):
        lo = np.maximum(np.floor(np.minimum(start, end) - radius), 0).astype(int)
        hi = np.minimum(np.ceil(np.maximum(start, end) + radius) + 1, extent).astype(int)
        if np.any(hi <= lo):
            continue
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).astype(float)
        seg = end - start
        t = np.clip(((grid - start) @ seg) / max(seg @ seg, 1e-12), 0.0, 1.0)
        dist2 = ((grid - (start + t[..., None] * seg)) ** 2).sum(-1)
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= dist2 <= radius * radius
    return vol
