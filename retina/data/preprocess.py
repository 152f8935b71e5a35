"""Classic retinal-image preprocessing on numpy arrays (OpenCV underneath).

Colour images are RGB [H, W, 3] or channel-first float [3, H, W] (what the datasets return); gray ones
[H, W]. 8-bit in, 8-bit out for the histogram operations; float32 out of `normalize`.

    >>> green = green_channel(rgb)                     # [H, W], the channel with the most vessel contrast
    >>> enhanced = clahe(green, clip_limit=2.0)        # uint8 [H, W]
    >>> fov = estimate_fov(rgb)                        # bool [H, W]
    >>> x = normalize(enhanced, mask=fov)              # float32, zero mean and unit std inside the FOV
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def _channels_first(image: np.ndarray) -> bool:
    """[C, H, W] (what the datasets return) rather than [H, W, C]: at most 4 leading channels and a
    trailing axis too long to be channels."""
    return image.ndim == 3 and image.shape[0] <= 4 < image.shape[2]


def _channels_last(image: np.ndarray) -> np.ndarray:
    return image.transpose(1, 2, 0) if _channels_first(image) else image


def _as_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if np.isnan(image).any():
            raise ValueError(f"{name} contains NaN")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(f"{name}: floating images must have values in [0, 1], got "
                             f"[{image.min():.3g}, {image.max():.3g}]")
        return np.rint(image * 255).astype(np.uint8)
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise TypeError(f"{name} must be uint8, uint16 or floating, got {image.dtype}")


def green_channel(image: np.ndarray) -> np.ndarray:
    """[H, W]: the green channel of an RGB image ([H, W, 3] or [3, H, W]); a gray image is returned as is."""
    if image.ndim == 2:
        return image
    image = _channels_last(image)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"image must be [H, W], [H, W, 3] or [3, H, W], got shape {tuple(image.shape)}")
    return image[..., 1]


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """uint8 [H, W]: contrast-limited adaptive histogram equalization (of the green channel of colour input)."""
    if clip_limit <= 0:
        raise ValueError(f"clip_limit must be > 0, got {clip_limit}")
    gray = _as_uint8(green_channel(image))
    return cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(int(t) for t in tile_grid)).apply(gray)


def equalize_histogram(image: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 [H, W]: global histogram equalization; with `mask`, the histogram of the pixels inside it
    (the black outside of a fundus FOV would otherwise take a large share of the grey levels)."""
    gray = _as_uint8(green_channel(image))
    if mask is None:
        return cv2.equalizeHist(gray)
    mask = _check_mask(mask, gray.shape)
    values = gray[mask]
    if values.size == 0:
        return gray.copy()
    hist = np.bincount(values, minlength=256).astype(np.float64)
    cdf = hist.cumsum()
    lo = cdf[hist > 0][0]
    lut = np.clip(np.rint((cdf - lo) / max(cdf[-1] - lo, 1) * 255), 0, 255).astype(np.uint8)
    out = lut[gray]
    out[~mask] = 0
    return out


def normalize(image: np.ndarray, mask: Optional[np.ndarray] = None, mode: str = "zscore") -> np.ndarray:
    """float32, same shape: `zscore` (zero mean, unit std) or `minmax` (to [0, 1]), statistics taken
    inside `mask` when given (per image, over all channels). A constant image maps to zeros."""
    if mode not in ("zscore", "minmax"):
        raise ValueError(f"mode must be 'zscore' or 'minmax', got {mode!r}")
    x = image.astype(np.float32)
    if np.isnan(x).any():
        raise ValueError("image contains NaN")
    channels_first = _channels_first(x)
    if mask is None:
        values = x
    else:
        inside = _check_mask(mask, x.shape[1:] if channels_first else x.shape[:2])
        values = x[:, inside] if channels_first else x[inside]
    if values.size == 0:
        return np.zeros_like(x)
    if mode == "zscore":
        std = float(values.std())
        return (x - float(values.mean())) / std if std > 0 else np.zeros_like(x)
    lo, hi = float(values.min()), float(values.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(shape)} (the image's)")
    return mask.astype(bool)


def estimate_fov(image: np.ndarray, threshold: Optional[float] = None, erode: int = 2) -> np.ndarray:
    """bool [H, W]: the field of view of a fundus photograph (the bright disc on a dark surround), for
    datasets without FOV masks (STARE, CHASE-DB1). Thresholds the red channel (the brightest inside the
    eye, near zero outside) at `threshold`,
    keeps the largest component, fills its holes, and erodes `erode` pixels off the dark rim.
    `threshold` is on the 0-255 scale; by default 15% of the red channel's 99th percentile, at least 10."""
    image = _channels_last(image)
    red = image[..., 0] if image.ndim == 3 else image
    red = _as_uint8(red, "image").astype(np.float32)
    if threshold is None:
        threshold = max(10.0, 0.15 * float(np.percentile(red, 99)))
    fov = (red > threshold).astype(np.uint8)
    fov = cv2.morphologyEx(fov, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fov, connectivity=8)
    if count <= 1:
        return np.zeros(red.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    fov = (labels == largest).astype(np.uint8)
    # fill holes: background components not touching the border (dark lesions, the dark macula)
    background = np.pad(1 - fov, 1, constant_values=1)
    _, bg_labels = cv2.connectedComponents(background, connectivity=4)
    fov = (bg_labels[1:-1, 1:-1] != bg_labels[0, 0]).astype(np.uint8)
    if erode > 0:
        fov = cv2.erode(fov, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1)))
    return fov.astype(bool)
