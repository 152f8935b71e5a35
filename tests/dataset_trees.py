"""Writes directory trees with the exact layouts of the public datasets (docs/datasets.md): file names,
extensions and bit depths as released, small images. Returns what was written so tests can compare."""

import gzip
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from retina.data.synthetic import fundus_image, vessel_mask


def _gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        Image.fromarray(array).save(path)  # OpenCV cannot write gif
    else:
        assert cv2.imwrite(str(path), array), path


def _rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), path


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    return vessel_mask(h, w, seed=seed).astype(np.uint8) * 255


def _fundus(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    drawn = fundus_image(h, w, seed)
    rgb = np.rint(drawn.image.transpose(1, 2, 0) * 255).astype(np.uint8)
    return rgb, drawn.vessel.astype(np.uint8) * 255, drawn.fov.astype(np.uint8) * 255


def octa500(root: Path, subset: str = "3M", size: int = 12, combined: bool = False, gt_names: bool = False) -> dict:
    """OCTA_3mm/ProjectionMaps/OCTA(FULL|ILM_OPL|OPL_BM)/{id}.bmp (8-bit gray) and GroundTruth/<label>/{id}.bmp."""
    first, last = (10301, 10500) if subset == "3M" else (10001, 10300)
    base = root / ("OCTA_3mm" if subset == "3M" else "OCTA_6mm")
    rng = np.random.default_rng(0)
    written = {}
    label_dirs = {"RV": "GT_LargeVessel", "FAZ": "GT_FAZ"} if gt_names else {"RV": "RV", "FAZ": "FAZ"}
    for sample_id in range(first, last + 1):
        for proj in ("OCTA(FULL)", "OCTA(ILM_OPL)", "OCTA(OPL_BM)"):
            _gray(base / "ProjectionMaps" / proj / f"{sample_id}.bmp", rng.integers(0, 256, (size, size), np.uint8))
        rv = (rng.random((size, size)) < 0.3).astype(np.uint8) * 255
        faz = np.zeros((size, size), np.uint8)
        faz[size // 3 : size // 2, size // 3 : size // 2] = 255
        if combined:
            label = np.where(faz > 0, 100, rv).astype(np.uint8)
            _gray(base / "GroundTruth" / "GT_RV_FAZ" / f"{sample_id}.bmp", label)
            rv = np.where(faz > 0, 0, rv)
        else:
            _gray(base / "GroundTruth" / label_dirs["RV"] / f"{sample_id}.bmp", rv)
            _gray(base / "GroundTruth" / label_dirs["FAZ"] / f"{sample_id}.bmp", faz)
        written[str(sample_id)] = (rv, faz)
    return written


def rose1(root: Path, size: int = 16, n_train: int = 30, n_test: int = 9) -> dict:
    """{SVC,DVC,SVC_DVC}/{train,test}/{img,gt}/ (tif images, tif labels); SVC also thin_gt/ thick_gt/."""
    written = {}
    for plexus in ("SVC", "DVC", "SVC_DVC"):
        for split, count in (("train", n_train), ("test", n_test)):
            for i in range(count):
                stem = f"{i + 1:02d}" if split == "train" else f"{n_train + i + 1:02d}"
                base = root / plexus / split
                _gray(base / "img" / f"{stem}.tif", np.full((size, size), i, np.uint8))
                gt = _mask(size, size, i)
                _gray(base / "gt" / f"{stem}.tif", gt)
                if plexus == "SVC":
                    _gray(base / "thin_gt" / f"{stem}.tif", gt)
                    _gray(base / "thick_gt" / f"{stem}.tif", 255 - gt)
                written[(plexus, split, stem)] = gt
    return written


def drive(root: Path, h: int = 40, w: int = 38) -> dict:
    """training/{images/21_training.tif, 1st_manual/21_manual1.gif, mask/21_training_mask.gif}, test/ 01-20."""
    written = {}
    for split, ids, suffix in (("training", range(21, 41), "training"), ("test", range(1, 21), "test")):
        for i in ids:
            rgb, vessel, fov = _fundus(h, w, i)
            base = root / split
            _rgb(base / "images" / f"{i:02d}_{suffix}.tif", rgb)
            _gray(base / "1st_manual" / f"{i:02d}_manual1.gif", vessel)
            _gray(base / "mask" / f"{i:02d}_{suffix}_mask.gif", fov)
            written[f"{i:02d}"] = (rgb, vessel, fov)
    return written


STARE_IDS = ["im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081", "im0082", "im0139",
             "im0162", "im0163", "im0235", "im0236", "im0239", "im0240", "im0255", "im0291", "im0319", "im0324"]


def stare(root: Path, h: int = 121, w: int = 140) -> dict:
    """stare-images/im0001.ppm.gz, labels-ah/im0001.ah.ppm.gz, labels-vk/im0001.vk.ppm.gz (as distributed)."""
    written = {}
    for k, sample_id in enumerate(STARE_IDS):
        rgb, vessel, fov = _fundus(h, w, 100 + k)
        for folder, name, array in (("stare-images", f"{sample_id}.ppm", rgb),
                                    ("labels-ah", f"{sample_id}.ah.ppm", vessel),
                                    ("labels-vk", f"{sample_id}.vk.ppm", 255 - vessel)):
            ok, data = cv2.imencode(".ppm" if array.ndim == 3 else ".pgm",
                                    cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array)
            assert ok
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{name}.gz").write_bytes(gzip.compress(data.tobytes()))
        written[sample_id] = (rgb, vessel, fov)
    return written


def chase(root: Path, h: int = 96, w: int = 100) -> dict:
    """Image_01L.jpg, Image_01L_1stHO.png, Image_01L_2ndHO.png ... 14 subjects x L/R, one folder."""
    written = {}
    for subject in range(1, 15):
        for eye in "LR":
            sample_id = f"{subject:02d}{eye}"
            rgb, vessel, fov = _fundus(h, w, subject * 2 + (eye == "R"))
            _rgb(root / f"Image_{sample_id}.jpg", rgb)
            _gray(root / f"Image_{sample_id}_1stHO.png", vessel)
            _gray(root / f"Image_{sample_id}_2ndHO.png", vessel)
            written[sample_id] = (rgb, vessel, fov)
    return written


def oct_layers(root: Path, count: int = 3, h: int = 48, w: int = 64, classes: int = 9) -> dict:
    """images/bscan{i}.png (8-bit grey B-scans of wavy horizontal bands) and masks/bscan{i}.png (class
    indices: background above and below, layers 1..classes-1 top to bottom), as `retina convert-vgg` writes."""
    written = {}
    rng = np.random.default_rng(7)
    for i in range(count):
        columns = np.arange(w)
        top = h // 6 + np.rint(2 * np.sin(columns / 9 + i)).astype(int)
        thickness = max(1, (h * 2 // 3) // (classes - 1))
        rows = np.arange(h)[:, None]
        layer = (rows - top[None, :]) // thickness + 1
        mask = np.where((layer >= 1) & (layer < classes), layer, 0).astype(np.uint8)
        image = np.clip(40 + 20 * mask + rng.normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
        _gray(root / "images" / f"bscan{i}.png", image)
        _gray(root / "masks" / f"bscan{i}.png", mask)
        written[f"bscan{i}"] = (image, mask)
    return written
