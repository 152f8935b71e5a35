"""VGG Image Annotator (VIA) polygon annotations to class-map masks (OCT layer labels, OCTID style).

VIA exports one JSON object keyed by image: `{"<name><size>": {"filename": ..., "regions": [...]}}`
(VIA 2 project files nest it under `_via_img_metadata`; VIA 1 stores `regions` as a dict). A region is
`{"shape_attributes": {"name": "polygon", "all_points_x": [...], "all_points_y": [...]},
"region_attributes": {"<attribute>": "<class name>"}}`. Polygons are filled in file order, so a later
region overwrites an earlier one where they overlap; pixels in no polygon are class 0.

    >>> polygons_to_masks("annotations.json", "images/", "masks/", classes=OCTID_LAYERS)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from ..io import read_image, write_image


def _entries(data: Any, source: Path) -> list[dict]:
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "filename" in v for v in data.values()):
        raise ValueError(f"{source}: not a VGG Image Annotator export (expected an object of "
                         f"{{'filename': ..., 'regions': ...}} entries)")
    return list(data.values())


def _class_of(region: dict, attribute: Optional[str], classes: Sequence[str], where: str) -> int:
    attributes = region.get("region_attributes") or {}
    if attribute is None:
        if len(attributes) != 1:
            raise ValueError(f"{where}: region has attributes {sorted(attributes)}; pass attribute= to say "
                             f"which one names the class")
        attribute = next(iter(attributes))
    if attribute not in attributes:
        raise ValueError(f"{where}: region has no attribute {attribute!r} (it has {sorted(attributes)})")
    name = attributes[attribute]
    if isinstance(name, dict):  # VIA checkbox attributes: {"ILM": true}
        name = next((k for k, v in name.items() if v), None)
    if name not in classes:
        raise ValueError(f"{where}: class {name!r} is not one of {list(classes)}")
    return classes.index(name)


def mask_from_regions(regions: Any, shape: tuple[int, int], classes: Sequence[str],
                      attribute: Optional[str] = None, where: str = "annotation") -> np.ndarray:
    """uint8 [H, W] class map of VIA `regions` (list, or VIA 1's dict) on an image of `shape`."""
    if len(classes) > 256:
        raise ValueError(f"at most 256 classes fit a uint8 mask, got {len(classes)}")
    if isinstance(regions, dict):
        regions = [regions[k] for k in sorted(regions, key=lambda k: int(k) if str(k).isdigit() else k)]
    mask = np.zeros(shape, np.uint8)
    for index, region in enumerate(regions):
        here = f"{where}, region {index}"
        shape_attributes = region.get("shape_attributes") or {}
        if shape_attributes.get("name") != "polygon":
            raise ValueError(f"{here}: shape {shape_attributes.get('name')!r} is not supported (polygons only)")
        xs, ys = shape_attributes.get("all_points_x", []), shape_attributes.get("all_points_y", [])
        if len(xs) != len(ys) or len(xs) < 3:
            raise ValueError(f"{here}: a polygon needs >= 3 points with as many x as y, got {len(xs)} x, {len(ys)} y")
        points = np.rint(np.stack([xs, ys], 1) * 16).astype(np.int32)
        cv2.fillPoly(mask, [points], _class_of(region, attribute, classes, here), lineType=cv2.LINE_8, shift=4)
    return mask


def polygons_to_masks(json_path: str | Path, image_dir: str | Path, out_dir: str | Path, classes: Sequence[str],
                      attribute: Optional[str] = None) -> list[Path]:
    """Writes `out_dir/<image stem>.png` (uint8 class indices) for every image in the VIA export
    `json_path`; the images in `image_dir` give the mask sizes. Returns the written paths."""
    json_path, image_dir, out_dir = Path(json_path), Path(image_dir), Path(out_dir)
    if not json_path.is_file():
        raise FileNotFoundError(f"annotation file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: invalid JSON ({exc})") from None
    written = []
    for entry in _entries(data, json_path):
        image_path = image_dir / entry["filename"]
        height, width = read_image(image_path).shape[:2]
        mask = mask_from_regions(entry.get("regions", []), (height, width), list(classes), attribute,
                                 where=f"{json_path.name}: {entry['filename']}")
        written.append(write_image(out_dir / f"{Path(entry['filename']).stem}.png", mask))
    return written
