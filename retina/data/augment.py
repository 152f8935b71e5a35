"""Augmentation applied identically to an image and its labels, on CPU workers or on the GPU, seeded.

One random geometric warp per sample (flips, rotation, scale, elastic displacement) resamples the image
bilinearly and the labels (`mask`, `fov`) by nearest neighbour, so binary labels stay binary and class
maps keep their classes; then the image alone gets intensity changes (brightness, contrast, gamma) and
Gaussian noise. Pure flips skip resampling and are exact.

    >>> augment = PairedAugment(rotate=180, elastic_alpha=4, contrast=0.2, noise=0.02, seed=0)
    >>> dataset = DRIVE(root, transform=augment)       # per sample, in DataLoader workers
    >>> augment.set_epoch(epoch)                       # new draws every epoch, same draws every run
    >>> batch = augment.batch(batch)                   # or per batch, on the batch's device

Per-sample draws come from (seed, epoch, sample["index"]): a sample is augmented the same way whatever
the number of workers. Batch draws come from the generator passed in, else one owned by the augmenter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class PairedAugment:
    """Parameters are ranges; 0 turns an augmentation off.

    - `flip`: horizontal and vertical flips, each with probability 1/2.
    - `rotate`: degrees, uniform in [-rotate, rotate].
    - `scale`: zoom factor, log-uniform in [1/(1+scale), 1+scale].
    - `elastic_alpha`, `elastic_sigma`: a smooth random displacement of up to `elastic_alpha` pixels,
      varying over about `elastic_sigma` pixels.
    - `brightness` (added, uniform in ±), `contrast` (factor 1±), `gamma` (exponent e^(±gamma)), on [0, 1]
      images; `noise`: standard deviation of added Gaussian noise.
    - `image_key`, `label_keys`: which entries of the sample are the image and the labels."""

    flip: bool = True
    rotate: float = 0.0
    scale: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 16.0
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0
    seed: int = 0
    image_key: str = "image"
    label_keys: Sequence[str] = ("mask", "fov")

    def __post_init__(self):
        for name in ("rotate", "scale", "elastic_alpha", "brightness", "contrast", "gamma", "noise"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.elastic_sigma <= 0:
            raise ValueError(f"elastic_sigma must be > 0, got {self.elastic_sigma}")
        if self.contrast >= 1:
            raise ValueError(f"contrast must be < 1 (a factor 1 ± contrast), got {self.contrast}")
        self.epoch = 0
        self._generator = torch.Generator().manual_seed(self.seed)

    def set_epoch(self, epoch: int) -> None:
        """Changes the per-sample draws (call before each epoch; workers get the new value when the
        DataLoader starts them, i.e. without persistent_workers)."""
        self.epoch = int(epoch)

    # -- entry points ---------------------------------------------------------------------------------
    def __call__(self, sample: dict) -> dict:
        """Augments one sample ([C, H, W] image; [K, H, W] or [H, W] labels), seeded by
        (seed, epoch, sample["index"])."""
        if "index" not in sample:
            raise KeyError("PairedAugment needs sample['index'] to seed per-sample draws (datasets set it)")
        entropy = np.random.SeedSequence([self.seed, self.epoch, int(sample["index"])]).generate_state(2)
        generator = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        batched = {k: (v[None] if torch.is_tensor(v) else v) for k, v in sample.items()}
        out = self.batch(batched, generator)
        return {k: v[0] if torch.is_tensor(v) else v for k, v in out.items()}

    def batch(self, batch: dict, generator: Optional[torch.Generator] = None) -> dict:
        """Augments a batch ([N, C, H, W] image; [N, K, H, W] or [N, H, W] labels) on its device.
        `generator` (a CPU torch.Generator) draws the parameters; default: the augmenter's own."""
        image = batch[self.image_key]
        if not torch.is_tensor(image) or image.dim() != 4:
            raise ValueError(f"batch[{self.image_key!r}] must be a tensor [N, C, H, W], got "
                             f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
        if not image.is_floating_point():
            raise TypeError(f"batch[{self.image_key!r}] must be floating point, got {image.dtype}")
        n, _, h, w = image.shape
        labels = {k: batch[k] for k in self.label_keys if k in batch}
        for key, label in labels.items():
            if label.shape[0] != n or tuple(label.shape[-2:]) != (h, w):
                raise ValueError(f"batch[{key!r}] has shape {tuple(label.shape)}, expected [N, ..., {h}, {w}] "
                                 f"with N = {n} like the image")
            if label.device != image.device:
                raise ValueError(f"batch[{key!r}] is on {label.device}, the image on {image.device}")
        gen = generator if generator is not None else self._generator
        out = dict(batch)
        image, labels = self._geometric(image, labels, gen)
        out.update(labels)
        out[self.image_key] = self._intensity(image, gen)
        return out

    # -- geometry -------------------------------------------------------------------------------------
    def _geometric(self, image: torch.Tensor, labels: dict, gen: torch.Generator):
        n, _, h, w = image.shape
        flips = torch.rand(n, 2, generator=gen) < 0.5 if self.flip else torch.zeros(n, 2, dtype=torch.bool)
        angle = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * self.rotate
        zoom = torch.exp((torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.log1p(self.scale))
        elastic = None
        if self.elastic_alpha > 0:
            grid = (max(2, round(h / self.elastic_sigma) + 1), max(2, round(w / self.elastic_sigma) + 1))
            elastic = (torch.rand(n, 2, *grid, generator=gen) * 2 - 1) * self.elastic_alpha
        if self.rotate == 0 and self.scale == 0 and elastic is None:
            return self._flip_only(image, labels, flips)
        return warp(image, labels, flips, angle, zoom, elastic)

    @staticmethod
    def _flip_only(image: torch.Tensor, labels: dict, flips: torch.Tensor):
        def flip(x: torch.Tensor) -> torch.Tensor:
            out = x.clone()
            for i in range(x.shape[0]):
                dims = [d for d, f in zip((-2, -1), flips[i].tolist()) if f]
                if dims:
                    out[i] = torch.flip(x[i], dims)
            return out

        return flip(image), {k: flip(v) for k, v in labels.items()}

    # -- intensity ------------------------------------------------------------------------------------
    def _intensity(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = image.shape[0]

        def draw(amount: float) -> torch.Tensor:  # uniform in [-amount, amount], one per sample
            return ((torch.rand(n, generator=gen) * 2 - 1) * amount).to(image.device, image.dtype).view(n, 1, 1, 1)

        if self.contrast > 0 or self.brightness > 0:
            mean = image.mean(dim=(1, 2, 3), keepdim=True)
            image = (image - mean) * (1 + draw(self.contrast)) + mean + draw(self.brightness)
        if self.gamma > 0:
            image = image.clamp(0, 1) ** torch.exp(draw(self.gamma))
        if self.noise > 0:
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            device_gen = torch.Generator(device=image.device).manual_seed(seed)
            image = image + self.noise * torch.randn(image.shape, generator=device_gen, device=image.device,
                                                     dtype=image.dtype)
        return image


def warp(image: torch.Tensor, labels: dict, flips: torch.Tensor, degrees: torch.Tensor, zoom: torch.Tensor,
         elastic: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """Resamples `image` [N, C, H, W] bilinearly and each of `labels` ([N, H, W] or [N, K, H, W]) by
    nearest neighbour through one map per sample: flips [N, 2] (vertical, horizontal), rotation by
    `degrees` [N] (counter-clockwise on screen), `zoom` [N] (> 1 magnifies), and an optional elastic
    displacement in pixels given on a coarse grid [N, 2, gh, gw] (x, y), upsampled bicubically."""
    n, _, h, w = image.shape
    # output -> input map in normalized coordinates: the pixel-space rotation/zoom/flip conjugated by
    # the normalization, so non-square images rotate without shearing
    radians = torch.deg2rad(degrees.double())
    cos, sin = torch.cos(radians) / zoom, torch.sin(radians) / zoom
    fx = torch.where(flips[:, 1], -1.0, 1.0).double()
    fy = torch.where(flips[:, 0], -1.0, 1.0).double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos * fx
    theta[:, 0, 1] = -sin * (h / w) * fy
    theta[:, 1, 0] = sin * (w / h) * fx
    theta[:, 1, 1] = cos * fy
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False).float().to(image.device)
    if elastic is not None:
        field = F.interpolate(elastic.float().to(image.device), size=(h, w), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h], device=image.device)
    warped = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped, {k: _warp_label(v, grid) for k, v in labels.items()}


def _warp_label(label: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resampling of [N, H, W] or [N, K, H, W] labels of any dtype."""
    x = label if label.dim() == 4 else label[:, None]
    out = F.grid_sample(x.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out = out if label.dim() == 4 else out[:, 0]
    return out.round().to(label.dtype) if not label.is_floating_point() else out.to(label.dtype)
