"""`Trainer(config, out).fit()`: trains a retina model, validates it, checkpoints it and resumes it.

A run is a folder: `config.yaml`, `samples.json` (the ids that trained and validated), `checkpoint.pt`
(the latest, every `checkpoint_every` steps and at the end), `best.pt` (by `training.best_metric`),
`log.csv` (every logged value), `curves.png`, `overlays/`
(image | label | prediction | skeleton at each validation), and TensorBoard events when tensorboard is
installed. Resuming (`resume=True`) after a kill continues from `checkpoint.pt` so that, on the CPU, the
losses and final weights equal those of an uninterrupted run with the same seed, bit for bit: the data
order is a function of (seed, epoch), augmentation of (seed, epoch, sample), and every RNG state, the
optimizer, scheduler, gradient scaler, EMA and the position in the epoch are in the checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import io
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import data as retina_data
from .. import losses as retina_losses
from ..data.datasets.leakage import sample_digests
from ..image_files import write_bytes_atomic, write_image
from ..inference import predict
from ..inference.memory import out_of_memory
from ..models import create, named_outputs
from .checkpoint import read_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .distributed import Distributed
from .signals import StopRequest, ignore_stop_signals, stop_on_signals

LOWER_IS_BETTER = ("_error", "hd95", "loss")


def resolve_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """The training device; under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device {name}: CUDA is not available here")
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def dataset_class(name: str, key: str) -> type:
    """The `retina.data` dataset class a config names ("folder": ImageFolderDataset)."""
    cls = getattr(retina_data, "ImageFolderDataset" if name == "folder" else name, None)
    if not isinstance(cls, type) or not issubclass(cls, Dataset):
        raise ConfigError(f"{key}.name: {name!r} is not a retina.data dataset")
    return cls


def build_dataset(config, key: str) -> Dataset:
    """A dataset from its config: a `retina.data` class by name, or "folder" for ImageFolderDataset."""
    cls = dataset_class(config.name, key)
    try:
        return cls(**config.kwargs)
    except TypeError as exc:
        raise ConfigError(f"{key}.kwargs: {exc}") from None
    except FileNotFoundError as exc:  # say which dataset of the config: a forgotten data.val root, say
        raise FileNotFoundError(f"{key} ({config.name}): {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{key} ({config.name}): {exc}") from None


def initialize(model: torch.nn.Module, path: str) -> None:
    """Loads the inference weights of the retina checkpoint `path` into `model` (model.init: fine-tuning),
    after checking that the checkpoint's model is this one; errors name model.init."""
    try:
        state = read_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.init: {exc}") from None
    ignored = ("checkpointing",)  # how a model runs, not what it is
    saved = {k: v for k, v in state["model_config"].items() if k not in ignored}
    ours = {k: v for k, v in model.config.items() if k not in ignored}
    if saved != ours:
        differing = [f"{k}: {saved.get(k)!r} there, {ours.get(k)!r} here" for k in dict.fromkeys([*saved, *ours])
                     if saved.get(k) != ours.get(k)]
        raise ConfigError(f"model.init: {path} holds another model ({'; '.join(differing[:4])}): set model.name and "
                          "model.kwargs to the checkpoint's model")
    model.load_state_dict(state["inference_weights"])


def refuse_shared_samples(train: Dataset, val: Dataset) -> None:
    """A ConfigError when validation samples are training samples too (the same image files, copies of
    them, or the same synthetic draws): their scores would be optimistic and pick best.pt on images the
    model has learned."""
    shared = retina_data.shared_samples(train, val)
    if shared:
        examples = ", ".join(f"{v!r} is training's {t!r}" for v, t in shared[:3])
        raise ConfigError(f"data.val: {len(shared)} of {len(val)} validation samples are also training samples "
                          f"({examples}{', ...' if len(shared) > 3 else ''}): validation must score images the "
                          "model does not train on. Give it other images, or divide one folder with "
                          "kwargs split: train / split: val (ImageFolderDataset)")


def _named_loss(name: str, kwargs: dict, key: str) -> torch.nn.Module:
    cls = getattr(retina_losses, name, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module) or cls is retina_losses.MultiTaskLoss:
        raise ConfigError(f"{key}.name: {name!r} is not a retina.losses loss")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{key}.kwargs: {exc}") from None


def build_loss(config, total_epochs: Optional[int] = None) -> torch.nn.Module:
    """The loss of `config.loss`: one loss, or a MultiTaskLoss of `loss.tasks` for named outputs."""
    if not config.tasks:
        return _named_loss(config.name, config.kwargs, "loss")
    losses = {name: _named_loss(task.name, task.kwargs, f"loss.tasks.{name}")
              for name, task in config.tasks.items()}
    try:
        return retina_losses.MultiTaskLoss(losses, config.task_weights, total_epochs=total_epochs)
    except ValueError as exc:
        raise ConfigError(f"loss.task_weights: {exc}") from None


def build_preprocess(arguments: Optional[dict]) -> Optional[retina_data.Preprocess]:
    if arguments is None:
        return None
    try:
        return retina_data.Preprocess(**arguments)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.preprocess: {exc}") from None


class _Cached(Dataset):
    """dataset[i], read once and then kept in memory. With loader workers, `fill()` reads everything in
    the main process first: each epoch's workers start as copies of it, so a cache filled inside a
    worker would be lost with that worker at the epoch's end (and held once per worker meanwhile)."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.samples = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.samples:
            self.samples[index] = self.dataset[index]
        return self.samples[index]

    def fill(self) -> None:
        for index in range(len(self)):
            self[index]


class _Transformed(Dataset):
    """dataset[i] passed through `transform` (PairedAugment: seeded by the sample's index)."""

    def __init__(self, dataset: Dataset, transform: Callable[[dict], dict]):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.transform(self.dataset[index])

    def set_epoch(self, epoch: int) -> None:
        for part in (self.dataset, self.transform):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def _collate(samples: list[dict]) -> dict:
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return out


def lr_factor(config: TrainConfig, step: int, total: int) -> float:
    """The scheduler's learning-rate factor at optimizer step `step` of `total` (linear warmup first)."""
    s = config.scheduler
    if step < s.warmup_steps:
        return (step + 1) / (s.warmup_steps + 1)
    progress = min((step - s.warmup_steps) / max(total - s.warmup_steps, 1), 1.0)
    if s.name == "poly":
        return (1 - progress) ** s.power
    if s.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if s.name == "step":
        return s.gamma ** ((step - s.warmup_steps) // s.step_size)
    return 1.0


# What may differ when a run resumes: how it is logged, saved, loaded and timed, none of which changes
# the weights it reaches (the data order is seeded by sample, not by worker). Anything else would make
# the resumed run a different experiment under the old run's name.
RESUMABLE_CHANGES = ("logging.", "training.max_minutes", "training.checkpoint_every", "training.device",
                     "data.num_workers")


def _changed_keys(saved: dict, given: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, each as "key: saved -> given"."""
    changed = []
    for key in list(dict.fromkeys([*saved, *given])):
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changed


def _scheduled_factor(config, total_steps: int, step: int) -> float:
    # a function of the config, not a lambda over the trainer: no reference cycle through the scheduler
    # keeps the trainer's model, optimizer state, cached data and DDP alive until a GC pass
    return lr_factor(config, step, total_steps)


def _rng_state() -> dict:
    # NumPy's state as a tensor and numbers, so that checkpoints load with torch.load(weights_only=True)
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple in checkpoints written before the dict
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)


def sample_scores(prob: torch.Tensor, mask: torch.Tensor, fov: Optional[torch.Tensor]) -> dict[str, float]:
    """Validation metrics of one sample. prob: [1, K, H, W] probabilities; mask: [1, H, W] (or [H, W]
    class indices, or [K, H, W] one-hot) labels. Binary: Dice, clDice, Betti-0/1 errors, AUC inside the FOV;
    multi-class: mean IoU."""
    from .. import metrics

    if prob.shape[1] == 1:
        hard, truth = prob[:, 0] > 0.5, mask[:1] > 0.5
        scores = {"dice": metrics.overlap_scores(hard, truth, fov)["dice"].item(),
                  "cldice": metrics.cldice(hard, truth).item()}
        errors = metrics.betti_errors(hard, truth)[0]
        scores["betti0_error"], scores["betti1_error"] = float(errors[0]), float(errors[1])
        if 0 < truth.sum() < truth.numel():
            scores["auc"] = metrics.roc_auc(prob[:, 0].double(), truth, fov).item()
        return scores
    classes = mask.long() if mask.dim() == 2 else mask.argmax(0)
    return {"miou": metrics.mean_iou(prob.argmax(1), classes[None], prob.shape[1]).item()}


class Trainer:
    """Trains `config` into the run folder `out` (see the module docstring).

    Args:
        config: the run's TrainConfig (validated here).
        out: the run folder; created if missing.
        resume: continue from `out/checkpoint.pt` (the config must be the one saved there).
        callback: called with a dict of logged values at every log (the demo prints from it).
    """

    def __init__(self, config: TrainConfig, out: str | Path, *, resume: bool = False,
                 callback: Optional[Callable[[dict], None]] = None):
        self.config = config.validate()
        self.out = Path(out)
        self.resume, self.callback = resume, callback
        t = config.training
        wanted = resolve_device(t.device)
        self.dist = Distributed.from_environment(wanted.type)
        self.device = resolve_device(t.device, self.dist.local_rank if self.dist.enabled else None)
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        np.random.seed(t.seed % 2**32)
        model_kwargs = dict(config.model.kwargs)
        if t.checkpointing:
            model_kwargs["checkpointing"] = True
        try:
            self.model = create(config.model.name, **model_kwargs).to(self.device)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model: {exc}") from None
        if config.model.init is not None and not (self.resume and (self.out / "checkpoint.pt").is_file()):
            initialize(self.model, config.model.init)  # a resumed run restores its own weights instead
        # the config as given (saved, and compared on resume); self.config may be resolved by a memory plan
        self.given = config
        self.plan = self._memory_plan() if config.data.patch == "auto" else None
        config, t = self.config, self.config.training  # resolved by the memory plan where there is one
        self.preprocess = build_preprocess(self.config.data.preprocess)
        self.train_set = self._training_data()
        self.val_set = self.val_source = None
        if self.config.data.val is not None:
            self.val_set = self.val_source = build_dataset(self.config.data.val, "data.val")
            refuse_shared_samples(self.train_source, self.val_set)
            if self.preprocess is not None:
                self.val_set = _Transformed(self.val_set, self.preprocess)
        # data.batch_size is per process: under torchrun the global batch is batch_size x processes
        global_batch = self.config.data.batch_size * self.dist.world
        batches = len(self.train_set) // global_batch
        if batches < t.accumulate:
            raise ConfigError(f"data.train: {len(self.train_set)} samples make {batches} batches of "
                              f"{global_batch}, fewer than training.accumulate = {t.accumulate}")
        self.batches_per_epoch = batches - batches % t.accumulate
        self.steps_per_epoch = self.batches_per_epoch // t.accumulate
        self.total_steps = t.steps if t.steps is not None else t.epochs * self.steps_per_epoch
        self.loss_fn = build_loss(self.config.loss, total_epochs=math.ceil(self.total_steps / self.steps_per_epoch))
        self.net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = self.config.optimizer
        if o.name == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
            self.optimizer = cls(params, lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(_scheduled_factor, self.config, self.total_steps))
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(t.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = ({k: v.detach().clone() for k, v in self.model.state_dict().items()} if t.ema is not None else None)
        self.step, self.epoch, self.position = 0, 0, 0
        self.best: Optional[float] = None
        self.stale = 0
        # the least and greatest input value the model has trained on: predict refuses images far outside
        # (0-255 floats given to a model trained on retina's [0, 1] images)
        self.input_range: Optional[list[float]] = None
        self.rows: list[dict] = []
        self.task_losses: dict[str, list[float]] = {}
        self.writer = None

    def _memory_plan(self):
        """data.patch = auto: the plan that fits training.memory_budget (read back from the checkpoint on
        resume, so a resumed run trains as it began), applied to a copy of the config."""
        from .memory_plan import MemoryPlan, plan_memory

        if self.resume and (self.out / "checkpoint.pt").is_file():
            plan = MemoryPlan(**read_checkpoint(self.out / "checkpoint.pt")["plan"])
        else:
            config = self.config
            try:
                plan = plan_memory(self.model, build_loss(config.loss, total_epochs=1),
                                   in_channels=self.model.config.get("in_channels", 1),
                                   budget=config.training.memory_budget, batch_size=config.data.batch_size,
                                   device=self.device, allow_amp=self.device.type == "cuda")
            except (ValueError, MemoryError) as exc:
                raise ConfigError(f"data.patch auto: {exc}") from None
        resolved = TrainConfig.from_dict(self.config.to_dict())
        resolved.data.patch, resolved.data.batch_size = plan.patch, plan.batch_size
        resolved.training.accumulate, resolved.training.amp = plan.accumulate, plan.amp
        resolved.training.checkpointing = plan.checkpointing
        if hasattr(self.model, "checkpointing"):
            self.model.checkpointing = plan.checkpointing
        self.config = resolved
        return plan

    # -- data ----------------------------------------------------------------------------------------
    def _training_data(self) -> Dataset:
        d, seed = self.config.data, self.config.training.seed
        dataset = self.train_source = build_dataset(d.train, "data.train")
        self.channel_sources = getattr(dataset, "channel_sources", None)
        # what the mask channels are ("FAZ", "vessel", ...): predict measures a FAZ as a zone
        self.label_names = list(getattr(dataset, "label_names", ()) or ()) or None
        if self.preprocess is not None:
            dataset = _Transformed(dataset, self.preprocess)
        self.cache = None
        if d.cache:
            dataset = self.cache = _Cached(dataset)
        # fundus data comes with a field of view: prediction then measures inside the estimated one (the
        # sample looked at is the cache's first, when there is a cache)
        self.field_of_view = len(dataset) > 0 and "fov" in dataset[0]
        if d.patch is not None:
            dataset = retina_data.PatchDataset(dataset, d.patch, d.patches_per_image, seed=seed, foreground_bias=0.5)
        if d.augment:
            try:
                augment = retina_data.PairedAugment(**{**d.augment, "seed": seed})
            except TypeError as exc:
                raise ConfigError(f"data.augment: {exc}") from None
            dataset = _Transformed(dataset, augment)
        return dataset

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of an epoch: a permutation drawn from (seed, epoch) alone, so a resumed
        run replays it exactly, cut into global batches of which each process takes its rank's share
        (DistributedSampler's split, done here so that the position in the epoch is one number for all
        processes and a run on N processes sees the data of one process with an N times larger batch)."""
        g = torch.Generator().manual_seed(self.config.training.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()
        size, rank = self.config.data.batch_size, self.dist.rank
        start = [(i * self.dist.world + rank) * size for i in range(self.batches_per_epoch)]
        return [order[first : first + size] for first in start]

    def _batches(self):
        """Yields (epoch, position, batch) from the current position on, forever."""
        while True:
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(self.epoch)
            batches = self._epoch_batches(self.epoch)[self.position :]
            workers = self.config.data.num_workers
            if workers > 0 and self.cache is not None:
                self.cache.fill()  # once, here: workers inherit it (see _Cached)
            loader = DataLoader(self.train_set, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                                worker_init_fn=ignore_stop_signals if workers > 0 else None)
            for batch in loader:
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    # -- the step ------------------------------------------------------------------------------------
    def _task_targets(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's target: its channel of the data's mask ([B, 1, H, W])."""
        targets = {}
        for name, task in self.config.loss.tasks.items():
            channel = task.channel
            if channel >= target.shape[1]:
                raise ConfigError(f"loss.tasks.{name}.channel is {channel}, but the data's mask has "
                                  f"{target.shape[1]} channel(s): ask the dataset for that label")
            targets[name] = target[:, channel : channel + 1]
        return targets

    def _loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        """The training loss of a model's output: a tensor; a list (deep supervision: the weighted mean
        of the loss on each); a dict of named outputs (`loss.tasks`, combined by MultiTaskLoss)."""
        if isinstance(output, (list, tuple)):
            weights = self.config.loss.output_weights or {}
            terms = [float(weights.get(i, weights.get(str(i), 1.0))) * self._loss(o, target) for i, o in enumerate(output)]
            return sum(terms) / len(terms)
        if isinstance(output, dict):
            if not self.config.loss.tasks:
                raise ConfigError(f"the model returns named outputs {sorted(output)}: give each its loss in "
                                  "loss.tasks, e.g. {vessel: {name: DiceLoss, channel: 0}, faz: {...}}")
            missing = sorted(set(self.config.loss.tasks) - set(output))
            if missing:
                raise ConfigError(f"loss.tasks names {missing}, but the model's outputs are {sorted(output)}")
            total, parts = self.loss_fn(output, self._task_targets(target), epoch=self.epoch)
            if torch.is_grad_enabled():  # a training step: each task's loss is logged as loss_<output>
                for name, value in parts.items():
                    self.task_losses.setdefault(name, []).append(float(value.detach()))
            return total
        if torch.is_tensor(output):
            if self.config.loss.tasks:
                raise ConfigError("loss.tasks is set, but the model returns one tensor, not named outputs")
            return self.loss_fn(output, target)
        raise TypeError(f"the model returned {type(output).__name__}; retina.train trains models that return a "
                        "tensor, a list of them (deep supervision) or a dict of named outputs")

    def _target(self, batch: dict) -> torch.Tensor:
        if "mask" not in batch:
            raise ValueError("training samples need a 'mask' (the dataset gave none: set its labels)")
        return batch["mask"].to(self.device, non_blocking=True)

    def _note_input_range(self, image: torch.Tensor) -> None:
        if image.numel():
            low, high = (float(v) for v in torch.aminmax(image.detach()))
            seen = self.input_range or [low, high]
            self.input_range = [min(seen[0], low), max(seen[1], high)]

    def _train_step(self, batches) -> float:
        t = self.config.training
        self.model.train()
        total = 0.0
        for micro in range(t.accumulate):
            batch = next(batches)
            image, target = batch["image"].to(self.device, non_blocking=True), self._target(batch)
            self._note_input_range(batch["image"])
            # DDP: gradients are averaged over processes once per optimizer step, not per micro-batch
            sync = micro == t.accumulate - 1 or not self.dist.enabled
            with (contextlib.nullcontext() if sync else self.net.no_sync()), \
                    torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss = self._loss(self.net(image), target) / t.accumulate
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {self.step}: lower optimizer.lr, or set "
                                         "training.clip_grad")
            with contextlib.nullcontext() if sync else self.net.no_sync():
                self.scaler.scale(loss).backward()
            total += loss.item()
            self.position += 1
        if t.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for key, value in self.model.state_dict().items():
                    if value.is_floating_point():
                        self.ema[key].lerp_(value, 1 - t.ema)
                    else:
                        self.ema[key].copy_(value)
        self.step += 1
        return total

    # -- validation ----------------------------------------------------------------------------------
    def inference_weights(self) -> dict:
        return self.ema if self.ema is not None else self.model.state_dict()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Whole-image metrics on the validation set (the EMA weights when kept), each the mean over the
        images; under torchrun the images are shared out and the values gathered from every process.
        Named outputs are scored each against its task's mask channel, as `<output>_<metric>`."""
        model = self.model
        if self.ema is not None:
            model = create(**self.model.config).to(self.device)
            model.load_state_dict(self.ema)
        model.eval()
        values: dict[str, list[float]] = {}
        overlays = []
        tasks = self.config.loss.tasks or {}
        for index in range(self.dist.rank, len(self.val_set), self.dist.world):
            sample = self.val_set[index]
            # whole images, or tiles (retina.inference's auto mode) where the device cannot hold one
            outputs = named_outputs(predict(model, sample["image"][None], mode="auto", device=self.device,
                                             output_device="cpu", amp=self.amp_dtype))
            for name, logits in outputs.items():
                prob = _probabilities(logits.float())
                channel = tasks[name].channel if name in tasks else 0
                mask = sample["mask"][channel : channel + 1] if name and sample["mask"].dim() == 3 else sample["mask"]
                scores = sample_scores(prob, mask, sample.get("fov"))
                for key, value in scores.items():
                    values.setdefault(f"{name}_{key}" if name else key, []).append(value)
                if prob.shape[1] == 1 and len(overlays) < self.config.logging.overlays:
                    overlays.append(overlay(sample["image"], mask[0] > 0.5, prob[0, 0] > 0.5))
        if self.dist.is_main:
            for i, picture in enumerate(overlays):
                write_image(self.out / "overlays" / f"step{self.step:07d}_{i}.png", picture)
        gathered: dict[str, list[float]] = {}
        for part in self.dist.gather(values):
            for key, value in part.items():
                gathered.setdefault(key, []).extend(value)
        return {f"val_{k}": float(np.nanmean(v)) for k, v in gathered.items()}

    # -- checkpoints and logs ------------------------------------------------------------------------
    def state(self) -> dict:
        from .. import __version__

        return {
            "model_config": self.model.config, "model": self.model.state_dict(), "inference_weights":
            self.inference_weights(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema, "step": self.step, "epoch": self.epoch,
            "position": self.position, "best": self.best, "stale": self.stale, "rng": _rng_state(),
            "config": self.given.to_dict(), "retina_version": __version__,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "training": {"patch": self.config.data.patch, "in_channels": self.model.config.get("in_channels"),
                         "preprocess": self.preprocess.to_dict() if self.preprocess is not None else None,
                         "channel_sources": list(self.channel_sources) if self.channel_sources else None,
                         "input_range": self.input_range, "field_of_view": self.field_of_view,
                         "label_names": self.label_names, "image_digests": self._training_digests},
        }

    def _restore(self, path: Path) -> None:
        state = read_checkpoint(path, map_location=self.device)
        changed = [key for key in _changed_keys(state["config"], self.given.to_dict())
                   if not key.startswith(RESUMABLE_CHANGES)]
        if changed:
            raise ConfigError(f"{path} was written with another config: {'; '.join(changed[:4])}"
                              f"{' ...' if len(changed) > 4 else ''}. Resume with the run's own config.yaml "
                              f"(only {', '.join(RESUMABLE_CHANGES)} may change on resume)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.ema = state["ema"]
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best, self.stale = state["best"], state["stale"]
        self.input_range = (state.get("training") or {}).get("input_range")
        _set_rng_state(state["rng"])

    def _log(self, row: dict) -> None:
        self.rows.append(row)
        if self.callback is not None:
            self.callback(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self.writer.add_scalar(key, value, row["step"])

    def _write_logs(self) -> None:
        if not self.dist.is_main:
            return
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        table = io.StringIO()
        writer = csv.DictWriter(table, keys)
        writer.writeheader()
        writer.writerows(self.rows)
        write_bytes_atomic(self.out / "log.csv", table.getvalue().encode())
        write_bytes_atomic(self.out / "curves.png", plot_curves(self.rows))

    def _read_logs(self) -> None:
        """The rows of an earlier run up to the checkpoint's step: the rest will be recomputed."""
        path = self.out / "log.csv"
        if path.is_file():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    parsed = {k: (float(v) if k != "step" else int(v)) for k, v in row.items() if v not in ("", None)}
                    if parsed.get("step", 0) <= self.step:
                        self.rows.append(parsed)

    def _save(self, name: str = "checkpoint.pt") -> None:
        if self.dist.is_main:  # every process holds the same weights; one writes them
            save_checkpoint(self.out / name, self.state())

    # -- the run -------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Trains to the configured steps (or epochs, or time budget, or early stop); returns a summary:
        steps run, the best validation value, why it stopped, where the run is."""
        t, log = self.config.training, self.config.logging
        self.out.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self._restore(self.out / "checkpoint.pt")
            self._read_logs()
        elif (self.out / "checkpoint.pt").exists():
            raise ConfigError(f"{self.out} already holds a run: resume it (--resume) or choose another --out")
        if self.dist.is_main:
            self.given.save(self.out / "config.yaml")
            write_bytes_atomic(self.out / "samples.json", json.dumps(self._sample_ids(), indent=1).encode())
        if log.tensorboard and self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step or None)
            except (ImportError, ModuleNotFoundError):
                self.writer = None
        from tqdm.auto import tqdm

        budgeted = t.max_minutes is not None  # the time budget, not the step count, ends such a run
        bar = tqdm(total=None if budgeted else self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (log.progress and self.dist.is_main),
                   desc=f"train ({t.max_minutes:g} min)" if budgeted else "train")
        batches = self._batches()
        try:
            with stop_on_signals(announce=self.dist.is_main) as request:
                reason = self._run(bar, request, batches)
        finally:
            batches.close()  # ends the data loader (and its workers) now, not whenever the generator is collected
        bar.close()
        if self.writer is not None:
            self.writer.close()
        self._save()
        self._write_logs()
        self.dist.barrier()  # no process leaves before rank 0 has written the run
        if self.net is not self.model:
            # Release DDP (its reducer holds the process group) before the group is destroyed: when the
            # trainer lived on (a reference cycle through the scheduler's lambda, before), DDP and gloo's
            # threads were freed only at the interpreter's teardown, the suspected source of a rare
            # "terminate called without an active exception" abort after a finished torchrun.
            self.net = self.model
            gc.collect()
        self.dist.close()
        summary = {"steps": self.step, "stopped_by": reason, "best": self.best, "out": str(self.out)}
        if request.signal is not None:
            summary["signal"] = request.signal
        return summary

    @functools.cached_property
    def _training_digests(self) -> Optional[list[str]]:
        """The content digests of the training images (file-backed data), read at the first checkpoint: it
        carries them so that `retina predict` can say which of its inputs the model trained on."""
        return sample_digests(self.train_source)

    def _sample_ids(self) -> dict:
        """{"train": [ids], "val": [ids]}: which images trained and which validated (a folder's seeded
        split among them), for the paper's methods and to keep a test set apart; None where a dataset
        cannot say (no `sample_sources`)."""
        def ids(dataset):
            if dataset is None:
                return []
            return [sample_id for sample_id, _ in dataset.sample_sources()] if hasattr(dataset, "sample_sources") \
                else None

        return {"train": ids(self.train_source), "val": ids(self.val_source)}

    def _out_of_memory_advice(self) -> str:
        d = self.config.data
        saved = self.out / "checkpoint.pt"
        shape = f"{d.batch_size} x {d.patch}²" if isinstance(d.patch, int) else f"{d.batch_size} whole image(s)"
        return (f"out of memory on {self.device} at training step {self.step + 1} ({shape} per step): let retina plan "
                "what fits with data.patch=auto training.memory_budget=<the GPU's memory, e.g. 4GiB> (patch, batch, "
                "activation checkpointing, bfloat16, accumulation, measured on the device), or set some of "
                "training.checkpointing=true, training.amp=bfloat16, a smaller data.batch_size or data.patch"
                + (f"; resume from {saved} with --resume" if saved.is_file() and self.step > 0 else ""))

    def _run(self, bar, request: StopRequest, batches) -> str:
        """The step loop of `fit` over the `_batches()` generator; returns why it stopped."""
        t, log = self.config.training, self.config.logging
        started, reason, running = time.monotonic(), "steps", []
        while self.step < self.total_steps:
            try:
                running.append(self._train_step(batches))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                raise MemoryError(self._out_of_memory_advice()) from None
            bar.update(1)
            if self.step % log.log_every == 0 or self.step == self.total_steps:
                row = {"step": self.step, "epoch": float(self.epoch), "lr": float(self.scheduler.get_last_lr()[0]),
                       "loss": self.dist.mean(float(np.mean(running)))}
                for name, values in self.task_losses.items():
                    row[f"loss_{name}"] = self.dist.mean(float(np.mean(values)))
                running, self.task_losses = [], {}
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                self._log(row)
            over_budget = t.max_minutes is not None and time.monotonic() - started > 60 * t.max_minutes
            over_budget, signalled = self.dist.any(over_budget, request.signal is not None)
            if signalled:  # stop at once, without validating (a scheduler's grace period is short); fit saves
                return f"signal {request.name or 'on another process'}"
            stop = over_budget
            if self.val_set is not None and (self.step % t.val_every == 0 or self.step == self.total_steps or stop):
                scores = self.validate()
                self._log({"step": self.step, **scores})
                key = f"val_{t.best_metric}"
                if key not in scores:
                    raise ConfigError(f"training.best_metric: {t.best_metric!r} is not a validation metric "
                                      f"({', '.join(k[4:] for k in scores)})")
                better = (scores[key] < self.best if key.endswith(LOWER_IS_BETTER) else scores[key] > self.best) \
                    if self.best is not None else True
                if better:
                    self.best, self.stale = scores[key], 0
                    self._save("best.pt")
                else:
                    self.stale += 1
                if not bar.disable:
                    bar.write(validation_line(self.step, scores, t.best_metric, better))
                if t.patience is not None and self.stale >= t.patience:
                    reason, stop = "early stopping", True
            if self.step % t.checkpoint_every == 0 or self.step == self.total_steps or stop:
                self._save()
                self._write_logs()
            if stop:
                return reason if reason != "steps" else "time budget"
        return reason


def validation_line(step: int, scores: dict[str, float], best_metric: str, best: bool) -> str:
    """What a validation found, as one terminal line: 'step 200 validation: dice 0.812, cldice 0.790, ...
    (best cldice so far: best.pt)'."""
    values = ", ".join(f"{name[4:]} {value:.4g}" for name, value in scores.items())
    return f"step {step} validation: {values}" + (f" (best {best_metric} so far: best.pt)" if best else "")


def overlay(image: torch.Tensor, label: torch.Tensor, prediction: torch.Tensor) -> np.ndarray:
    """One PNG row: the image, its label, the prediction, and the prediction's skeleton in red on it."""
    import retina_kernels

    gray = image[0] if image.dim() == 3 else image
    base = np.rint(gray.float().clamp(0, 1).numpy() * 255).astype(np.uint8)
    skeleton = retina_kernels.skeletonize(prediction[None, None].to(torch.uint8))[0, 0].bool().numpy()
    panels = [np.repeat(base[..., None], 3, 2) for _ in range(4)]
    panels[1][label.numpy()] = (0, 200, 0)
    panels[2][prediction.numpy()] = (240, 200, 0)
    panels[3][skeleton] = (255, 30, 30)
    return np.concatenate(panels, axis=1)


def plot_curves(rows: list[dict]) -> bytes:
    """PNG bytes: the training loss and every validation metric against the step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith(("loss", "val_"))]
    figure = Figure(figsize=(4 * max(len(keys), 1), 3), dpi=80)
    for i, key in enumerate(keys):
        axes = figure.add_subplot(1, len(keys), i + 1)
        points = [(r["step"], r[key]) for r in rows if key in r]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        axes.set_title(key)
        axes.set_xlabel("step")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
