"""`IterNet`: Li et al., "IterNet: Retinal Image Segmentation Utilizing Structural Redundancy in Vessel
Networks" (WACV 2020), as its public Keras code builds it, and `IterNet.from_keras` for the released
weights."""

from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from ..nn import SegmentationHead, pad_to_multiple
from .base import SegmentationModel


class _Block(nn.Sequential):
    """conv 3x3 -> ReLU -> dropout, twice (no normalisation, as the paper)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(dropout))


class _Up(nn.Module):
    """2x2 stride-2 transposed conv, concatenated before the skip, then a block."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.block = _Block(2 * out_channels, out_channels, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], 1))


class IterNet(SegmentationModel):
    """A 5-level UNet (width·1 … width·16, dropout, no normalisation), then `iterations` weight-shared
    mini-UNets (width, 2·width, 4·width). Iteration i reads the previous iteration's last width-channel
    map; after its first block, a 1x1 convolution (its own, not shared) fuses the concatenation of
    every first-block map so far, the main UNet's included ((i + 2)·width channels). One 1x1 head per
    iteration input (`out11`, `out12`, ...) and one on the last map (`final_out`).

    Shapes: [B, in_channels, H, W] (any H, W: padded to 16 internally) -> in training, a list of
    `iterations + 1` logits [B, num_classes, H, W] (deep supervision: the loss on each, as the paper);
    in eval, the last. The paper's model: `width=32, iterations=3`, 8.25 M parameters. The released
    Keras weights (`from_keras`) were trained on DRIVE, CHASE-DB1 and STARE with their test images used
    for model selection: do not report test figures of those weights on those sets as unbiased.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, width: int = 32, iterations: int = 3,
                 dropout: float = 0.1, checkpointing: bool = False):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.iterations, self.checkpointing = iterations, checkpointing
        w = [width * 2**level for level in range(5)]
        self.encoder = nn.ModuleList(_Block(c_in, c_out, dropout) for c_in, c_out in zip([in_channels, *w[:-1]], w))
        self.decoder = nn.ModuleList(_Up(w[level + 1], w[level], dropout) for level in reversed(range(4)))
        self.pool = nn.MaxPool2d(2)
        # the mini-UNet, shared by every iteration
        self.mini_encoder = nn.ModuleList(_Block(c_in, c_out, dropout) for c_in, c_out in
                                          zip([width, width, 2 * width], w[:3]))
        self.mini_decoder = nn.ModuleList(_Up(w[level + 1], w[level], dropout) for level in reversed(range(2)))
        self.fusions = nn.ModuleList(nn.Conv2d((i + 2) * width, width, 1) for i in range(iterations))
        self.heads = nn.ModuleList(SegmentationHead(width, num_classes) for _ in range(iterations + 1))

    @property
    def size_multiple(self) -> int:
        return 16

    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        x, (h, w) = pad_to_multiple(x, 16)
        skips = []
        for level, block in enumerate(self.encoder):
            x = self._run(block, x if level == 0 else self.pool(x))
            skips.append(x)
        for up, skip in zip(self.decoder, reversed(skips[:-1])):
            x = self._run(up, x, skip)
        firsts, outputs = [skips[0]], []
        for fusion, head in zip(self.fusions, self.heads):
            outputs.append(head(x))
            first = self._run(self.mini_encoder[0], x)
            firsts.append(first)
            first = fusion(torch.cat(firsts, 1))
            second = self._run(self.mini_encoder[1], self.pool(first))
            third = self._run(self.mini_encoder[2], self.pool(second))
            x = self._run(self.mini_decoder[0], third, second)
            x = self._run(self.mini_decoder[1], x, first)
        outputs.append(self.heads[-1](x))
        outputs = [o[..., :h, :w] for o in outputs]
        return outputs if self.training else outputs[-1]

    # -- the released Keras weights ---------------------------------------------------------------------
    def keras_layers(self) -> list[nn.Module]:
        """The modules in the order the released file stores their weights: the main UNet (encoder,
        then each decoder level's transposed conv and block), the mini-UNet's first block, the first
        fusion, the rest of the mini-UNet, the other fusions, the heads."""
        def convs(module: nn.Module) -> list[nn.Module]:
            return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]

        order = [c for block in self.encoder for c in convs(block)]
        order += [c for up in self.decoder for c in convs(up)]
        order += convs(self.mini_encoder[0]) + [self.fusions[0]]
        order += [c for block in (*self.mini_encoder[1:], *self.mini_decoder) for c in convs(block)]
        order += list(self.fusions[1:]) + list(self.heads)
        return order

    @classmethod
    def from_keras(cls, path: Union[str, os.PathLike], **kwargs) -> "IterNet":
        """An IterNet with the weights of a Keras IterNet `.h5` file (the released full-model checkpoints,
        or `save_weights` files). Weighted layers are matched by their order in the file and their shapes
        (asserted; the layer names in the file do not follow the weight names); Conv2D kernels
        [kh, kw, in, out] and Conv2DTranspose kernels [kh, kw, out, in] become PyTorch's layouts. The
        model's width, iterations and channels are read from the file's shapes; `kwargs` override."""
        try:
            import h5py
        except ImportError:
            raise ImportError("IterNet.from_keras reads .h5 files with h5py: pip install h5py") from None
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            arrays = []
            for layer in _names(group.attrs["layer_names"]):
                for weight in _names(group[layer].attrs.get("weight_names", [])):
                    arrays.append((f"{layer}/{weight}", group[layer][weight][()]))
        kernels = [a for name, a in arrays if a.ndim == 4]
        if len(kernels) < 20:
            raise ValueError(f"{path}: {len(kernels)} convolution kernels; not an IterNet weights file")
        first, last = kernels[0], kernels[-1]
        # 1x1 kernels reading `width` channels are the heads, one per iteration plus the final one
        heads = sum(1 for k in kernels if k.shape[:2] == (1, 1) and k.shape[2] == first.shape[3])
        inferred = {"in_channels": first.shape[2], "width": first.shape[3], "num_classes": last.shape[3],
                    "iterations": heads - 1}
        model = cls(**{**inferred, **kwargs})
        layers = model.keras_layers()
        expected = 2 * len(layers)
        if len(arrays) != expected:
            raise ValueError(f"{path}: {len(arrays)} weight arrays, an IterNet of {model.config} has {expected}")
        with torch.no_grad():
            for i, module in enumerate(layers):
                (kernel_name, kernel), (_, bias) = arrays[2 * i], arrays[2 * i + 1]
                weight = torch.from_numpy(kernel).permute(3, 2, 0, 1)  # both conv kinds, see the docstring
                if tuple(weight.shape) != tuple(module.weight.shape) or tuple(bias.shape) != tuple(module.bias.shape):
                    raise ValueError(f"{path}: {kernel_name} {tuple(kernel.shape)} does not fit layer {i} of the model "
                                     f"(weight {tuple(module.weight.shape)})")
                module.weight.copy_(weight)
                module.bias.copy_(torch.from_numpy(bias))
        return model.eval()


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
