"""Exact tiled inference: the model's own forward, run on full-size activations kept in host memory,
with every operator that has a spatial extent (convolutions, snake convolutions) or a token axis
(linear layers, attention) evaluated on the compute device tile by tile.

Why this equals the whole-image result. A tile of a convolution's output needs exactly the input
rectangle its kernel reaches (stride, dilation and padding included; zero padding is applied where the
rectangle leaves the image, as the whole-image convolution does); a snake convolution's tap k reads
rows (morph 0) at most s·(K//2) away, so a halo of ceil(s·K//2) + 1 rows and K//2 columns holds every
sample it interpolates, and the border clamp happens where the image ends, as in the whole image.
Everything else runs once on the whole host tensor, in the image's coordinates: GroupNorm statistics
over the whole map, bilinear upsampling with align_corners (whose source position depends on the map's
size), padding to the stride multiple, pooling. Attention takes all keys and values to the device and
tiles the queries. No operator sees a tile boundary, so no global operator needs a special case and a
model needs no staging plan: the traps of tile-local normalisation and tile-size-dependent upsampling
cannot occur.

The device holds one operator's tile at a time (input with halo, output, weights); the host holds the
activations the forward keeps alive. An out-of-memory error halves the tile and carries on from the
tile that failed; finished tiles are kept.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .memory import format_bytes, out_of_memory

MIN_TILE = 8


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _is_dsconv(func) -> bool:
    """retina::dsconv2d (the op packet or its overload), as the DSConv layer calls it."""
    ops = getattr(torch.ops, "retina", None)
    packet = getattr(ops, "dsconv2d", None) if ops is not None else None
    return packet is not None and (func is packet or func is getattr(packet, "default", None))


class TileRunner:
    """Runs per-region work in tiles of at most `tile` output pixels a side, halving the tile (and then
    the batch) on an out-of-memory error without redoing finished regions.

    `before_tile(batch, rows, cols)` is called before each region's work: tests inject out-of-memory
    errors there; the progress bar counts there."""

    def __init__(self, device: torch.device, tile: int, budget: Optional[int] = None,
                 before_tile: Optional[Callable[[int, int, int], None]] = None):
        self.device, self.tile, self.budget = device, max(int(tile), MIN_TILE), budget
        self.before_tile = before_tile
        self.halvings = 0

    def run(self, batch: int, height: int, width: int, work: Callable[[int, int, int, int, int, int], None],
            bytes_per_pixel: float = 0.0) -> None:
        """work(b0, b1, r0, r1, c0, c1) for regions covering [0, batch) x [0, height) x [0, width)."""
        tile = self.tile
        if self.budget is not None and bytes_per_pixel > 0:  # the largest square tile whose estimate fits
            fitting = int(math.sqrt(max(self.budget / (bytes_per_pixel * batch), 1)))
            tile = max(MIN_TILE, min(tile, fitting))
        for r0 in range(0, height, tile):
            for c0 in range(0, width, tile):
                self._region(0, batch, r0, min(r0 + tile, height), c0, min(c0 + tile, width), work)

    def _region(self, b0, b1, r0, r1, c0, c1, work) -> None:
        try:
            if self.before_tile is not None:
                self.before_tile(b1 - b0, r1 - r0, c1 - c0)
            work(b0, b1, r0, r1, c0, c1)
            return
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.halvings += 1
        if b1 - b0 > 1:  # one image at a time first, then smaller tiles
            middle = (b0 + b1) // 2
            self._region(b0, middle, r0, r1, c0, c1, work)
            self._region(middle, b1, r0, r1, c0, c1, work)
            return
        if max(r1 - r0, c1 - c0) <= MIN_TILE:
            raise MemoryError(f"out of memory on {self.device} even for a {r1 - r0}x{c1 - c0} tile of one image: "
                              "free device memory or raise max_memory") from None
        self.tile = max(MIN_TILE, min(self.tile, max(r1 - r0, c1 - c0)) // 2)
        if r1 - r0 >= c1 - c0:
            middle = (r0 + r1) // 2
            self._region(b0, b1, r0, middle, c0, c1, work)
            self._region(b0, b1, middle, r1, c0, c1, work)
        else:
            middle = (c0 + c1) // 2
            self._region(b0, b1, r0, r1, c0, middle, work)
            self._region(b0, b1, r0, r1, middle, c1, work)


class ExactTiling(TorchFunctionMode):
    """While active, conv2d, retina's dsconv2d, linear and scaled-dot-product attention on host tensors
    run tile by tile on `runner.device` and return host tensors; every other operator runs as usual
    (on the host)."""

    def __init__(self, runner: TileRunner):
        super().__init__()
        self.runner = runner
        self.device = runner.device
        self._on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _dev(self, tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """A parameter on the device, moved once per run (keyed by identity; the host tensor is kept
        alive beside its copy so that the key cannot be reused)."""
        if tensor is None:
            return None
        if tensor.device == self.device:
            return tensor
        key = id(tensor)
        if key not in self._on_device:
            self._on_device[key] = (tensor, tensor.to(self.device))
        return self._on_device[key][1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            return self.conv2d(*args, **kwargs)
        if func is F.linear:
            return self.linear(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            return self.attention(*args, **kwargs)
        if _is_dsconv(func):
            return self.dsconv2d(*args, **kwargs)
        return func(*args, **kwargs)

    # -- convolutions ----------------------------------------------------------------------------------
    def conv2d(self, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if input.dim() != 4:
            return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        kh, kw = weight.shape[-2:]
        if isinstance(padding, str):
            if padding == "valid":
                top = bottom = left = right = 0
            else:  # "same": torch puts the odd extra pixel after
                top, left = dh * (kh - 1) // 2, dw * (kw - 1) // 2
                bottom, right = dh * (kh - 1) - top, dw * (kw - 1) - left
        else:
            (top, left) = _pair(padding)
            bottom, right = top, left
        b, _, h, w = input.shape
        out_h = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        out_w = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        weight_dev, bias_dev = self._dev(weight), self._dev(bias)
        out = input.new_empty(b, weight.shape[0], out_h, out_w)

        def work(b0, b1, r0, r1, c0, c1):
            # the input rectangle (padded coordinates minus the padding) that output rows r0..r1 read
            a0, a1 = r0 * sh - top, (r1 - 1) * sh + dh * (kh - 1) - top + 1
            e0, e1 = c0 * sw - left, (c1 - 1) * sw + dw * (kw - 1) - left + 1
            x = input[b0:b1, :, max(a0, 0) : min(a1, h), max(e0, 0) : min(e1, w)].to(self.device)
            x = F.pad(x, (max(-e0, 0), max(e1 - w, 0), max(-a0, 0), max(a1 - h, 0)))
            out[b0:b1, :, r0:r1, c0:c1] = F.conv2d(x, weight_dev, bias_dev, (sh, sw), 0, (dh, dw), groups)

        per_pixel = (input.shape[1] * sh * sw + weight.shape[0]) * input.element_size() * 2
        self.runner.run(b, out_h, out_w, work, per_pixel)
        return out

    def dsconv2d(self, input, offset, weight, bias=None, morph=0, extend_scope=1.0):

        centre = weight.shape[2] // 2
        reach = math.ceil(abs(float(extend_scope)) * centre) + 1  # the deformed axis, bilinear neighbour included
        halo_rows, halo_cols = (reach, centre) if morph == 0 else (centre, reach)
        b, _, h, w = input.shape
        weight_dev, bias_dev = self._dev(weight), self._dev(bias)
        out = input.new_empty(b, weight.shape[0], h, w)

        def work(b0, b1, r0, r1, c0, c1):
            a0, a1 = max(r0 - halo_rows, 0), min(r1 + halo_rows, h)
            e0, e1 = max(c0 - halo_cols, 0), min(c1 + halo_cols, w)
            x = input[b0:b1, :, a0:a1, e0:e1].to(self.device)
            o = offset[b0:b1, :, a0:a1, e0:e1].to(self.device)
            y = torch.ops.retina.dsconv2d(x, o, weight_dev, bias_dev, morph, float(extend_scope))
            out[b0:b1, :, r0:r1, c0:c1] = y[:, :, r0 - a0 : r1 - a0, c0 - e0 : c1 - e0]

        per_pixel = (input.shape[1] + offset.shape[1] + weight.shape[0]) * input.element_size() * 3
        self.runner.run(b, h, w, work, per_pixel)
        return out

    # -- token operators -------------------------------------------------------------------------------
    def linear(self, input, weight, bias=None):
        rows = input.reshape(-1, input.shape[-1])
        weight_dev, bias_dev = self._dev(weight), self._dev(bias)
        out = input.new_empty(rows.shape[0], weight.shape[0])

        def work(b0, b1, r0, r1, c0, c1):
            out[r0:r1] = F.linear(rows[r0:r1].to(self.device), weight_dev, bias_dev)

        _token_chunks(self.runner, rows.shape[0], work, (input.shape[-1] + weight.shape[0]) * input.element_size())
        return out.view(*input.shape[:-1], weight.shape[0])

    def attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if is_causal or dropout_p:
            raise NotImplementedError("exact tiling of causal or dropout attention (not used by retina's models)")
        key_dev, value_dev = key.to(self.device), value.to(self.device)
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        n = query.shape[-2]

        def work(b0, b1, r0, r1, c0, c1):
            mask = None if attn_mask is None else attn_mask[..., r0:r1, :].to(self.device)
            out[..., r0:r1, :] = F.scaled_dot_product_attention(query[..., r0:r1, :].to(self.device), key_dev, value_dev,
                                                                 attn_mask=mask, scale=scale, **kwargs)

        heads = math.prod(query.shape[:-2])
        _token_chunks(self.runner, n, work, heads * (key.shape[-2] + 2 * query.shape[-1]) * query.element_size())
        return out



def _token_chunks(runner: TileRunner, count: int, work, bytes_per_row: float) -> None:
    """work over [0, count) rows in chunks of tile² rows (a token is a pixel of the map it came from)."""
    rows = runner.tile**2
    if runner.budget is not None and bytes_per_row > 0:
        rows = max(MIN_TILE**2, min(rows, int(runner.budget / bytes_per_row)))
    for start in range(0, count, rows):
        runner._region(0, 1, start, min(start + rows, count), 0, 1, work)


def run_exact(model: torch.nn.Module, image: torch.Tensor, device: torch.device, tile: int,
              budget: Optional[int], before_tile=None) -> object:
    """model(image) with image (and the model's parameters) on the host and the tiled operators on
    `device`. Returns what the model returns, on the host."""
    runner = TileRunner(device, tile, budget, before_tile)
    with torch.no_grad(), ExactTiling(runner):
        return model(image)


def minimal_tile_bytes(model: torch.nn.Module, element_size: int) -> int:
    """What the smallest tile of the widest convolution needs on the device (its weights included):
    below this, exact mode cannot run."""
    needed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Conv2d) and weight is not None:
            k = max(weight.shape[-2:])
            pixels = (MIN_TILE + k) ** 2
            needed = max(needed, weight.numel() * element_size + pixels * (weight.shape[0] + weight.shape[1]) * element_size)
    return needed


def describe_budget(needed: int, budget: int) -> str:
    return f"max_memory {format_bytes(budget)} is below the {format_bytes(needed)} that one minimal tile needs"
