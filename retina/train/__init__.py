"""Training: `TrainConfig` (YAML round trip), `Trainer(config, out).fit()`, checkpoints that resume
bit for bit, `load(path)` for inference elsewhere, and `plan_memory` (patch, batch, checkpointing,
autocast and accumulation that train within a device-memory budget; `data.patch: auto`).

    >>> config = TrainConfig.load("configs/dscnet_octa500.yaml", ["training.steps=2000"])
    >>> Trainer(config, "runs/dscnet").fit()
    >>> model = retina.load("runs/dscnet/best.pt")
"""

from .checkpoint import load, load_ensemble, read_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .memory_plan import MemoryPlan, plan_memory
from .trainer import Trainer

__all__ = ["ConfigError", "MemoryPlan", "TrainConfig", "Trainer", "load", "load_ensemble", "plan_memory", "read_checkpoint",
           "save_checkpoint"]
