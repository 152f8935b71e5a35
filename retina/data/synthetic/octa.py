"""OCTA-like en-face projections with exact labels.

What is drawn: a dark background; a few large vessel trees entering from the image border and ending
at the foveal avascular zone (FAZ), alternately labelled artery and vein; a capillary mesh (the zero
level set of a smooth random field, thickened) everywhere outside the FAZ and the large vessels; then
the acquisition's faults: blur, multiplicative speckle, horizontal motion lines, a vitreous-floater
shadow, and in the deep projection the large vessels' projection artefact (tails of superficial flow).
Labels are exactly the drawn sets; artefacts never move anatomy, so they never make a label wrong.

    >>> sample = octa_image(304, seed=0)
    >>> sample.image.shape, sample.vessel.shape    # (3, 304, 304) float32 in [0, 1], (304, 304) bool
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .texture import smooth_noise
from .trees import TreeStyle, draw, grow

LARGE_VESSELS = TreeStyle(roots=8, root_radius=(2.2, 3.6), step=4.0, tortuosity=0.15, taper=0.982,  # taper: set per scan
                          branch_probability=0.07, branch_angle=(0.4, 1.1), min_radius=0.6)


@dataclass(frozen=True)
class OctaSample:
    """One synthetic OCTA scan. `image` float32 [3, H, W] in [0, 1]: the FULL, ILM_OPL (superficial)
    and OPL_BM (deep) projections. Labels bool [H, W]: `vessel` = `artery` | `vein` (large vessels;
    artery and vein may overlap where they cross), `capillary`, `faz`."""

    image: np.ndarray
    vessel: np.ndarray
    artery: np.ndarray
    vein: np.ndarray
    capillary: np.ndarray
    faz: np.ndarray


def _faz(rng: np.random.Generator, size: int, radius: float) -> tuple[np.ndarray, tuple[float, float]]:
    """uint8 [size, size] FAZ: a star-shaped blob near the centre with a wavy border."""
    centre = (size / 2 + rng.normal(0, size * 0.03), size / 2 + rng.normal(0, size * 0.03))
    theta = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.normal(0, 0.12 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    r *= radius
    pts = np.stack([centre[1] + r * np.cos(theta), centre[0] + r * np.sin(theta)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.rint(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask, centre


def octa_image(size: int = 304, seed: int = 0, *, field_mm: float = 3.0) -> OctaSample:
    """A seeded OCTA-like scan of `size`² pixels covering `field_mm` millimetres (3 or 6 in OCTA-500:
    the wider field shows more, thinner vessels and a smaller FAZ)."""
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if not 1.0 <= field_mm <= 12.0:
        raise ValueError(f"field_mm must be in [1, 12], got {field_mm}")
    rng = np.random.default_rng(seed)
    px_per_mm = size / field_mm
    scale = px_per_mm / (304 / 3.0)  # vessel calibre relative to a 3 mm 304² scan

    faz, centre = _faz(rng, size, rng.uniform(0.2, 0.33) * px_per_mm)
    guard = cv2.dilate(faz, np.ones((3, 3), np.uint8), iterations=max(1, round(2 * scale)))

    def in_guard(points: np.ndarray) -> np.ndarray:
        idx = np.clip(np.rint(points).astype(int), 0, size - 1)
        return guard[idx[:, 0], idx[:, 1]] > 0

    # trunks enter around the border, spaced in angle, and head for the fovea
    roots = LARGE_VESSELS.roots
    angle = rng.uniform(0, 2 * math.pi) + np.arange(roots) * 2 * math.pi / roots + rng.normal(0, 0.2, roots)
    direction = np.stack([np.sin(angle), np.cos(angle)], 1)
    start = np.clip(np.array(centre) + direction * size * 0.75, 0, size - 1)
    heading = np.array(centre) - start + rng.normal(0, size * 0.12, (roots, 2))
    # A wider field reaches out to bigger vessels, which must still taper to capillary calibre by the
    # time they reach the fovea: trunk radius grows with sqrt(field), taper spreads over the path length.
    radius = rng.uniform(*LARGE_VESSELS.root_radius, roots) * scale * math.sqrt(field_mm / 3.0)
    steps_to_fovea = 0.5 * size / (LARGE_VESSELS.step * scale)
    style = replace(LARGE_VESSELS, taper=0.5 ** (1.0 / steps_to_fovea))  # half the radius on the way in
    trees = grow(rng, start, heading, radius, np.array([size, size], float), style, scale, blocked=in_guard)

    artery = draw(np.zeros((size, size), np.uint8), trees.select(trees.tree % 2 == 0)).astype(bool)
    vein = draw(np.zeros((size, size), np.uint8), trees.select(trees.tree % 2 == 1)).astype(bool)
    vessel = artery | vein
    flow = draw(np.zeros((size, size), np.float32), trees, lambda width: min(1.0, 0.62 + 0.06 * width / scale))

    # capillary mesh: thin bands around the zero set of a smooth field, outside the FAZ and large vessels
    faz = faz.astype(bool)
    keep_out = faz | vessel
    superficial_field = smooth_noise(rng, (size, size), 1.6 * scale)
    capillary = (np.abs(superficial_field) < 0.33) & ~keep_out
    deep_field = smooth_noise(rng, (size, size), 1.2 * scale)
    deep_mesh = (np.abs(deep_field) < 0.3) & ~faz

    shading = smooth_noise(rng, (size, size), 40 * scale)  # uneven signal strength
    shading *= 0.25
    shading += 1.0
    image = np.empty((3, size, size), np.float32)
    full, superficial, deep = image
    np.multiply(np.where(capillary, np.float32(0.34), np.float32(0.06)), shading, out=superficial)
    np.maximum(superficial, flow, out=superficial)
    np.multiply(np.where(deep_mesh, np.float32(0.3), np.float32(0.05)), shading, out=deep)
    deep += 0.3 * cv2.GaussianBlur(flow, (0, 0), 1.0)  # projection tails of the superficial flow
    cv2.addWeighted(superficial, 0.7, deep, 0.45, 0.0, dst=full)

    for channel in image:
        cv2.GaussianBlur(channel, (0, 0), 0.6, dst=channel)
    speckle = rng.random(image.shape, dtype=np.float32)  # multiplicative, mean 1, std 0.3
    speckle *= 0.3 * math.sqrt(12.0)
    speckle += 1.0 - 0.15 * math.sqrt(12.0)
    image *= speckle
    for _ in range(rng.poisson(1.0)):  # motion: bright horizontal lines across the scan
        row, height = rng.integers(0, size), int(rng.integers(1, 3))
        image[:, row : row + height] += rng.uniform(0.15, 0.4)
    if rng.random() < 0.3:  # a floater's shadow
        y, x = rng.uniform(0, size, 2)
        yy, xx = np.ogrid[:size, :size]
        sigma = rng.uniform(0.05, 0.15) * size
        image *= 1.0 - 0.5 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)).astype(np.float32)
    np.clip(image, 0.0, 1.0, out=image)
    return OctaSample(image=image, vessel=vessel, artery=artery, vein=vein, capillary=capillary, faz=faz)
