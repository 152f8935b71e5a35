"""Random vessel trees as line segments, grown for all branch tips at once (one numpy step per growth
step, not per branch: a 304² tree takes a few milliseconds), and their rasterisation.

A tree starts from root tips (position, heading, radius). Every step each tip turns by a random angle
(tortuosity), advances, and tapers; with a small probability it spawns a thinner child at an angle to its
heading. A tip ends when it is thinner than `min_radius`, leaves the box, or enters a blocked region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

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


@dataclass(frozen=True)
class Segments:
    """Straight vessel pieces: `start`, `end` [n, dim] (array index order: (y, x) in 2D), `radius` [n],
    `tree` [n] (the index of the root each piece grew from, e.g. to label arteries and veins)."""

    start: np.ndarray
    end: np.ndarray
    radius: np.ndarray
    tree: np.ndarray

    def __len__(self) -> int:
        return len(self.radius)

    def select(self, keep: np.ndarray) -> "Segments":
        return Segments(self.start[keep], self.end[keep], self.radius[keep], self.tree[keep])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.sqrt(np.einsum("ij,ij->i", v, v))[:, None] + 1e-12)


def _turn(rng: np.random.Generator, heading: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Headings rotated by `angle` towards a random direction perpendicular to each heading."""
    side = rng.normal(0.0, 1.0, heading.shape)
    side = _unit(side - (side * heading).sum(-1, keepdims=True) * heading)
    return np.cos(angle)[:, None] * heading + np.sin(angle)[:, None] * side


def grow(rng: np.random.Generator, start: np.ndarray, heading: np.ndarray, radius: np.ndarray,
         extent: np.ndarray, style: TreeStyle, scale: float,
         blocked: Optional[Callable[[np.ndarray], np.ndarray]] = None, max_segments: int = 200_000) -> Segments:
    """Grows one tree per root. `start`, `heading` [roots, dim], `radius` [roots] (pixels, already
    scaled); `extent` the box size per axis; `blocked(points [n, dim]) -> bool [n]` ends tips that enter
    a forbidden region (the FAZ, say). `scale` multiplies the step length."""
    pos = np.asarray(start, float)
    head = _unit(np.asarray(heading, float))
    rad = np.asarray(radius, float)
    tree = np.arange(len(rad))
    step = style.step * scale
    pieces: list[tuple[np.ndarray, ...]] = []
    total = 0
    while len(rad) and total < max_segments:
        head = _unit(head + rng.normal(0.0, style.tortuosity, head.shape))
        nxt = pos + head * step
        inside = ((nxt >= -rad[:, None]) & (nxt <= extent - 1 + rad[:, None])).all(1)
        if blocked is not None:
            inside &= ~blocked(nxt)
        pieces.append((pos[inside], nxt[inside], rad[inside], tree[inside]))
        total += int(inside.sum())
        pos, head, rad, tree = nxt[inside], head[inside], rad[inside] * style.taper, tree[inside]
        branching = rng.random(len(rad)) < style.branch_probability
        n_children = int(branching.sum())
        if n_children:
            angle = rng.uniform(*style.branch_angle, n_children)
            child_head = _turn(rng, head[branching], angle)
            child_rad = rad[branching] * 0.75
            rad = np.where(branching, rad * 0.9, rad)
            pos = np.concatenate([pos, pos[branching]])
            head = np.concatenate([head, child_head])
            rad = np.concatenate([rad, child_rad])
            tree = np.concatenate([tree, tree[branching]])
        alive = rad >= style.min_radius
        pos, head, rad, tree = pos[alive], head[alive], rad[alive], tree[alive]
    if not pieces:
        dim = len(extent)
        return Segments(np.zeros((0, dim)), np.zeros((0, dim)), np.zeros(0), np.zeros(0, int))
    return Segments(*(np.concatenate(p) for p in zip(*pieces)))


def roots_on_faces(rng: np.random.Generator, extent: np.ndarray, count: int, aim: np.ndarray,
                   spread: float) -> tuple[np.ndarray, np.ndarray]:
    """`count` root positions on random faces of the box, headed at `aim` plus N(0, spread) jitter."""
    dim = len(extent)
    start = rng.uniform(0, 1, (count, dim)) * extent
    axis = rng.integers(dim, size=count)
    side = rng.random(count) < 0.5
    start[np.arange(count), axis] = np.where(side, 0.0, extent[axis] - 1)
    heading = _unit(aim - start + rng.normal(0, spread, (count, dim)))
    return start, heading


_SHIFT = 4  # cv2 drawing precision: coordinates in 1/16 pixel


def thickness(radius: np.ndarray) -> np.ndarray:
    """cv2 line thickness (>= 1 pixel) of vessel pieces of the given radius."""
    return np.maximum(1, np.rint(2 * radius)).astype(np.int32)


def draw(canvas: np.ndarray, segments: Segments, value: float | Callable[[float], float] = 1) -> np.ndarray:
    """Draws 2D segments into `canvas` (uint8 or float32 [H, W]) in place, thinnest first, one cv2 call
    per line thickness. `value` is a constant or a function of the thickness (an intensity profile)."""
    if len(segments) == 0:
        return canvas
    # cv2 wants (x, y) integer points; segments are (y, x)
    points = np.stack([segments.start[:, ::-1], segments.end[:, ::-1]], 1)
    points = np.rint(points * (1 << _SHIFT)).astype(np.int32)
    widths = thickness(segments.radius)
    for width in np.unique(widths):
        colour = value(float(width)) if callable(value) else value
        cv2.polylines(canvas, list(points[widths == width]), False, colour, thickness=int(width),
                      lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas
