"""`Preprocess`: a recipe's input preprocessing as a sample transform that a config can name and a
checkpoint can record, so that `retina predict` prepares new images exactly as the training data were.

    >>> prep = Preprocess(gray="green", equalize=True, resize=512)    # the local-enhanced UNet on DRIVE
    >>> sample = prep(dataset[0])              # image [1, 512, 512] equalized; mask and fov resized (nearest)
    >>> image = prep.image(torch_image)       # the same for an image alone (prediction)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import cv2
import numpy as np
import torch

from .preprocess import clahe, equalize_histogram

GRAY = (None, "green", "luminance")


@dataclass(frozen=True)
class Preprocess:
    """Image preprocessing, in this order: `gray` ("green": the green channel, the fundus convention;
    "luminance": ITU-R 601 grey; None: keep the channels), `equalize` (global histogram equalization,
    inside the FOV when the sample has one) or `clahe` (its clip limit), then `resize` to (h, w) or a
    square side (images bilinear, or area-averaged when shrinking; masks and FOV nearest). Images stay
    float32 in [0, 1], [C, H, W]."""

    gray: Optional[str] = None
    equalize: bool = False
    clahe: Optional[float] = None
    resize: Optional[Union[int, tuple[int, int], list[int]]] = None

    def __post_init__(self):
        if self.gray not in GRAY:
            raise ValueError(f"gray must be one of {GRAY}, got {self.gray!r}")
        if self.equalize and self.clahe is not None:
            raise ValueError("choose equalize or clahe, not both")
        if self.clahe is not None and not self.clahe > 0:
            raise ValueError(f"clahe (the clip limit) must be > 0, got {self.clahe}")
        if self.resize is not None:
            size = self.size
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"resize must be a side or (height, width) >= 1, got {self.resize!r}")

    @property
    def size(self) -> Optional[tuple[int, int]]:
        if self.resize is None:
            return None
        return (int(self.resize), int(self.resize)) if isinstance(self.resize, int) else tuple(int(s) for s in self.resize)

    def to_dict(self) -> dict:
        values = asdict(self)
        if isinstance(values["resize"], tuple):
            values["resize"] = list(values["resize"])
        return values

    def image(self, image: torch.Tensor, fov: Optional[torch.Tensor] = None) -> torch.Tensor:
        """float32 [C, H, W] in [0, 1] -> the preprocessed float32 [C', H', W'] (C' = 1 when `gray`)."""
        array = image.detach().cpu().float().numpy()
        if self.gray is not None and array.shape[0] > 1:
            if self.gray == "green":
                array = array[1:2]
            else:
                rgb = np.rint(np.clip(array[:3], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
                array = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)[None].astype(np.float32) / 255
        if self.equalize or self.clahe is not None:
            inside = fov.detach().cpu().numpy()[0] > 0.5 if fov is not None else None
            channels = []
            for channel in np.clip(array, 0, 1):
                enhanced = equalize_histogram(channel, inside) if self.equalize else clahe(channel, self.clahe)
                channels.append(enhanced.astype(np.float32) / 255)
            array = np.stack(channels)
        if self.size is not None and tuple(array.shape[1:]) != self.size:
            h, w = self.size
            shrink = h * w < array.shape[1] * array.shape[2]
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            array = np.stack([cv2.resize(c, (w, h), interpolation=interpolation) for c in array])
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def _nearest(self, label: torch.Tensor) -> torch.Tensor:
        if self.size is None or tuple(label.shape[-2:]) == self.size:
            return label
        squeeze = label.dim() == 2  # a class-index map [H, W]
        resized = torch.nn.functional.interpolate(label[None, None] if squeeze else label[None].float(),
                                                  size=self.size, mode="nearest-exact")
        return resized[0, 0] if squeeze else resized[0].to(label.dtype)

    def __call__(self, sample: dict) -> dict:
        """The sample with its image preprocessed and its mask and fov resized to match."""
        out = dict(sample)
        out["image"] = self.image(sample["image"], sample.get("fov"))
        for key in ("mask", "fov"):
            if key in sample:
                label = sample[key]
                if label.dim() == 2:  # class indices: nearest on a float copy, back to int64
                    out[key] = self._nearest(label.double()).to(label.dtype)
                else:
                    out[key] = self._nearest(label)
        return out
