"""`TrainConfig`: everything a training run needs, as a tree of dataclasses that round-trips to YAML.

Every part is named as in the API: `model.name` is a `retina.models.create` name with its keyword
arguments, `loss.name` a `retina.losses` class, `data.train.name` a `retina.data` dataset class (or
"folder": an `ImageFolderDataset`). Unknown keys and wrong types fail with the key's dotted path;
command-line overrides are `key.sub=value` (the value read as YAML).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..image_files import write_bytes_atomic


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key by its dotted path."""


@dataclass
class ModelConfig:
    name: str = "dscnet"
    kwargs: dict = field(default_factory=dict)
    # fine-tuning: a retina checkpoint (a run's best.pt, or `retina import-weights`'s) whose inference
    # weights start the run; its model must be this one (name and arguments)
    init: Optional[str] = None


@dataclass
class TaskConfig:
    """The loss of one named output: a retina.losses class, its arguments, and which channel of the
    data's mask it learns."""

    name: str
    kwargs: dict = field(default_factory=dict)
    channel: int = 0


@dataclass
class LossConfig:
    name: str = "DiceLoss"
    kwargs: dict = field(default_factory=lambda: {"sigmoid": True})
    # a list of outputs (deep supervision, IterNet's iterations): the weight of each by index; None weighs
    # them equally
    output_weights: Optional[dict] = None
    # models with named outputs ({"vessel": ..., "faz": ...}): one loss per output,
    # {output: {"name": loss class, "kwargs": {...}, "channel": the data's mask channel it learns}}, combined
    # by MultiTaskLoss with `task_weights` ({output: weight}, "s2anet" for S²A-Net's dynamic balance, or
    # None for equal weights); `name` and `kwargs` above are then unused
    tasks: Optional[dict[str, TaskConfig]] = None
    task_weights: Optional[Union[dict, str]] = None


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw, adam, sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only


@dataclass
class SchedulerConfig:
    name: str = "poly"  # poly (nnU-Net's, power 0.9), cosine, step, constant
    warmup_steps: int = 0
    power: float = 0.9
    step_size: int = 1000
    gamma: float = 0.1


@dataclass
class DatasetConfig:
    name: str = "SyntheticOCTA"  # a retina.data dataset class, or "folder" (ImageFolderDataset)
    kwargs: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=DatasetConfig)
    val: Optional[DatasetConfig] = None
    batch_size: int = 2
    num_workers: int = 0
    # train on random patch x patch crops (None: whole images); "auto": the patch, batch size, accumulation,
    # checkpointing and autocast that fit training.memory_budget, measured on the device (plan_memory)
    patch: Optional[Union[int, str]] = None
    patches_per_image: int = 1
    # retina.data.Preprocess's arguments (gray, equalize, clahe, resize), applied to training and validation
    # samples and recorded in checkpoints, so that `retina predict` prepares images the same way
    preprocess: Optional[dict] = None
    augment: Optional[dict] = None  # PairedAugment's arguments (its seed is the run's)
    cache: bool = False  # keep every training sample in memory after its first read (small datasets)


@dataclass
class TrainingConfig:
    steps: Optional[int] = 1000  # optimizer steps in all (or set epochs)
    epochs: Optional[int] = None
    amp: Optional[str] = None  # None, "bfloat16" or "float16" (with a gradient scaler)
    accumulate: int = 1  # batches per optimizer step
    clip_grad: Optional[float] = None  # max gradient norm
    ema: Optional[float] = None  # decay of an exponential moving average of the weights (validated and saved)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    checkpointing: bool = False  # activation checkpointing in the model
    val_every: int = 200  # steps
    checkpoint_every: int = 100  # steps
    best_metric: str = "dice"  # validation metric that picks best.pt (higher is better; *_error and
    # hd95 lower)
    patience: Optional[int] = None  # validations without improvement before stopping early
    max_minutes: Optional[float] = None  # a time budget: stop (and save) after this long
    memory_budget: Optional[str] = None  # for data.patch = auto: device memory to train within, e.g. "2GiB"


@dataclass
class LoggingConfig:
    log_every: int = 10
    overlays: int = 2  # validation images drawn as overlays at each validation
    tensorboard: bool = True  # when tensorboard is installed
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike) -> Path:
        return write_bytes_atomic(path, self.to_yaml().encode())

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, text: str) -> "TrainConfig":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}") from None
        return cls.from_dict(data or {})

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: list[str] = ()) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(apply_overrides(data, overrides))

    def validate(self) -> "TrainConfig":
        """Value checks beyond types (ranges, names), each naming its key."""
        t, o, s = self.training, self.optimizer, self.scheduler
        if (t.steps is None) == (t.epochs is None):
            raise ConfigError("training: set exactly one of training.steps and training.epochs")
        for key, value in (("training.steps", t.steps), ("training.epochs", t.epochs)):
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        positive = {"training.accumulate": t.accumulate, "training.val_every": t.val_every,
                    "training.checkpoint_every": t.checkpoint_every, "data.batch_size": self.data.batch_size,
                    "data.patches_per_image": self.data.patches_per_image, "logging.log_every": self.logging.log_every}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if t.amp not in (None, "bfloat16", "float16"):
            raise ConfigError(f"training.amp must be null, bfloat16 or float16, got {t.amp!r}")
        if t.ema is not None and not 0 < t.ema < 1:
            raise ConfigError(f"training.ema must be in (0, 1), got {t.ema}")
        if o.name not in ("adamw", "adam", "sgd"):
            raise ConfigError(f"optimizer.name must be adamw, adam or sgd, got {o.name!r}")
        if not o.lr > 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {o.lr}")
        if s.name not in ("poly", "cosine", "step", "constant"):
            raise ConfigError(f"scheduler.name must be poly, cosine, step or constant, got {s.name!r}")
        if s.warmup_steps < 0:
            raise ConfigError(f"scheduler.warmup_steps must be >= 0, got {s.warmup_steps}")
        for name, task in (self.loss.tasks or {}).items():
            if task.channel < 0:
                raise ConfigError(f"loss.tasks.{name}.channel must be an integer >= 0, got {task.channel!r}")
        patch = self.data.patch
        if patch is not None and patch != "auto" and (isinstance(patch, str) or patch < 8):
            raise ConfigError(f"data.patch must be >= 8, auto or null, got {patch!r}")
        if t.memory_budget is not None:
            from ..inference.memory import parse_memory

            try:
                parse_memory(t.memory_budget, "training.memory_budget")
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc)) from None
        return self


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, getattr(types, "UnionType", Union)):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'the config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(known))})")
    missing = dataclasses.MISSING
    required = sorted(f.name for f in dataclasses.fields(cls)
                      if f.default is missing and f.default_factory is missing and f.name not in data)
    if required:
        raise ConfigError(f"{path}.{required[0]} is required" if path else f"{required[0]} is required")
    values = {}
    for name, value in data.items():
        key, hint = f"{path}.{name}" if path else name, hints[name]
        options = typing.get_args(hint) or (hint,)
        nested = [a for a in options if dataclasses.is_dataclass(a)]
        # {name: a dataclass} (loss.tasks): each entry built and checked under its own dotted path
        entries = [typing.get_args(a)[1] for a in options if typing.get_origin(a) is dict
                   and dataclasses.is_dataclass(typing.get_args(a)[1])]
        if nested and isinstance(value, dict):
            values[name] = _build(nested[0], value, key)
        elif entries and isinstance(value, dict):
            values[name] = {k: _build(entries[0], v, f"{key}.{k}") for k, v in value.items()}
        elif not _matches(value, hint):
            expected = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            raise ConfigError(f"{key} must be {expected}, got {value!r} ({type(value).__name__})")
        else:
            values[name] = float(value) if hint is float else value
    return cls(**values)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` overrides (value parsed as YAML: numbers, true/false, null, lists) to a
    plain config dict, creating missing intermediate mappings."""
    data = dict(data)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.sub=value")
        key, text = override.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data
