"""Blended sliding-window inference (the MONAI / nnU-Net way): overlapping tiles aligned to the model's
stride, each tile's logits weighted (gaussian, sigma = tile / 8, or constant) and accumulated with the
weights on the output device in float32 (float64 for float64 models), so the full-size output and
weight map never sit on a small GPU; optional flip test-time augmentation."""

from __future__ import annotations

from typing import Callable, Optional

import torch


def tile_starts(size: int, tile: int, step: int) -> list[int]:
    """Tile origins along one axis: every `step` from 0, plus one flush with the end (no partial tile)."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def tile_weights(tile_h: int, tile_w: int, blend: str, dtype=torch.float32) -> torch.Tensor:
    """[tile_h, tile_w] weights: ones, or a gaussian of sigma = side / 8 centred on the tile, scaled to a
    maximum of 1 and floored at its smallest positive value (no zero weight where one tile covers a
    pixel alone)."""
    if blend == "constant":
        return torch.ones(tile_h, tile_w, dtype=dtype)

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (n / 8)) ** 2)

    weights = axis(tile_h)[:, None] * axis(tile_w)[None, :]
    weights = weights / weights.max()
    return weights.clamp_min(weights[weights > 0].min()).to(dtype)


def mean_over_flips(run, x: torch.Tensor) -> object:
    """The mean of `run` over `x` and its horizontal, vertical and double flips, each output flipped back
    (a tensor, or a dict of them)."""
    outputs = []
    for dims in ((), (-1,), (-2,), (-2, -1)):
        output = run(torch.flip(x, dims) if dims else x)
        if dims:
            output = ({k: torch.flip(v, dims) for k, v in output.items()} if isinstance(output, dict)
                      else torch.flip(output, dims))
        outputs.append(output)
    if isinstance(outputs[0], dict):
        return {k: sum(o[k] for o in outputs) / len(outputs) for k in outputs[0]}
    return sum(outputs) / len(outputs)


def _with_flips(model: torch.nn.Module, x: torch.Tensor, flips: bool) -> object:
    """model(x), or its mean over the identity and the three flips when `flips`."""
    return mean_over_flips(model, x) if flips else model(x)


def run_blend(model: torch.nn.Module, image: torch.Tensor, *, device: torch.device, output_device: torch.device,
              tile: tuple[int, int], overlap: float, blend: str, batch_size: int, multiple: int, flips: bool,
              out_dtype: torch.dtype, before_batch: Optional[Callable[[int], None]] = None) -> object:
    """Blended logits of `model` ([B, C, H, W] image on any device) on `output_device`, in `out_dtype`."""
    b, _, h, w = image.shape
    tile_h, tile_w = min(tile[0], h), min(tile[1], w)
    steps = []
    for side in (tile_h, tile_w):
        step = max(1, int(side * (1 - overlap)))
        if side >= multiple:  # tile origins on the stride grid, so every tile sees the image as the model would
            step = max(multiple, step // multiple * multiple)
        steps.append(step)
    origins = [(r, c) for r in tile_starts(h, tile_h, steps[0]) for c in tile_starts(w, tile_w, steps[1])]
    accumulate = torch.float64 if out_dtype == torch.float64 else torch.float32
    weights = tile_weights(tile_h, tile_w, blend, accumulate).to(output_device)
    sums: dict[str, torch.Tensor] = {}
    total = torch.zeros(h, w, dtype=accumulate, device=output_device)
    for r, c in origins:  # the weight map is the same for every image of the batch
        total[r : r + tile_h, c : c + tile_w] += weights
    named = False
    for sample in range(b):
        for first in range(0, len(origins), batch_size):
            chunk = origins[first : first + batch_size]
            if before_batch is not None:
                before_batch(len(chunk))
            tiles = torch.stack([image[sample, :, r : r + tile_h, c : c + tile_w] for r, c in chunk]).to(device)
            output = _with_flips(model, tiles, flips)
            named = isinstance(output, dict)
            for key, logits in (output.items() if named else (("", output),)):
                logits = logits.to(output_device, accumulate)
                if key not in sums:
                    sums[key] = torch.zeros(b, logits.shape[1], h, w, dtype=accumulate, device=output_device)
                for (r, c), one in zip(chunk, logits):
                    sums[key][sample, :, r : r + tile_h, c : c + tile_w] += one * weights
    results = {key: (value / total).to(out_dtype) for key, value in sums.items()}
    return results if named else results[""]
