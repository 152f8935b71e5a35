"""Image files: list a folder's images by stem, read with a clear error, write atomically (a killed run
never leaves a half-written file). Every folder of images that retina reads (datasets, `retina evaluate`)
is listed by `images_by_stem`, so they all agree on what a folder holds."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import warnings
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


# Formats whose OpenCV decoders accept a truncated file and return what they decoded (or read only the
# first page of a multi-page file): these are checked with Pillow, which refuses both.
_VERIFIED_SUFFIXES = (".bmp", ".tif", ".tiff")


def read_image(path: str | os.PathLike, *, grayscale: bool = False) -> np.ndarray:
    """Reads an image with OpenCV: png, jpg, bmp, tif (8/16-bit), gif (first frame), ppm/pgm, and any of
    them gzip-compressed (`.ppm.gz`, as STARE ships). Colour comes back in RGB(A) order, [H, W, 3|4];
    gray as [H, W], in the file's dtype. BMP and TIFF files are also checked to be complete and, for TIFF,
    single-page. Raises FileNotFoundError / ValueError naming the file (missing, a folder, corrupt,
    truncated, several pages, or larger than OpenCV's pixel limit)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"cannot read {path}: not a regular file")
    flags = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_UNCHANGED
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            try:
                data = gzip.decompress(path.read_bytes())
            except (OSError, EOFError) as exc:
                raise ValueError(f"cannot read {path}: not a valid gzip file ({exc})") from None
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        else:
            if name.endswith(_VERIFIED_SUFFIXES):
                _verify_with_pillow(path)
            image = cv2.imread(str(path), flags)
    except cv2.error as exc:  # e.g. an image over OpenCV's pixel limit (CV_IO_MAX_IMAGE_PIXELS)
        raise ValueError(f"cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None and name.endswith(".gif"):
        image = _read_gif_with_pillow(path, grayscale)
    if image is None:
        raise ValueError(f"cannot read {path} as an image (unsupported or corrupt file, or over OpenCV's pixel limit)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def _verify_with_pillow(path: Path) -> None:
    """Refuses a truncated or corrupt file and a multi-page TIFF (Pillow decodes the whole file; OpenCV
    would return what it decoded of a truncated one). Without Pillow the check is skipped."""
    try:
        from PIL import Image
    except ImportError:
        return
    try:
        with warnings.catch_warnings():  # Pillow's warnings about the file: the error below says it
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                pages = getattr(image, "n_frames", 1)
                if pages > 1:
                    raise ValueError(f"cannot read {path}: it has {pages} pages, and retina reads single-page images "
                                     "(save each page as its own file)")
                image.load()
    except ValueError:
        raise
    except Exception as exc:  # Pillow's truncation (OSError), format and decompression-bomb errors
        raise ValueError(f"cannot read {path}: corrupt or truncated file ({exc})") from None


def read_gray(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """A one-channel image [H, W] in the file's own depth (8-bit, 16-bit or float: OpenCV's grayscale
    flag would cut 16 bits to 8). Colour files whose channels are equal count as gray (an alpha channel
    is ignored); other colour files are refused, naming `what` (an overlay is not a probability map)."""
    image = read_image(path)
    if image.ndim == 3:
        colour = image[..., :3]
        if not (colour == colour[..., :1]).all():
            raise ValueError(f"{path}: a colour image, but {what} must be one channel (gray)")
        image = colour[..., 0]
    return image


def read_mask(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Reads a binary mask whatever its encoding, and says which it was.

    Accepted: gray or colour images holding at most two distinct values (0/1, 0/255, 0/65535, any
    two: the larger is foreground); colour images whose channels are equal, or whose pixels are black
    and one colour (a class drawn in colour). Returns (bool [H, W], a description such as
    "values {0, 1}"). Raises ValueError naming the file when the image is not binary (a photograph, a
    probability map, a JPEG's compression noise) or cannot be read."""
    path = Path(path)
    image = read_image(path)
    if image.ndim == 3:
        pixels = image.reshape(-1, image.shape[2])
        colours = np.unique(pixels, axis=0)
        if len(colours) > 2:
            raise ValueError(f"{path}: a mask must hold two values, but this colour image holds {len(colours)} "
                             "distinct colours")
        if len(colours) == 2 and colours[0].any():
            raise ValueError(f"{path}: a colour mask must be black and one colour, got colours "
                             f"{[tuple(int(v) for v in c) for c in colours]}")
        foreground = image.any(axis=2)
        described = f"colour {tuple(int(v) for v in colours[-1])} on black" if len(colours) == 2 else "one colour"
        return foreground, described
    values = np.unique(image)
    if len(values) > 2:
        raise ValueError(f"{path}: a mask must hold two values, but it holds {len(values)} "
                         f"(e.g. {', '.join(str(v) for v in values[:4])}, ...): not a binary mask")
    if len(values) == 1:
        return image != 0, f"the single value {values[0]}"
    return image == values[1], f"values {{{values[0]}, {values[1]}}}"


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


def _new_file_mode() -> int:
    """The mode a plain open() would give a new file: 0o666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def file_digest(path: str | os.PathLike, algorithm: str = "blake2b") -> str:
    """The hex digest of a file's bytes, read in 1 MiB blocks: blake2b-128 by default (what identifies an
    image file by content), or any hashlib name ("sha256": a weights file's usual published checksum)."""
    digest = hashlib.blake2b(digest_size=16) if algorithm == "blake2b" else hashlib.new(algorithm)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def writable_target(path: str | os.PathLike) -> Path:
    """Checks, before any work, that `path` can be written atomically: it is a regular file or does not
    exist, its parent is (or can be made) a folder, and that folder is writable. Returns it as a Path;
    raises ValueError naming the path and the reason."""
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, a pipe, ...)"
        raise ValueError(f"cannot write {path}: it is {kind}")
    parent = path.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"cannot write {path}: {ancestor} is a file, not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise ValueError(f"cannot write {path}: the folder {ancestor} is not writable")
            break
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, syncs it, then renames it over `path`: readers see
    the old file or the new one, never a part. Only regular files (or nothing) are replaced: a folder, a
    device or a pipe at `path` is refused (renaming over a device node would destroy it). The file gets
    the mode a normal write would (the existing file's, else 0o666 less the umask)."""
    path = writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.is_file() else _new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_image_suffix(path: str | os.PathLike) -> Path:
    """Checks that OpenCV can encode an image for `path`'s suffix (png, jpg, bmp, tif, ...)."""
    path = Path(path)
    if not path.suffix or not cv2.haveImageWriter(f"x{path.suffix}"):
        raise ValueError(f"cannot write {path}: no image encoder for the suffix {path.suffix or '(none)'!r}; "
                         "use .png, .tif, .bmp or .jpg")
    return path


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes an image (gray [H, W] or RGB [H, W, 3]) atomically: encode, write a temporary file beside
    the target, then rename over it."""
    path = writable_target(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix!r} for {path}")
    return write_bytes_atomic(path, encoded.tobytes())
