"""`retina demo`: watch a model learn to segment vessels, with topology measured.

Generates a synthetic train / validation / test set with exact labels (OCTA-like scans, or fundus-like
photographs), trains DSCNet twice for the time budget — with S3-OCTA's IBP-clDice loss and with Dice
alone — evaluates both on the test images (Dice, clDice, Betti-0 and Betti-1 errors), and writes the
predictions, overlays, skeletons, training curves and a metrics table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .image_files import write_bytes_atomic, write_image
from .metrics import evaluate
from .models import main_output
from .predict import predict_files
from .train import TrainConfig, Trainer

LOSSES = {"clDice": ("IBPclDiceLoss", {"sigmoid": True, "alpha": 0.5}), "Dice": ("DiceLoss", {"sigmoid": True})}


def demo_config(kind: str, loss: str, minutes: float, device: str, seed: int = 0) -> TrainConfig:
    """The demo's training run: DSCNet (width 8, K 9) on 64² patches of 128² synthetic images, batch 4."""
    dataset = "SyntheticOCTA" if kind == "octa" else "SyntheticFundus"
    size = {"size": 128} if kind == "octa" else {"height": 128, "width": 128}
    extra = {"channels": 1} if kind == "octa" else {}
    name, kwargs = LOSSES[loss]
    return TrainConfig.from_dict({
        "model": {"name": "dscnet", "kwargs": {"in_channels": 1 if kind == "octa" else 3, "width": 8}},
        "loss": {"name": name, "kwargs": kwargs},
        "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4},
        "scheduler": {"name": "poly", "warmup_steps": 10},
        "data": {"train": {"name": dataset, "kwargs": {"length": 48, **size, **extra, "seed": seed}},
                 "val": {"name": dataset, "kwargs": {"length": 3, **size, **extra, "seed": seed + 10_000}},
                 "batch_size": 4, "patch": 64, "patches_per_image": 2, "cache": True,
                 "augment": {"flip": True, "contrast": 0.1, "noise": 0.01}},
        "training": {"steps": 100_000, "max_minutes": minutes, "val_every": 100, "checkpoint_every": 100,
                     "seed": seed, "device": device, "best_metric": "dice"},
        "logging": {"log_every": 10, "overlays": 2, "tensorboard": False, "progress": True},
    })


def _test_set(kind: str, out: Path, count: int, seed: int) -> tuple[list[Path], list[np.ndarray]]:
    from .data import fundus_image, octa_image

    paths, labels = [], []
    for i in range(count):
        if kind == "octa":
            sample = octa_image(128, seed + i)
            image = np.rint(sample.image[0] * 255).astype(np.uint8)
        else:
            sample = fundus_image(128, 128, seed + i)
            image = np.rint(sample.image.transpose(1, 2, 0) * 255).astype(np.uint8)
        path = write_image(out / "test" / "images" / f"test{i:02d}.png", image)
        write_image(out / "test" / "labels" / f"test{i:02d}.png", sample.vessel.astype(np.uint8) * 255)
        paths.append(path)
        labels.append(sample.vessel.astype(bool))
    return paths, labels


def run_demo(out: str | Path = "demo_output", *, minutes: float = 5.0, kind: str = "octa", device: str = "auto",
             say: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Runs the demo into `out`; returns {loss name: test metrics}. `minutes` is the whole training budget
    (half for each model)."""
    if kind not in ("octa", "fundus"):
        raise ValueError(f"kind must be 'octa' or 'fundus', got {kind!r}")
    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    out = Path(out)
    say(f"retina demo: synthetic {kind} data, DSCNet trained with clDice and with Dice, {minutes:g} min in all")
    paths, labels = _test_set(kind, out, 6, seed=20_000)
    results: dict[str, dict[str, float]] = {}
    for loss in LOSSES:
        run = out / f"dscnet_{loss.lower()}"
        say(f"training DSCNet with {LOSSES[loss][0]} for {minutes / 2:g} min -> {run}")
        config = demo_config(kind, loss, minutes / 2, device)
        trainer = Trainer(config, run, resume=(run / "checkpoint.pt").exists())
        summary = trainer.fit()
        model = trainer.model.eval()
        if trainer.ema is not None:
            model.load_state_dict(trainer.inference_weights())
        predict_files(model, paths, run / "test", device=trainer.device, overwrite=True)  # of this run's final weights
        with torch.no_grad():
            probs = [torch.sigmoid(main_output(model(_image(p, kind).to(trainer.device)))).cpu()[0, 0].double()
                     for p in paths]
        scores = evaluate(torch.stack(probs), torch.from_numpy(np.stack(labels)), protocol="retina")
        results[loss] = {k: scores[k] for k in ("dice", "cldice", "betti0_error", "betti1_error")}
        results[loss]["steps"] = float(summary["steps"])
        say(f"  {summary['steps']} steps; test Dice {scores['dice']:.3f}, clDice {scores['cldice']:.3f}, "
            f"Betti-0 error {scores['betti0_error']:.1f}, Betti-1 error {scores['betti1_error']:.1f}")
    if kind == "fundus":
        _real_fundus(out, model, trainer.device, say)
    table = ["| loss | steps | Dice | clDice | Betti-0 error | Betti-1 error |", "|---|---:|---:|---:|---:|---:|"]
    for loss, r in results.items():
        table.append(f"| {LOSSES[loss][0]} | {r['steps']:.0f} | {r['dice']:.3f} | {r['cldice']:.3f} | "
                     f"{r['betti0_error']:.1f} | {r['betti1_error']:.1f} |")
    write_bytes_atomic(out / "metrics.md", ("\n".join(table) + "\n").encode())
    write_bytes_atomic(out / "metrics.json", json.dumps(results, indent=2).encode())
    say("\n".join(table))
    say(f"wrote {out}/: metrics.md, and per model (dscnet_cldice/, dscnet_dice/): curves.png, log.csv, "
        f"overlays/, best.pt, and test/ with prob/, mask/, overlay/, skeleton/, measurements.jsonl")
    best = out / "dscnet_cldice" / "best.pt"
    say(f"next: segment your images with a demo model (retina predict IMAGES --checkpoint {best} --out DIR), or "
        "train on your own folder of images/ and masks/ (configs/dscnet_folder.yaml)")
    return results


def _image(path: Path, kind: str) -> torch.Tensor:
    from .predict import read_for_model

    return read_for_model(path, 1 if kind == "octa" else 3)[None]


def _real_fundus(out: Path, model: torch.nn.Module, device: torch.device, say: Callable[[str], None]) -> None:
    """Segments scikit-image's real fundus photograph (CC0), downscaled to 512², with the last model."""
    import cv2
    from skimage import data

    photo = cv2.resize(data.retina(), (512, 512), interpolation=cv2.INTER_AREA)
    path = write_image(out / "real_fundus" / "retina.png", photo)
    predict_files(model, [path], out / "real_fundus", device=device, overwrite=True)
    say(f"segmented scikit-image's real fundus photograph: {out / 'real_fundus' / 'overlay' / 'retina.png'}")
