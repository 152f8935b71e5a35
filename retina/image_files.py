"""Image files: list a folder's images by stem, read with a clear error, write atomically (a killed run
never leaves a half-written file). Every folder of images that retina reads (datasets, `retina evaluate`)
is listed by `images_by_stem`, so they all agree on what a folder holds."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

# What retina reads as an image file (each also gzip-compressed, as STARE ships its ppm files).
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm", ".pbm")


def image_stem(path: str | os.PathLike) -> str | None:
    """The name an image file is matched by: the file name less its image suffix (and ".gz"); None when
    the file is not an image by its name (`IMAGE_SUFFIXES`) or is hidden."""
    name = Path(path).name
    if name.startswith("."):
        return None
    if name.lower().endswith(".gz"):
        name = name[: -len(".gz")]
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in IMAGE_SUFFIXES and stem else None


def images_by_stem(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """{stem: path} of the image files directly in `folder` (`image_stem`; other files are ignored),
    sorted by stem. Raises FileNotFoundError when the folder is missing, and ValueError naming both files
    when two images share a stem (`im0.png` and `im0.bmp`: which one is meant cannot be guessed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = image_stem(path)
        if stem is None or not path.is_file():
            continue
        if stem in found:
            raise ValueError(f"{what}: two files for {stem!r} in {folder}: {found[stem].name} and {path.name}")
        found[stem] = path
    return dict(sorted(found.items()))


def read_image(path: str | os.PathLike, *, grayscale: bool = False) -> np.ndarray:
    """Reads an image with OpenCV: png, jpg, bmp, tif (8/16-bit), gif (first frame), ppm/pgm, and any of
    them gzip-compressed (`.ppm.gz`, as STARE ships). Colour comes back in RGB(A) order, [H, W, 3|4];
    gray as [H, W], in the file's dtype. Raises FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    flags = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_UNCHANGED
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as exc:
            raise ValueError(f"cannot read {path}: not a valid gzip file ({exc})") from None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    else:
        image = cv2.imread(str(path), flags)
    if image is None and path.suffix.lower() == ".gif":
        image = _read_gif_with_pillow(path, grayscale)
    if image is None:
        raise ValueError(f"cannot read {path} as an image (unsupported or corrupt file)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def _read_gif_with_pillow(path: Path, grayscale: bool) -> np.ndarray | None:
    """OpenCV builds without the gif codec (before 4.12, some distributions) read nothing; Pillow,
    where installed, does. Returns BGR like cv2, or None when neither can."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ValueError(f"cannot read {path}: this OpenCV has no gif codec; install opencv-python-headless>=4.12 "
                         f"or pillow") from None
    try:
        with Image.open(path) as gif:
            if grayscale:
                return np.asarray(gif.convert("L"))
            return np.ascontiguousarray(np.asarray(gif.convert("RGB"))[..., ::-1])
    except (UnidentifiedImageError, OSError):
        return None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, syncs it, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes an image (gray [H, W] or RGB [H, W, 3]) atomically: encode, write a temporary file beside
    the target, then rename over it."""
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix!r} for {path}")
    return write_bytes_atomic(path, encoded.tobytes())
