"""The `retina` command.

    retina demo [--out DIR] [--minutes M] [--kind octa|fundus]
                                         train DSCNet on synthetic vessels (clDice vs Dice), segment the test set
    retina train CONFIG.yaml [key=value ...] [--out DIR] [--resume] [--fold K [--folds N]]
                                         train a model from a config (configs/), resumable
    retina predict INPUT... --checkpoint CKPT... --out DIR
                                         segment images: probability, mask, overlay, skeleton, measurements
    retina skeletonize MASK OUT          skeleton of a binary mask image
    retina evaluate PRED LABEL [--fov DIR] [--protocol s3octa|iternet|retina] [--out DIR] [--allow-missing]
                                         score a folder of predictions against a folder of labels
    retina synthesize OUT [--kind octa|fundus] [--count N]
                                         write a synthetic dataset (images/ + masks/, ImageFolderDataset layout)
    retina convert-vgg JSON IMAGES OUT --classes A,B,...
                                         VGG Image Annotator polygons -> class-map PNG masks
    retina import-weights NAME WEIGHTS OUT.pt
                                         published weights (S3-OCTA m.pth, IterNet .hdf5) as a retina checkpoint
    retina info                          versions, and which kernels serve each device

Every subcommand checks its arguments and paths before it works. A bad argument exits with 2, a bad
file or data with 1, each with one line naming the argument or file and what is wrong, and no traceback
(`retina --debug ...` shows it). Nothing is left half-written: files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

import retina_kernels

from . import image_files


class UsageError(Exception):
    """A bad command-line argument: exit code 2."""


def parse_device(text: str) -> torch.device:
    """--device: "cpu", "cuda" or "cuda:N", usable on this machine."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text}: retina runs on cpu or cuda, not {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device


def _in_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise UsageError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")


def _output_image(path: str) -> Path:
    try:
        return image_files.check_image_suffix(image_files.writable_target(path))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _output_folder(path: str, name: str) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{name} {folder}: it is a file, not a folder")
    try:
        image_files.writable_target(folder / "probe")
    except ValueError as exc:
        raise UsageError(f"{name} {folder}: {exc}") from None
    return folder


def _skeleton_2d(mask: np.ndarray, max_iter: int | None, device: str | torch.device) -> np.ndarray:
    tensor = torch.from_numpy(mask.astype(np.uint8))[None, None].to(device)
    return retina_kernels.skeletonize(tensor, max_iter=max_iter)[0, 0].cpu().numpy()


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    device = "auto" if args.device == "auto" else str(parse_device(args.device))
    if not args.minutes > 0:
        raise UsageError(f"--minutes must be > 0, got {args.minutes:g}")
    _output_folder(args.out, "--out")
    run_demo(args.out, minutes=args.minutes, kind=args.kind, device=device)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import ConfigError, TrainConfig, Trainer

    if not Path(args.config).is_file():
        raise UsageError(f"CONFIG {args.config}: file not found")
    try:
        config = TrainConfig.load(args.config, args.overrides).validate()
    except ConfigError as exc:
        raise UsageError(f"{args.config}: {exc}") from None
    default_out = Path("runs") / Path(args.config).stem
    if args.fold is not None:
        _set_fold(config, args.fold, args.folds)
        default_out = default_out / f"fold_{args.fold}"
    out = _output_folder(args.out or str(default_out), "--out")
    if args.resume and not (out / "checkpoint.pt").is_file():
        raise UsageError(f"--resume: no checkpoint.pt in {out} to resume")
    summary = Trainer(config, out, resume=args.resume).fit()
    if "signal" in summary:  # Ctrl-C or a scheduler's SIGTERM: the run saved its step; say how to go on
        if os.environ.get("RANK", "0") == "0":
            print(f"stopped by {summary['stopped_by'][len('signal '):]} after step {summary['steps']}: saved in "
                  f"{out / 'checkpoint.pt'}; continue with: retina train {out / 'config.yaml'} --out {out} --resume")
        return 128 + summary["signal"]
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        best = (f"best validation {config.training.best_metric}: {summary['best']:.4g} (best.pt)"
                if summary["best"] is not None else "not validated (no data.val): the final weights are checkpoint.pt")
        print(f"trained {summary['steps']} steps (stopped by {summary['stopped_by']}); {best}; run in {out}")
        weights = out / ("best.pt" if summary["best"] is not None else "checkpoint.pt")
        print(f"segment with: retina predict IMAGES --checkpoint {weights} --out DIR")
        if args.fold is not None:
            print(_cross_validation_report(out.parent, config.training.best_metric, args.folds))
    return 0


def _cross_validation_report(runs: Path, metric: str, folds: int) -> str:
    """The folds finished so far under `runs` (fold_K/ folders): each one's best validation value (from
    its log.csv), their mean ± SD, and the command that ensembles them."""
    import csv

    from .train.trainer import LOWER_IS_BETTER

    key, best = f"val_{metric}", {}
    for k in range(folds):
        log = runs / f"fold_{k}" / "log.csv"
        if log.is_file() and (runs / f"fold_{k}" / "best.pt").is_file():
            with log.open(newline="") as f:
                values = [float(row[key]) for row in csv.DictReader(f) if row.get(key) not in (None, "")]
            if values:
                best[k] = min(values) if key.endswith(LOWER_IS_BETTER) else max(values)
    if not best:
        return f"cross-validation: no fold under {runs} has a validated best.pt yet"
    values = np.array(list(best.values()))
    spread = f" ± {values.std(ddof=1):.4g}" if len(values) > 1 else ""
    listed = ", ".join(f"fold {k} {v:.4g}" for k, v in best.items())
    return (f"cross-validation: {len(best)} of {folds} folds done; best {metric}: {listed}; mean {values.mean():.4g}"
            f"{spread}; ensemble them: retina predict IMAGES --checkpoint {runs}/fold_*/best.pt --out DIR")


def _set_fold(config, fold: int, folds: int) -> None:
    """--fold K --folds N: the training set is the other folds of its folder and the validation set fold K
    (`retina.data.split_stems`); both must be folder datasets over the same root."""
    import inspect

    from .data import ImageFolderDataset
    from .train.trainer import dataset_class

    if not 2 <= folds:
        raise UsageError(f"--folds must be >= 2, got {folds}")
    if not 0 <= fold < folds:
        raise UsageError(f"--fold must be in [0, {folds}), got {fold}")
    if config.data.val is None:
        raise UsageError("--fold: the config has no data.val (set it to the same folder dataset as data.train)")
    for key, part, split in (("data.train", config.data.train, "train"), ("data.val", config.data.val, "val")):
        cls = dataset_class(part.name, key)
        if not issubclass(cls, ImageFolderDataset) or "folds" not in inspect.signature(cls).parameters:
            raise UsageError(f"--fold: {key} is {part.name}, which has no folds (use a folder dataset: folder, "
                             "ImageFolderDataset, OCTLayers)")
        part.kwargs.update(split=split, folds=folds, fold=fold)
    roots = {str(config.data.train.kwargs.get("root")), str(config.data.val.kwargs.get("root"))}
    if len(roots) > 1:
        raise UsageError(f"--fold: data.train and data.val must divide one folder, got roots {sorted(roots)}")


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import parse_memory, predict
    from .predict import predict_files
    from .train import load_ensemble

    device = parse_device(args.device)
    _in_range("--threshold", args.threshold, 0, 1)
    tile = args.tile
    if tile != "auto":
        try:
            tile = int(tile)
        except ValueError:
            raise UsageError(f"--tile must be 'auto' or a number of pixels, got {args.tile!r}") from None
        if tile <= 0:
            raise UsageError(f"--tile must be > 0, got {tile}")
    try:
        parse_memory(args.max_memory, "--max-memory")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = _output_folder(args.out, "--out")
    from tqdm.auto import tqdm

    from .train.distributed import Distributed

    dist = Distributed.from_environment(device.type)  # under torchrun the files are shared out
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    model = load_ensemble(args.checkpoint, device=device)
    bars: list[tqdm] = []  # made at the first image, so that an input error is not preceded by an empty bar

    def progress(done: int, total: int, stem: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="image", disable=not dist.is_main, desc="predict"))
        bars[0].update(done - bars[0].n)  # finished images; the postfix names the one in progress
        bars[0].set_postfix_str(stem)

    multiple = getattr(model, "size_multiple", 1)
    if tile != "auto" and tile % multiple:
        raise UsageError(f"--tile {tile} is not a multiple of the model's stride {multiple}")

    def forward(model, image):
        return predict(model, image, mode=args.mode, tile=tile, max_memory=args.max_memory, device=device,
                       output_device="cpu", progress=dist.is_main, flips=args.flips)  # tiles of a large image: minutes

    try:
        measurements = predict_files(model, args.inputs, out, device=device, threshold=args.threshold, forward=forward,
                                     pixel_mm=args.pixel_mm, rank=dist.rank, world=dist.world, progress=progress,
                                     prob_bits=args.bits, channel_folders=args.channel_folders,
                                     overwrite=args.overwrite,
                                     settings={"mode": args.mode, "tile": tile, "max_memory": args.max_memory,
                                               "flips": args.flips},
                                     axial_mm=args.axial_mm)
    finally:
        for bar in bars:
            bar.close()
        dist.close()
    if dist.is_main:
        print(f"wrote prob/, mask/, overlay/, skeleton/ and the measurements ({measurements.name}; "
              f"measurements.csv: one row per image) in {out}")
        lines = [json.loads(line) for line in measurements.read_text().splitlines() if line.strip()]
        seen = sum(1 for line in lines if line.get("in_training_data"))
        if seen:
            print(f"note: {seen} of {len(lines)} images trained this model (in_training_data in measurements.csv): "
                  "scores on them do not test it")
        layers = (getattr(model, "config", {}) or {}).get("num_classes", 1) > 1
        if layers and args.axial_mm is None:
            print("layer thickness is in pixels: --axial-mm (the B-scan's pixel height in mm) gives mm")
        elif not layers and args.pixel_mm is None:
            print("measurements are in pixels: --pixel-mm gives mm (e.g. OCTA-500 / AngioVue 3x3 mm at 304 px: "
                  "0.00987; 6x6 mm at 400 px: 0.015)")
    return 0


def cmd_skeletonize(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    if args.max_iter is not None and args.max_iter < 0:
        raise UsageError(f"--max-iter must be >= 0, got {args.max_iter}")
    _in_range("--threshold", args.threshold, 0, 65535)
    out = _output_image(args.out)
    if args.threshold is None:
        mask, encoding = image_files.read_mask(args.mask)
        print(f"{args.mask}: read as a binary mask ({encoding})")
    else:
        mask = image_files.read_gray(args.mask, "a mask binarised by --threshold") > args.threshold
    skeleton = _skeleton_2d(mask, args.max_iter, device)
    image_files.write_image(out, (skeleton * 255).astype(np.uint8))
    print(f"{args.mask}: {int(mask.sum())} px -> {int(skeleton.sum())} px skeleton, written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate

    _in_range("--threshold", args.threshold, 0, 1)
    _in_range("--min-percent", args.min_percent, 0, 100)
    if args.min_area < 0:
        raise UsageError(f"--min-area must be >= 0, got {args.min_area}")
    for name, folder in (("PRED", args.pred), ("LABEL", args.label), ("--fov", args.fov)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"{name} {folder}: not a folder")
    out = _output_folder(args.out, "--out")
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for earlier in bars.values():
                earlier.close()
            bar = bars[stage] = tqdm(total=total, unit="image", desc=stage, leave=False)
        bar.n = done
        bar.refresh()

    try:
        summary = evaluate(args.pred, args.label, fov=args.fov, protocol=args.protocol, threshold=args.threshold,
                           min_area=args.min_area, min_percent=args.min_percent, field=args.field,
                           allow_missing=args.allow_missing, out_dir=out, report=lambda line: print(f"note: {line}"),
                           biomarkers=args.biomarkers, pixel_mm=args.pixel_mm, progress=progress,
                           num_classes=args.classes, sd=True)
    finally:
        for bar in bars.values():
            bar.close()
    from .metrics.protocols import THRESHOLDS

    if args.protocol in THRESHOLDS:  # the protocol decides the threshold: say which, since predict's masks use 0.5
        threshold = args.threshold if args.threshold is not None else THRESHOLDS[args.protocol]
        compared = ">=" if args.protocol == "iternet" else ">"
        print(f"protocol {args.protocol}: prediction {compared} {threshold:g}")
        masks_threshold = _predict_threshold(Path(args.pred))
        if args.threshold is None and masks_threshold is not None and masks_threshold != threshold:
            print(f"note: retina predict drew the masks beside these probabilities at > {masks_threshold:g}; the "
                  f"{args.protocol} protocol thresholds at {threshold:g}, so its scores are not those masks' "
                  f"(--threshold {masks_threshold:g} scores them)")
    for key, value in summary.items():
        if not key.endswith("_sd"):
            spread = summary.get(f"{key}_sd")
            print(f"{key}: {value:.4f}" + (f" ± {spread:.4f}" if spread is not None else ""))
    print(f"wrote {out / 'per_image.csv'} and {out / 'summary.json'}")
    return 0


def _predict_threshold(pred: Path) -> Optional[float]:
    """The threshold of the masks `retina predict` wrote beside a prob/ folder (its predict.json), if any."""
    manifest = pred.parent / "predict.json"
    if pred.name != "prob" or not manifest.is_file():
        return None
    try:
        value = json.loads(manifest.read_text()).get("threshold")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def cmd_synthesize(args: argparse.Namespace) -> int:
    from .data import synthetic_label_folders, write_synthetic_dataset

    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    if args.size < 16:
        raise UsageError(f"--size must be >= 16, got {args.size}")
    _output_folder(args.out, "OUT")
    out = write_synthetic_dataset(args.out, kind=args.kind, count=args.count, size=args.size, seed=args.seed,
                                  progress=lambda line: print(f"  {line}", flush=True))
    print(f"wrote {args.count} {args.kind} images to {out / 'images'} with labels in "
          f"{', '.join(str(out / label) for label in synthetic_label_folders(args.kind))}")
    return 0


def cmd_convert_vgg(args: argparse.Namespace) -> int:
    from .data.vgg import polygons_to_masks

    classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    _output_folder(args.out, "OUT")
    if not classes:
        raise UsageError("--classes must name at least one class (class 0 first, usually 'background')")
    written = polygons_to_masks(args.json, args.images, args.out, classes, attribute=args.attribute)
    print(f"wrote {len(written)} class-map mask(s) to {args.out} ({len(classes)} classes: {', '.join(classes)})")
    return 0


# how to predict with each imported model: the images it wants, in the order its channels take them
_PREDICT_HINTS = {
    "s3octa": "retina predict 'OCTA(FULL)' 'OCTA(ILM_OPL)' 'OCTA(OPL_BM)' --channel-folders --checkpoint {out} "
              "--out DIR (OCTA-500's projection folders, or yours named alike)",
    "iternet": "retina predict PHOTOS --checkpoint {out} --out DIR (RGB fundus photographs)",
}


def cmd_import_weights(args: argparse.Namespace) -> int:
    from .models import PUBLISHED, import_published

    if args.name not in PUBLISHED:
        raise UsageError(f"NAME must be one of {', '.join(PUBLISHED)}, got {args.name!r}")
    try:
        image_files.writable_target(args.out)
    except ValueError as exc:
        raise UsageError(f"OUT: {exc}") from None
    if not Path(args.weights).is_file():
        raise FileNotFoundError(f"weights file not found: {args.weights}")
    out = import_published(args.name, args.weights, args.out)
    print(f"wrote {out}: {args.name} with the weights of {Path(args.weights).name} ({PUBLISHED[args.name].source})")
    print("segment with: " + _PREDICT_HINTS[args.name.split("-")[0]].format(out=out))
    return 0


def _versions() -> dict[str, str]:
    import platform

    from . import __version__

    found = {"retina": __version__, "torch": torch.__version__, "python": platform.python_version(),
             "numpy": np.__version__, "opencv": cv2.__version__}
    if torch.cuda.is_available():
        found["cuda devices"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return found


def cmd_info(args: argparse.Namespace) -> int:
    """Versions and which kernels serve each device: what a bug report needs."""
    for key, value in {**_versions(), **retina_kernels.backends()}.items():
        print(f"{key}: {value}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other retina error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version_line() -> str:
    versions = _versions()
    return f"retina {versions.pop('retina')} (" + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")"


class _Version(argparse.Action):
    """--version, composed only when asked: naming the CUDA devices initialises CUDA, which every other
    command (each torchrun process, before it picks its GPU) must not pay for."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the versions and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_line())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retina", description="Retinal image segmentation on fast topology-aware kernels.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"

    demo = sub.add_parser("demo", help="train DSCNet on synthetic vessels (clDice vs Dice) and segment the test set")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--minutes", type=float, default=5.0, help="training budget in all, both models (default: 5)")
    demo.add_argument("--kind", default="octa", choices=["octa", "fundus"], help="synthetic OCTA scans or fundus photos")
    demo.add_argument("--device", default="auto", help="auto (a GPU if present), cpu, cuda, cuda:N")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a model from a YAML config (see configs/)")
    train.add_argument("config", help="TrainConfig YAML file")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. training.steps=500")
    train.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    train.add_argument("--fold", type=int, default=None,
                       help="cross-validation: train on the other folds of one folder and validate on fold K "
                            "(sets data.train/val.kwargs split, folds, fold; default --out runs/<config>/fold_K)")
    train.add_argument("--folds", type=int, default=5, help="with --fold: the number of folds (default: 5)")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", help="segment images with a trained checkpoint")
    predict.add_argument("inputs", nargs="+", help="image files or folders (png, jpg, bmp, tif, gif)")
    predict.add_argument("--checkpoint", required=True, nargs="+",
                         help="a retina checkpoint (best.pt / checkpoint.pt); several: their ensemble, predicting "
                              "their mean probability (the folds of a cross-validation)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--mode", default="auto", choices=["auto", "whole", "exact", "blend"],
                         help="auto (default): whole images when they fit --max-memory, else tiles the way the model "
                              "was trained; exact: tiles equal to the whole-image result; blend: overlapping tiles "
                              "blended (MONAI / nnU-Net)")
    predict.add_argument("--channel-folders", action="store_true",
                         help="the inputs are folders of one channel each, in the model's channel order (OCTA-500: "
                              "'OCTA(FULL)' 'OCTA(ILM_OPL)' 'OCTA(OPL_BM)'); files are stacked by name")
    predict.add_argument("--overwrite", action="store_true",
                         help="redo every image when --out holds predictions of other weights or settings (a rerun "
                              "with the same ones skips the images already written)")
    predict.add_argument("--bits", type=int, default=8, choices=[8, 16], help="probability PNG depth (default: 8)")
    predict.add_argument("--tile", default="auto", help="tile side in pixels, or auto (the largest that fits)")
    predict.add_argument("--max-memory", default=None,
                         help="device memory to stay within, e.g. 2GiB (default: the device's free memory)")
    predict.add_argument("--flips", action="store_true",
                         help="test-time augmentation: the mean over the image and its three flips (4x the time)")
    predict.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the mask")
    predict.add_argument("--pixel-mm", type=float, default=None, help="pixel size in mm (adds areas in mm²)")
    predict.add_argument("--axial-mm", type=float, default=None,
                         help="layer models (OCT B-scans): pixel height in mm, for layer thickness in mm")
    predict.add_argument("--device", default=default_device)
    predict.set_defaults(func=cmd_predict)

    skel = sub.add_parser("skeletonize", help="skeleton of a binary mask image")
    skel.add_argument("mask", help="binary mask image (0/1, 0/255, any two values, or black and one colour)")
    skel.add_argument("out", help="output image path (PNG recommended)")
    skel.add_argument("--threshold", type=float, default=None,
                      help="binarise a non-binary gray image: foreground = values above this (in the file's "
                           "own units: 0-255 for 8-bit, 0-65535 for 16-bit)")
    skel.add_argument("--max-iter", type=int, default=None, help="stop after this many outer iterations")
    skel.add_argument("--device", default=default_device)
    skel.set_defaults(func=cmd_skeletonize)

    evaluate = sub.add_parser("evaluate", help="score predictions against labels (per-image CSV + summary)")
    evaluate.add_argument("pred", help="folder of prediction images (8/16-bit probabilities), matched by file stem")
    evaluate.add_argument("label", help="folder of binary label masks (any binary encoding)")
    evaluate.add_argument("--fov", default=None, help="folder of field-of-view masks (iternet, retina)")
    evaluate.add_argument("--protocol", default="s3octa", choices=["s3octa", "iternet", "retina", "classes"],
                          help="s3octa / iternet: as those papers' code computes them; retina: ours; classes: class "
                               "maps, e.g. OCT layers (per-class IoU and Dice) (docs/metrics.md)")
    evaluate.add_argument("--classes", type=int, default=None,
                          help="classes protocol: the number of classes (default: the largest index found + 1)")
    evaluate.add_argument("--threshold", type=float, default=None, help="override the protocol's threshold (in [0, 1])")
    evaluate.add_argument("--min-area", type=int, default=50, help="s3octa: small-component area (S3-OCTA's 50)")
    evaluate.add_argument("--min-percent", type=float, default=10,
                          help="s3octa: components below min(min-area, this percentile of areas) go (S3-OCTA's 10)")
    evaluate.add_argument("--field", default=None, choices=["3M", "6M"],
                          help="s3octa: resize label and prediction to the OCTA-500 field's size (304² / 400²)")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="score only the labels that have a prediction (otherwise a missing one is an error)")
    evaluate.add_argument("--out", default="evaluation", help="output folder (default: evaluation)")
    evaluate.add_argument("--biomarkers", nargs="?", const="vessels", default=None, choices=["vessels", "faz"],
                          help="add measurements of prediction and label per image (retina.biomarkers): vessels "
                               "(the default) or faz (the zone's area and shape)")
    evaluate.add_argument("--pixel-mm", type=float, default=None, help="pixel size in mm for --biomarkers")
    evaluate.set_defaults(func=cmd_evaluate)

    synth = sub.add_parser("synthesize", help="write a synthetic OCTA or fundus dataset with exact labels")
    synth.add_argument("out", help="output folder: images/ and one folder per label (vessel, artery, vein, ...)")
    synth.add_argument("--kind", default="octa", choices=["octa", "fundus"])
    synth.add_argument("--count", type=int, default=20)
    synth.add_argument("--size", type=int, default=304, help="image side in pixels (default: 304)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    synth.set_defaults(func=cmd_synthesize)

    convert = sub.add_parser("convert-vgg", help="VGG Image Annotator polygons -> class-map PNG masks")
    convert.add_argument("json", help="VIA export (JSON) with polygon regions")
    convert.add_argument("images", help="folder of the annotated images (gives each mask its size)")
    convert.add_argument("out", help="output folder: one <image stem>.png of class indices per image")
    convert.add_argument("--classes", required=True,
                         help="comma-separated class names in index order, e.g. background,NFL,GCL+IPL,...")
    convert.add_argument("--attribute", default=None,
                         help="region attribute holding the class name (default: the only one)")
    convert.set_defaults(func=cmd_convert_vgg)

    imported = sub.add_parser("import-weights", help="a retina checkpoint of published weights (S3-OCTA, IterNet)")
    imported.add_argument("name", help="which published model: s3octa (m.pth), iternet-drive, iternet-chasedb1 or "
                                       "iternet-stare (the released Keras .hdf5 of that dataset)")
    imported.add_argument("weights", help="the released weights file")
    imported.add_argument("out", help="the retina checkpoint to write (.pt), for retina predict --checkpoint")
    imported.set_defaults(func=cmd_import_weights)

    info = sub.add_parser("info", help="versions, and which kernels serve each device (for bug reports)")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `retina train CONFIG --out DIR key=value`: overrides may follow the options too
    if extra and getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides, extra = [*args.overrides, *extra], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.debug:  # OpenCV logs decoder failures to stderr; our error line says what went wrong
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return args.func(args)
    except UsageError as exc:
        code, message = 2, str(exc)
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except BrokenPipeError:  # `retina info | head`: the reader left; nothing to report, as with other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as exc:  # files, data, memory
        code, message = 1, str(exc) or type(exc).__name__
    except Exception as exc:  # a bug of ours: say so in one line; --debug shows where
        code, message = 1, f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback"
    if args.debug:
        raise
    print(f"retina {args.command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
