"""Fundus-like colour photographs with exact labels.

What is drawn: an orange-red retina lit from the centre (illumination falls off towards the rim), with
low-frequency choroidal texture and a darker macula; a bright optic disc to one side (left or right eye);
vessel trees leaving the disc in the four arcades and nasally, alternately artery and vein (veins wider
and darker, arteries lighter), darker than the background mostly in the green channel; a circular field
of view outside which the image is black; sensor noise. Labels are the drawn sets inside the FOV.

    >>> sample = fundus_image(584, 565, seed=0)
    >>> sample.image.shape, sample.fov.shape       # (3, 584, 565) float32 RGB in [0, 1], (584, 565) bool
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from .texture import disc, smooth_noise
from .trees import TreeStyle, draw, grow

ARCADES = TreeStyle(roots=8, root_radius=(3.0, 4.5), step=6.0, tortuosity=0.1, taper=0.985,
                    branch_probability=0.08, branch_angle=(0.4, 1.0), min_radius=0.6)

# per-channel darkening (R, G, B) of a vessel: the green channel carries most of the contrast
_ARTERY_CONTRAST = np.array([0.10, 0.35, 0.20], np.float32)
_VEIN_CONTRAST = np.array([0.22, 0.55, 0.35], np.float32)


@dataclass(frozen=True)
class FundusSample:
    """One synthetic fundus photograph. `image` float32 [3, H, W] RGB in [0, 1]. Labels bool [H, W]:
    `vessel` = `artery` | `vein` (they may overlap where they cross), `optic_disc`, `fov`."""

    image: np.ndarray
    vessel: np.ndarray
    artery: np.ndarray
    vein: np.ndarray
    optic_disc: np.ndarray
    fov: np.ndarray


def fundus_image(height: int = 584, width: int = 565, seed: int = 0) -> FundusSample:
    """A seeded fundus-like photograph of `height` x `width` pixels (DRIVE's size by default)."""
    if min(height, width) < 32:
        raise ValueError(f"height and width must be >= 32, got {height} x {width}")
    rng = np.random.default_rng(seed)
    shape = (height, width)
    side = min(height, width)
    scale = side / 565.0
    centre = (height / 2.0, width / 2.0)
    fov_radius = 0.48 * side
    fov = disc(shape, centre, fov_radius) > 0

    eye = 1 if rng.random() < 0.5 else -1  # which side the disc is on
    disc_centre = (centre[0] + rng.normal(0, 0.03 * side), centre[1] + eye * rng.uniform(0.26, 0.32) * side)
    disc_radius = rng.uniform(0.065, 0.085) * side
    macula = (centre[0] + rng.normal(0, 0.02 * side), centre[1] - eye * 0.04 * side)

    # artery-vein pairs (even roots arteries, odd veins): the temporal arcades above and below the
    # macula, and the nasal ones away from it; degrees from the direction of the macula
    base = np.array([40, 50, -40, -50, 125, 135, -125, -135], float)
    angle = np.radians(base + rng.normal(0, 8, ARCADES.roots))
    heading = np.stack([np.sin(angle), -eye * np.cos(angle)], 1)
    start = np.array(disc_centre) + heading * disc_radius * 0.3
    radius = rng.uniform(*ARCADES.root_radius, ARCADES.roots) * scale
    fov_centre, limit = np.array(centre), (fov_radius - 2) ** 2

    def outside_fov(points: np.ndarray) -> np.ndarray:
        return ((points - fov_centre) ** 2).sum(1) > limit

    trees = grow(rng, start, heading, radius, np.array(shape, float), ARCADES, scale, blocked=outside_fov)
    vein_tree = trees.tree % 2 == 1
    radius_factor = np.where(vein_tree, 1.25, 0.9)  # veins are the wider of a pair
    trees = replace(trees, radius=trees.radius * radius_factor)
    artery = draw(np.zeros(shape, np.uint8), trees.select(~vein_tree)).astype(bool) & fov
    vein = draw(np.zeros(shape, np.uint8), trees.select(vein_tree)).astype(bool) & fov

    # background: base colour, centred illumination, choroidal texture, macula, disc
    yy, xx = np.ogrid[:height, :width]
    rr = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / fov_radius**2
    light = (1.0 - 0.55 * rr).astype(np.float32) * (1.0 + 0.08 * smooth_noise(rng, shape, 30 * scale))
    colour = np.array([0.82, 0.40, 0.17], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    image = colour[:, None, None] * light[None]
    macula_dark = np.exp(-(((yy - macula[0]) ** 2 + (xx - macula[1]) ** 2) / (2 * (0.07 * side) ** 2)))
    image *= (1.0 - 0.35 * macula_dark).astype(np.float32)[None]
    disc_soft = disc(shape, disc_centre, disc_radius, softness=0.25 * disc_radius)
    image += np.array([0.15, 0.40, 0.35], np.float32)[:, None, None] * disc_soft[None]

    # vessels darken the background, with soft edges
    for mask, contrast in ((artery, _ARTERY_CONTRAST), (vein, _VEIN_CONTRAST)):
        profile = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8 * max(scale, 0.5))
        image *= 1.0 - contrast[:, None, None] * profile[None]

    image += rng.normal(0, 0.012, image.shape).astype(np.float32)
    image *= fov[None]
    np.clip(image, 0.0, 1.0, out=image)
    optic_disc = disc(shape, disc_centre, disc_radius) > 0
    return FundusSample(image=image, vessel=artery | vein, artery=artery, vein=vein,
                        optic_disc=optic_disc & fov, fov=fov)
