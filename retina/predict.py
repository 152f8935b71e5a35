"""Segment image files with a trained model: `predict_files(model, inputs, out)` writes, per image and at
its size, the probability map, the binary mask, an overlay, the skeleton and a JSON line of
measurements (components, holes, vessel density, skeleton length); multi-class models write a colour
class map. Streams any number of files; outputs already written are skipped on a rerun."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Optional

import cv2
import numpy as np
import torch

import retina_kernels

from .image_files import IMAGE_SUFFIXES, image_stem, images_by_stem, read_image, write_bytes_atomic, write_image
from .metrics import betti_numbers

# distinct colours for class maps (class 0, the background, black)
_PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], np.uint8)
OUTPUTS = ("prob", "mask", "overlay", "skeleton")


def input_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named directly, and those in named folders (`images_by_stem`), in order."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(images_by_stem(path, "input folder").values())
        elif path.is_file():
            if image_stem(path) is None:
                raise ValueError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    stems = [image_stem(f) for f in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ValueError(f"two inputs share the name {repeated[0]!r}: their outputs would overwrite each other")
    return files


def read_for_model(path: Path, in_channels: int) -> torch.Tensor:
    """float32 [in_channels, H, W] in [0, 1]: gray images repeated to RGB, RGB made gray (luminance) for
    one-channel models; 8-bit / 255, 16-bit / 65535."""
    image = read_image(path)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0 if image.dtype == np.uint8 else 1.0
    if image.ndim == 3:
        image = image[..., :3]
        if in_channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    else:
        image = image[..., None]
    array = image.astype(np.float32) / scale
    if array.shape[2] == 1 and in_channels > 1:
        array = np.repeat(array, in_channels, 2)
    if array.shape[2] != in_channels:
        raise ValueError(f"{path}: {array.shape[2]} channels, but the model takes {in_channels}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _outputs(out: Path, stem: str) -> dict[str, Path]:
    return {kind: out / kind / f"{stem}.png" for kind in OUTPUTS} | {"json": out / "measurements" / f"{stem}.json"}


@torch.no_grad()
def predict_files(model: torch.nn.Module, inputs: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                  device: str | torch.device = "cpu", threshold: float = 0.5, pixel_mm: Optional[float] = None,
                  progress: Optional[Callable[[int, int, str], None]] = None) -> Path:
    """Segments every input with `model` (whole images) into `out`; returns the measurements file.

    Per image `<stem>`: `prob/<stem>.png` (8-bit probability), `mask/<stem>.png` (prob > threshold),
    `overlay/<stem>.png`, `skeleton/<stem>.png`, and `measurements/<stem>.json`; at the end
    `measurements.jsonl` holds every image's line. Images whose outputs all exist are skipped. Multi-class
    models write the argmax class map in colour as `mask` and its index map as `prob`."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    out = Path(out)
    files = input_files(inputs)
    in_channels = getattr(model, "config", {}).get("in_channels", 1)
    model = model.to(device).eval()
    for done, path in enumerate(files):
        stem = image_stem(path)
        targets = _outputs(out, stem)
        if progress is not None:
            progress(done, len(files), stem)
        if all(p.is_file() for p in targets.values()):
            continue
        image = read_for_model(path, in_channels)
        logits = model(image[None].to(device))
        logits = (logits[-1] if isinstance(logits, (list, tuple)) else logits).float().cpu()[0]
        gray = np.rint(image[:3].mean(0).numpy() * 255).astype(np.uint8)
        line: dict = {"id": stem, "file": str(path), "height": int(image.shape[1]), "width": int(image.shape[2])}
        if logits.shape[0] == 1:
            prob = torch.sigmoid(logits[0])
            mask = prob > threshold
            skeleton = retina_kernels.skeletonize(mask[None, None].to(torch.uint8))[0, 0].bool()
            components, holes = betti_numbers(mask).tolist()
            line.update(components=components, holes=holes, vessel_density=float(mask.float().mean()),
                        skeleton_pixels=int(skeleton.sum()), skeleton_density=float(skeleton.float().mean()))
            if pixel_mm is not None:
                line.update(pixel_mm=pixel_mm, vessel_area_mm2=float(mask.sum()) * pixel_mm**2)
            picture = np.repeat(gray[..., None], 3, 2)
            picture[mask.numpy()] = (0.5 * picture[mask.numpy()] + (120, 100, 0)).astype(np.uint8)
            picture[skeleton.numpy()] = (255, 30, 30)
            write_image(targets["prob"], np.rint(prob.numpy() * 255).astype(np.uint8))
            write_image(targets["mask"], mask.numpy().astype(np.uint8) * 255)
            write_image(targets["skeleton"], skeleton.numpy().astype(np.uint8) * 255)
        else:
            classes = logits.argmax(0).numpy()
            colours = _PALETTE[classes % len(_PALETTE)]
            line.update(class_fractions=[float((classes == c).mean()) for c in range(logits.shape[0])])
            picture = (0.5 * np.repeat(gray[..., None], 3, 2) + 0.5 * colours).astype(np.uint8)
            write_image(targets["prob"], classes.astype(np.uint8))
            write_image(targets["mask"], colours)
            write_image(targets["skeleton"], np.zeros_like(gray))
        write_image(targets["overlay"], picture)
        write_bytes_atomic(targets["json"], json.dumps(line).encode())
    lines = [(out / "measurements" / f"{image_stem(p)}.json").read_text() for p in files]
    return write_bytes_atomic(out / "measurements.jsonl", ("\n".join(lines) + "\n").encode() if lines else b"")
