"""Training: `TrainConfig` (YAML round trip), `Trainer(config, out).fit()`, checkpoints that resume
bit for bit, and `load(path)` for inference elsewhere.

    >>> config = TrainConfig.load("configs/dscnet_octa500.yaml", ["training.steps=2000"])
    >>> Trainer(config, "runs/dscnet").fit()
    >>> model = retina.load("runs/dscnet/best.pt")
"""

from .checkpoint import load, read_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .trainer import Trainer

__all__ = ["ConfigError", "TrainConfig", "Trainer", "load", "read_checkpoint", "save_checkpoint"]
