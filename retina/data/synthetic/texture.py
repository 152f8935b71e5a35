"""Random fields shared by the image generators: smooth noise at any scale, and seeded speckle."""

from __future__ import annotations

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """float32 [H, W] Gaussian-filtered white noise with unit standard deviation. Large `sigma` is drawn
    at a coarser grid and resized (same look, a fraction of the cost)."""
    h, w = shape
    factor = max(1, int(sigma // 4))
    small = (max(2, -(-h // factor)), max(2, -(-w // factor)))
    # uniform draws are 4x cheaper than normal ones, and after the blur the field is Gaussian anyway
    field = rng.random(small, dtype=np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    if factor > 1:
        field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    return field / (field.std() + 1e-12)


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float, softness: float = 0.0) -> np.ndarray:
    """float32 [H, W]: 1 inside the circle, 0 outside, with a linear ramp of width `softness` pixels."""
    y, x = np.ogrid[: shape[0], : shape[1]]
    dist = np.sqrt((y - centre[0]) ** 2 + (x - centre[1]) ** 2, dtype=np.float32)
    if softness <= 0:
        return (dist <= radius).astype(np.float32)
    return np.clip((radius - dist) / softness + 0.5, 0.0, 1.0).astype(np.float32)
