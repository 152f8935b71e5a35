"""Inference on images of any size within a device-memory budget.

- `predict(model, image, mode="auto" | "whole" | "exact" | "blend", ...)`: logits on the output device.
  `exact`: tiles whose result equals the whole-image forward (exact.py says why); `blend`: the
  overlapping-tile average of MONAI and nnU-Net, accumulated off the device.
- `receptive_field(model)`: how far an output pixel reaches, measured with frozen normalisation.
- `parse_memory("2GiB")`, `free_memory(device)`.
"""

from .memory import free_memory, parse_memory
from .receptive import receptive_field
from .tiled import MODES, predict

__all__ = ["MODES", "free_memory", "parse_memory", "predict", "receptive_field"]
