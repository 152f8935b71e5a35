"""`predict`: a model's logits for an image of any size, whole, tiled exactly, or blended."""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import numpy as np
import torch

from ..models.base import main_output
from ..models.ensemble import Ensemble, mean_probability_logits
from .blend import mean_over_flips, run_blend
from .exact import describe_budget, minimal_tile_bytes, run_exact
from .memory import Memory, budget_for, measured_peak, parse_memory

MODES = ("auto", "whole", "exact", "blend")
PROBE = 64  # side of the probe tile whose measured peak predicts larger inputs


def _as_batch(image) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not torch.is_tensor(image):
        raise TypeError(f"image must be a torch tensor or a numpy array, got {type(image).__name__}")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4:
        raise ValueError(f"image must be [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"image must be floating point (float32 in [0, 1] as retina's datasets give), got {image.dtype}")
    return image


def check_input_range(model: torch.nn.Module, image: torch.Tensor) -> None:
    """A checkpoint records the range of the inputs its model trained on; an image that reaches more than
    that range's width (at least 1) beyond it (0-255 floats for a model of [0, 1] images) would give a
    confident wrong answer, so it is refused."""
    recorded = (getattr(model, "checkpoint_info", {}).get("training") or {}).get("input_range")
    if not recorded or not image.numel():
        return
    low, high = recorded
    width = max(high - low, 1.0)  # at least a unit: training data of one grey level must not refuse all else
    least, most = (float(v) for v in torch.aminmax(image))
    if most > high + width or least < low - width:
        raise ValueError(f"image values span [{least:g}, {most:g}], but the model was trained on inputs in "
                         f"[{low:g}, {high:g}] (its checkpoint's input_range): scale the image as its training "
                         "data was (retina's datasets give 8-bit images / 255, 16-bit / 65535)")


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    parameter = next(model.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


def _tile_size(tile, multiple: int, name: str = "tile") -> Optional[tuple[int, int]]:
    if tile == "auto":
        return None
    sides = (tile, tile) if isinstance(tile, int) and not isinstance(tile, bool) else tuple(tile)
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise ValueError(f"{name} must be 'auto', an int or (height, width), got {tile!r}")
    if min(sides) <= 0:
        raise ValueError(f"{name} must be > 0, got {tile!r}")
    if any(s % multiple for s in sides):
        raise ValueError(f"{name} {tile!r} is not a multiple of the model's stride {multiple}: tiles must lie on its grid")
    return sides


def probe_bytes_per_pixel(model: torch.nn.Module, channels: int, device: torch.device, dtype: torch.dtype,
                          multiple: int) -> Optional[float]:
    """Peak device bytes per input pixel of one forward, measured on a probe tile (CUDA); None on the CPU."""
    side = max(PROBE, multiple)
    probe = torch.zeros(1, channels, side, side, dtype=dtype, device=device)
    with torch.no_grad():
        peak = measured_peak(lambda: model(probe), device)
    return None if peak is None else peak / (side * side)


def predict(model: torch.nn.Module, image: Union[torch.Tensor, np.ndarray], *, mode: str = "auto",
            tile: Union[str, int, tuple[int, int]] = "auto", overlap: float = 0.25, blend: str = "gaussian",
            max_memory: Memory = None, batch_size: Union[str, int] = "auto", device=None, output_device="cpu",
            amp: Optional[torch.dtype] = None, flips: bool = False, progress: bool = False,
            _before_tile=None):
    """The logits of `model` for `image`, whole or in tiles, on `output_device`.

    Args:
        model: a retina model (any module returning logits [B, K, H, W] or a dict of them); run in eval mode.
        image: [C, H, W] or [B, C, H, W], tensor or numpy, floating, finite.
        mode: "whole" (one forward), "exact" (tiles whose result equals the whole-image forward:
            retina.inference.exact), "blend" (overlapping tiles blended), or "auto": whole when the measured
            estimate fits `max_memory`, else the way the model was trained: blend at the training patch size
            for patch-trained checkpoints (`model.checkpoint_info`), exact otherwise.
        tile: output side of a tile (exact mode: of every operator's tile; blend: of the model's input
            tile), an int, (h, w), or "auto" (the largest that fits `max_memory`; blend: the training patch).
            Explicit tiles must be multiples of the model's stride (`model.size_multiple`).
        overlap: blend mode's tile overlap fraction, in [0, 1).
        blend: "gaussian" (sigma = tile / 8) or "constant" weights.
        max_memory: device bytes to stay within, an int or "2GiB"; None: the device's free memory less 15%.
        batch_size: tiles per forward in blend mode, or "auto".
        device: where the model computes (default: where its parameters are).
        output_device: where the logits are accumulated and returned ("cpu" keeps a small GPU free).
        amp: an autocast dtype (torch.bfloat16 / torch.float16) for whole and blend modes.
        flips: flip test-time augmentation: the mean logits over the image and its three flips (each
            un-flipped); blend mode flips each batch of tiles, the other modes the whole image.
        progress: a tqdm bar over tiles.

    Returns:
        float32 logits [B, K, H, W] (float64 for a float64 model), or a dict of them for named outputs.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    if not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be 'auto' or an int >= 1, got {batch_size!r}")
    again = functools.partial(predict, mode=mode, tile=tile, overlap=overlap, blend=blend, max_memory=max_memory,
                              batch_size=batch_size, device=device, output_device=output_device, amp=amp,
                              progress=progress, _before_tile=_before_tile)
    if isinstance(model, Ensemble):  # each member as it would run alone (its tiles, its patch), then averaged
        return mean_probability_logits([again(member, image, flips=flips) for member in model.members])
    if flips and mode != "blend":  # blend flips each batch of tiles; other modes flip the whole image
        return mean_over_flips(lambda x: again(model, x, flips=False), _as_batch(image))
    image = _as_batch(image)
    dtype = _model_dtype(model)
    channels = getattr(model, "config", {}).get("in_channels")
    if channels is not None and image.shape[1] != channels:
        raise ValueError(f"image has {image.shape[1]} channels, the model takes {channels}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image has NaN or infinite values")
    check_input_range(model, image)
    multiple = int(getattr(model, "size_multiple", 1))
    sides = _tile_size(tile, multiple)
    parameter = next(model.parameters(), None)
    if device is None:
        device = parameter.device if parameter is not None else "cpu"
    device = torch.device(device)
    output_device = torch.device(output_device)
    budget = budget_for(device, max_memory)
    explicit_budget = parse_memory(max_memory) is not None
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    model.eval()
    image = image.to(dtype)
    b, c, h, w = image.shape

    per_pixel = None
    if mode in ("auto", "blend") or (mode == "exact" and sides is None):
        model.to(device)
        per_pixel = probe_bytes_per_pixel(model, c, device, dtype, multiple)
    if mode == "auto":
        fits = per_pixel is None or per_pixel * h * w * b <= budget
        patch = getattr(model, "checkpoint_info", {}).get("training", {}).get("patch")
        mode = "whole" if fits else ("blend" if patch else "exact")
        if mode == "blend" and sides is None:
            sides = (patch, patch)
        if mode == "exact":
            amp = None  # exact computes in the model's dtype (asked for explicitly, amp is refused)
    bar = None
    if progress and mode != "whole":
        from tqdm.auto import tqdm

        bar = tqdm(unit="tile", desc=f"predict ({mode})", leave=False)  # transient: one per image

    def before_tile(*shape):
        if _before_tile is not None:
            _before_tile(*shape)
        if bar is not None:
            bar.update(1)

    try:
        if mode == "whole":
            model.to(device)
            with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                output = model(image.to(device))
            return _to(output, output_device, out_dtype)
        if mode == "blend":
            if sides is None:  # the largest stride-aligned square tile the measured probe says fits
                side = min(max(h, w), 512) if per_pixel is None else int(math.sqrt(budget / per_pixel))
                side = max(multiple, side // multiple * multiple)
                sides = (side, side)
            if batch_size == "auto":
                batch_size = 1 if per_pixel is None else max(1, int(budget // (per_pixel * sides[0] * sides[1])))
            with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                return run_blend(model, image, device=device, output_device=output_device, tile=sides, overlap=overlap,
                                 blend=blend, batch_size=batch_size, multiple=multiple, flips=flips,
                                 out_dtype=out_dtype, before_batch=before_tile)
        # exact
        if amp is not None:
            raise ValueError("amp: exact mode computes in the model's dtype (its result equals the whole-image "
                             "forward's); use mode='blend' for autocast")
        needed = minimal_tile_bytes(model, image.element_size())
        if explicit_budget and needed > budget:
            raise ValueError(describe_budget(needed, budget))
        side = sides[0] if sides is not None else 512
        home = parameter.device if parameter is not None else output_device
        try:  # the parameters live with the activations on the host; tiled operators copy theirs over
            output = run_exact(model.to(output_device), image.to(output_device), device, side, budget, before_tile)
        finally:
            model.to(home)
        return _to(output, output_device, out_dtype)
    finally:
        if bar is not None:
            bar.close()


def _to(output, device: torch.device, dtype: torch.dtype):
    output = main_output(output)  # deep supervision: the last output is the prediction
    if isinstance(output, dict):
        return {k: v.to(device, dtype) for k, v in output.items()}
    return output.to(device, dtype)
