"""Segment image files with a trained model: `predict_files(model, inputs, out)` writes, per image and at
its size, the probability map, the binary mask, an overlay, the skeleton and a JSON line of
measurements (components, holes, vessel density, skeleton length); multi-class models write a colour
class map. Streams any number of files; outputs already written are skipped on a rerun."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np
import torch

import retina_kernels

from .data.preprocess import estimate_fov
from .data.sample_preprocess import Preprocess
from .image_files import (
    IMAGE_SUFFIXES,
    file_digest,
    image_stem,
    images_by_stem,
    read_gray,
    read_image,
    write_bytes_atomic,
    write_image,
)
from .inference.tiled import check_input_range
from .metrics import betti_numbers
from .models import named_outputs

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


def channel_files(folders: Iterable[str | os.PathLike], sources: Optional[Sequence[str]] = None) -> list[tuple[Path, ...]]:
    """The images of folders that hold one channel each (OCTA-500's `OCTA(FULL)/`, `OCTA(ILM_OPL)/`, ...),
    grouped by file stem in the folders' order: [(first folder's file, second's, ...)] per stem. Every
    stem must be in every folder. `sources` (the model's channel names) only words the errors."""
    folders = [Path(f) for f in folders]
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"channel folders: {folder} is not a folder (each input is the folder of one channel)")
    listings = [images_by_stem(folder, "channel folder") for folder in folders]
    named = (lambda i: f"{folders[i]} ({sources[i]})") if sources else (lambda i: str(folders[i]))
    stems = sorted(set().union(*listings))
    for i, listing in enumerate(listings):
        missing = [stem for stem in stems if stem not in listing]
        if missing:
            raise ValueError(f"channel folder {named(i)} has no {missing[0]!r}"
                             f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}: every image "
                             "needs its file in every channel folder, matched by stem")
    return [tuple(listing[stem] for listing in listings) for stem in stems]


def _unit_float(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] for 8-bit (/ 255) and 16-bit (/ 65535) images; float images as they are."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0 if image.dtype == np.uint8 else 1.0
    return image.astype(np.float32) / scale


def read_channels(paths: Sequence[Path]) -> torch.Tensor:
    """float32 [len(paths), H, W] in [0, 1]: one gray image per channel, stacked (all the same size; a
    colour image is refused, not made gray: a channel folder holds one channel)."""
    channels = [_unit_float(read_gray(path, "an image of a channel folder")) for path in paths]
    for path, channel in zip(paths[1:], channels[1:]):
        if channel.shape != channels[0].shape:
            raise ValueError(f"{path}: {channel.shape[1]}x{channel.shape[0]} (width x height), but {paths[0]} is "
                             f"{channels[0].shape[1]}x{channels[0].shape[0]}")
    return torch.from_numpy(np.stack(channels))


def read_for_model(path: Path, in_channels: int, sources: Optional[Sequence[str]] = None) -> torch.Tensor:
    """float32 [in_channels, H, W] in [0, 1]: gray images repeated to RGB, RGB made gray (luminance) for
    one-channel models; 8-bit / 255, 16-bit / 65535. `sources`: the model's channels came from separate
    images (the checkpoint's `channel_sources`): a gray image is then an error, not repeated."""
    image = read_image(path)
    if image.ndim == 3:
        image = image[..., :3]
        if in_channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    else:
        image = image[..., None]
    array = _unit_float(image)
    if array.shape[2] == 1 and in_channels > 1:
        if sources and len(sources) > 1:
            raise ValueError(f"{path}: one channel, but the model takes {len(sources)} images stacked as channels "
                             f"({', '.join(sources)}): give one folder per channel, in that order, with "
                             "--channel-folders (predict_files(channel_folders=True)), or images holding "
                             f"{in_channels} channels")
        array = np.repeat(array, in_channels, 2)
    if array.shape[2] != in_channels:
        raise ValueError(f"{path}: {array.shape[2]} channels, but the model takes {in_channels}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _outputs(out: Path, stem: str) -> dict[str, Path]:
    return {kind: out / kind / f"{stem}.png" for kind in OUTPUTS}


def _write_output(logits: torch.Tensor, gray: np.ndarray, targets: dict[str, Path], threshold: float,
                  pixel_mm: Optional[float], prob_bits: int = 8, name: str = "",
                  fov: Optional[np.ndarray] = None, measure_as: Optional[str] = None,
                  axial_mm: Optional[float] = None) -> dict:
    """Writes one output's files from its logits [K, H, W]; returns its measurements (retina.biomarkers:
    FAZ shape for an output named "faz", vessel measurements for other binary outputs, layer thickness
    for class maps). `fov` (bool [H, W]): vessel densities are taken inside it (a fundus photograph's
    field of view), not over the whole rectangle. `measure_as`: "faz" measures the mask as a FAZ
    (default: when the output is named "faz"). `axial_mm`: a class map's (OCT B-scan's) pixel height in
    mm, for layer thickness in mm (the lateral `pixel_mm` is not it: OCT pixels are far from square)."""
    measure_as = measure_as or ("faz" if name == "faz" else None)
    from . import biomarkers

    line: dict = {}
    if logits.shape[0] == 1:
        prob = torch.sigmoid(logits[0])
        mask = prob > threshold
        skeleton = retina_kernels.skeletonize(mask[None, None].to(torch.uint8))[0, 0].bool()
        components, holes = betti_numbers(mask).tolist()
        line.update(components=components, holes=holes)
        if measure_as == "faz":
            # the FAZ is one zone: its area and shape are the largest component's (faz_measurements); the
            # fraction of the image predicted as FAZ, spurious specks included, is reported beside them
            line.update(area_fraction=float(mask.float().mean()))
            if pixel_mm is not None:
                line.update(pixel_mm=pixel_mm)
            line.update(biomarkers.faz_measurements(mask, pixel_mm))
        else:
            inside = torch.ones_like(mask) if fov is None else torch.from_numpy(fov)
            area = max(int(inside.sum()), 1)
            line.update(vessel_density=int((mask & inside).sum()) / area, skeleton_pixels=int(skeleton.sum()),
                        skeleton_density=int((skeleton & inside).sum()) / area)
            if fov is not None:
                line.update(fov_fraction=float(inside.float().mean()))
            if pixel_mm is not None:
                line.update(pixel_mm=pixel_mm, area_mm2=float(mask.sum()) * pixel_mm**2)
            measured = biomarkers.vessel_measurements(mask, pixel_mm, fov)
            line.update({key: value for key, value in measured.items() if key not in line})
        picture = np.repeat(gray[..., None], 3, 2)
        picture[mask.numpy()] = (0.5 * picture[mask.numpy()] + (120, 100, 0)).astype(np.uint8)
        picture[skeleton.numpy()] = (255, 30, 30)
        top, dtype = (65535, np.uint16) if prob_bits == 16 else (255, np.uint8)
        write_image(targets["prob"], np.rint(prob.numpy() * top).astype(dtype))
        write_image(targets["mask"], mask.numpy().astype(np.uint8) * 255)
        write_image(targets["skeleton"], skeleton.numpy().astype(np.uint8) * 255)
    else:
        classes = logits.argmax(0).numpy()
        colours = _PALETTE[classes % len(_PALETTE)]
        line.update(class_fractions=[float((classes == c).mean()) for c in range(logits.shape[0])])
        thickness = biomarkers.layer_thickness(classes, logits.shape[0], axial_mm=axial_mm)
        line.update({f"layer_thickness_mean_{'mm' if axial_mm else 'px'}": dict(thickness["mean"]),
                     "layers_out_of_order_columns": len(thickness["out_of_order"])})
        picture = (0.5 * np.repeat(gray[..., None], 3, 2) + 0.5 * colours).astype(np.uint8)
        write_image(targets["prob"], classes.astype(np.uint8))
        write_image(targets["mask"], colours)
        write_image(targets["skeleton"], np.zeros_like(gray))
    write_image(targets["overlay"], picture)
    return line


def _flat(row: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            out.update({f"{prefix}{key}.{i}": v for i, v in enumerate(value)})
        else:
            out[f"{prefix}{key}"] = value
    return out


def _csv(rows: list[dict]) -> bytes:
    """One row per image, one column per measurement (nested ones as output.key)."""
    import csv
    import io

    flat = [_flat(row) for row in rows]
    table = io.StringIO()
    writer = csv.DictWriter(table, list(dict.fromkeys(k for row in flat for k in row)))
    writer.writeheader()
    writer.writerows(flat)
    return table.getvalue().encode()


def _training_record(model: torch.nn.Module) -> dict:
    return getattr(model, "checkpoint_info", {}).get("training", {}) or {}


def recorded_preprocess(model: torch.nn.Module) -> Optional[Preprocess]:
    """The preprocessing a checkpoint's model was trained with (`retina.load` records it), if any."""
    recorded = _training_record(model).get("preprocess")
    return Preprocess(**recorded) if recorded else None


def faz_model(model: torch.nn.Module) -> bool:
    """Whether a checkpoint's single output was trained on FAZ labels alone (OCTA-500's "FAZ", the
    synthetic "faz"): its mask is then measured as a zone, like a named "faz" output."""
    names = _training_record(model).get("label_names") or []
    return len(names) == 1 and names[0].lower() == "faz"


def recorded_field_of_view(model: torch.nn.Module) -> bool:
    """Whether a checkpoint's model trained on images with a field of view (fundus photographs), so that
    its predictions are measured inside the one estimated from each image."""
    return bool(_training_record(model).get("field_of_view"))


def recorded_channel_sources(model: torch.nn.Module) -> Optional[tuple[str, ...]]:
    """The names of the images a checkpoint's model took stacked as channels (OCTA-500's projections),
    or None when one image held all its channels (or the checkpoint does not say)."""
    recorded = _training_record(model).get("channel_sources")
    return tuple(recorded) if recorded else None


Forward = Callable[[torch.nn.Module, torch.Tensor], object]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, values): which weights made an output."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


MANIFEST = "predict.json"


def _reuse_outputs(out: Path, manifest: dict, overwrite: bool, rank: int) -> None:
    """A rerun skips images already written (a killed run goes on), which is only right when they were
    written by the same weights and settings: `out/predict.json` records those. Different ones are an
    error naming them, unless `overwrite`, which drops the earlier per-image records first (rank 0; the
    others wait) so that a killed overwrite cannot leave a mix behind."""
    manifest = json.loads(json.dumps(manifest))  # as it reads back from the file
    path, records = out / MANIFEST, out / "measurements"
    earlier = json.loads(path.read_text()) if path.is_file() else None
    written = records.is_dir() and any(records.glob("*.json"))
    if earlier != manifest and written and not overwrite:
        changed = [key for key in dict.fromkeys([*(earlier or {}), *manifest])
                   if (earlier or {}).get(key) != manifest.get(key)]
        what = f"other {', '.join(changed)}" if earlier is not None else "unrecorded settings (an older retina)"
        raise ValueError(f"{out} holds predictions made with {what}: choose another output folder, or overwrite "
                         "them (--overwrite / overwrite=True)")
    if rank == 0 and (earlier != manifest or overwrite):
        if written:
            for record in records.glob("*.json"):
                record.unlink()
        write_bytes_atomic(path, json.dumps(manifest, indent=2).encode())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def whole_image(model: torch.nn.Module, image: torch.Tensor) -> object:
    return model(image)


@torch.no_grad()
def predict_files(model: torch.nn.Module, inputs: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                  device: str | torch.device = "cpu", threshold: float = 0.5, pixel_mm: Optional[float] = None,
                  preprocess: Optional[Preprocess] = None, forward: Forward = whole_image, prob_bits: int = 8,
                  rank: int = 0, world: int = 1, channel_folders: bool = False, overwrite: bool = False,
                  settings: Optional[dict] = None, axial_mm: Optional[float] = None,
                  progress: Optional[Callable[[int, int, str], None]] = None) -> Path:
    """Segments every input with `model` into `out`; returns the measurements file. `progress(done, total,
    stem)` is called before each image (done: images finished, stem: the one begun) and once at the end.

    `channel_folders`: the inputs are folders holding one channel each, in the model's channel order
    (OCTA-500's `OCTA(FULL)/ OCTA(ILM_OPL)/ OCTA(OPL_BM)/`), whose files are stacked by stem; otherwise
    each input image (or folder of images) holds every channel. A model trained on channels from separate
    images (`recorded_channel_sources`) refuses a gray image rather than repeating it into each channel.

    A model trained on photographs with a field of view (fundus; `recorded_field_of_view`) has its
    vessel densities measured inside the FOV estimated from each colour image (`estimate_fov`; the line's
    `fov_fraction` says how much of the image that is), not over the dark surround too.

    A rerun into the same `out` skips the images already written when the weights and settings are the
    same (`out/predict.json` records them: the weights' digest, threshold, depth, pixel size,
    preprocessing, and the caller's `settings`, e.g. the tiling mode); different ones are an error unless
    `overwrite`.

    `pixel_mm`: the pixel size for vessel and FAZ measurements in mm; `axial_mm`: a class map's (OCT
    B-scan's) pixel height in mm, for layer thickness in mm (pixels without it).

    Each image is read to the model's channel count, prepared with `preprocess` (by default what the
    checkpoint records: `retina.load` models carry it), run through `forward(model, [1, C, H, W])` (the
    whole image by default; `retina.inference.predict` for tiles), and its logits are resized back to
    the input's size. Per image `<stem>`: `prob/<stem>.png` (8- or 16-bit probability, `prob_bits`), `mask/<stem>.png`
    (prob > threshold), `overlay/<stem>.png`, `skeleton/<stem>.png` and `measurements/<stem>.json`
    (written last: an image with its JSON is skipped on a rerun); at the end `measurements.jsonl` holds
    every image's line. Multi-class outputs write the argmax class map in colour as `mask` and its index
    map as `prob`; a model with named outputs writes each under `out/<name>/`. `rank` of `world`: this
    process's share of the files (every world-th), for `torchrun`; rank 0 writes the jsonl."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if prob_bits not in (8, 16):
        raise ValueError(f"prob_bits must be 8 or 16, got {prob_bits!r}")
    for name, size in (("pixel_mm", pixel_mm), ("axial_mm", axial_mm)):
        if size is not None and not (isinstance(size, (int, float)) and 0 < size < float("inf")):
            raise ValueError(f"{name} must be a pixel size in mm > 0, got {size!r}")
    out = Path(out)
    in_channels = getattr(model, "config", {}).get("in_channels", 1)
    preprocess = preprocess if preprocess is not None else recorded_preprocess(model)
    sources = recorded_channel_sources(model)
    field_of_view = recorded_field_of_view(model)
    faz_labels = faz_model(model)
    trained_on = set(_training_record(model).get("image_digests") or ())
    if channel_folders:
        inputs = list(inputs)
        if len(inputs) != in_channels:
            named = f" ({', '.join(sources)})" if sources else ""
            raise ValueError(f"channel folders: {len(inputs)} given, but the model takes {in_channels} channels"
                             f"{named}, one folder each")
        if preprocess is not None and preprocess.gray is not None:
            raise ValueError("channel folders: the model's recorded preprocessing makes its input from one colour "
                             "image; give the colour images themselves")
        groups = channel_files(inputs, sources)
    else:
        groups = [(path,) for path in input_files(inputs)]
    channels_to_read = 3 if preprocess is not None and preprocess.gray is not None else in_channels
    manifest = {"weights_sha256": weights_digest(model), "threshold": threshold, "prob_bits": prob_bits,
                "pixel_mm": pixel_mm, "axial_mm": axial_mm,
                "preprocess": preprocess.to_dict() if preprocess is not None else None,
                "channel_folders": channel_folders, **(settings or {})}
    _reuse_outputs(out, manifest, overwrite, rank)
    model = model.to(device).eval()
    files = [group[0] for group in groups]
    for done, group in enumerate(groups):
        path = group[0]
        stem = image_stem(path)
        if progress is not None:
            progress(done, len(files), stem)
        measurements = out / "measurements" / f"{stem}.json"
        if done % world != rank or measurements.is_file():
            continue
        image = read_channels(group) if channel_folders else read_for_model(path, channels_to_read, sources)
        prepared = preprocess.image(image) if preprocess is not None else image
        check_input_range(model, prepared)
        gray = np.rint(image[:3].mean(0).numpy() * 255).astype(np.uint8)
        fov = estimate_fov(image.numpy()) if field_of_view and image.shape[0] == 3 else None
        line: dict = {"id": stem, "file": ";".join(map(str, group)), "height": int(image.shape[1]),
                      "width": int(image.shape[2])}
        if trained_on:  # the checkpoint knows its training images: is this one of them (or a copy)?
            line["in_training_data"] = "+".join(file_digest(p) for p in group) in trained_on
        for name, logits in named_outputs(forward(model, prepared[None].to(device))).items():
            logits = logits.float()
            if logits.shape[-2:] != image.shape[-2:]:  # back to the input's size
                logits = torch.nn.functional.interpolate(logits, size=image.shape[-2:], mode="bilinear")
            targets = _outputs(out / name if name else out, stem)
            written = _write_output(logits.cpu()[0], gray, targets, threshold, pixel_mm, prob_bits, name, fov,
                                    "faz" if not name and faz_labels else None, axial_mm)
            line.update({name: written} if name else written)
        write_bytes_atomic(measurements, json.dumps(line).encode())
    if progress is not None:
        progress(len(files), len(files), "")  # all done
    if world > 1 and torch.distributed.is_initialized():  # every rank's JSON is written before rank 0 reads them
        torch.distributed.barrier()
    lines = [(out / "measurements" / f"{image_stem(p)}.json").read_text() for p in files]
    if rank == 0:
        write_bytes_atomic(out / "measurements.jsonl", ("\n".join(lines) + "\n").encode() if lines else b"")
        write_bytes_atomic(out / "measurements.csv", _csv([json.loads(line) for line in lines]))
    return out / "measurements.jsonl"
