"""Seeded binary vessel masks: branching, tapering, tortuous trees whose branches cross (so masks have
holes as well as components). Built-in data for the demo, the tests and the benchmarks.

    >>> mask = vessel_mask(304, 304, seed=0)           # bool [304, 304]
    >>> vol = vessel_volume(64, 64, 64, seed=0)        # bool [64, 64, 64]
"""

from __future__ import annotations

import numpy as np

from .trees import Segments, TreeStyle, draw, grow, roots_on_faces


def _tree(rng: np.random.Generator, extent: np.ndarray, style: TreeStyle, scale: float) -> Segments:
    start, heading = roots_on_faces(rng, extent, style.roots, extent / 2.0, extent.mean() / 6)
    radius = rng.uniform(*style.root_radius, style.roots) * scale
    budget = int(40 * extent.sum() / style.step)  # bounds the vessel density whatever the random draws
    return grow(rng, start, heading, radius, extent, style, scale, max_segments=budget)


def vessel_mask(height: int, width: int, seed: int = 0, style: TreeStyle = TreeStyle()) -> np.ndarray:
    """bool [height, width]: a random vessel tree (widths from about 1 to 12 pixels at 304²)."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    rng = np.random.default_rng(seed)
    scale = max(min(height, width) / 304.0, 0.2)
    segments = _tree(rng, np.array([height, width], float), style, scale)
    return draw(np.zeros((height, width), np.uint8), segments).astype(bool)


def vessel_volume(depth: int, height: int, width: int, seed: int = 0, style: TreeStyle = TreeStyle()) -> np.ndarray:
    """bool [depth, height, width]: a random 3D vessel tree of tubes (balls swept along the segments)."""
    if min(depth, height, width) < 1:
        raise ValueError(f"depth, height and width must be >= 1, got {depth} x {height} x {width}")
    rng = np.random.default_rng(seed)
    extent = np.array([depth, height, width], float)
    scale = max(min(depth, height, width) / 304.0 * 3.0, 0.4)  # volumes are small: thicker relative tubes
    segments = _tree(rng, extent, style, scale)
    vol = np.zeros((depth, height, width), bool)
    for start, end, radius in zip(segments.start, segments.end, segments.radius):
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
