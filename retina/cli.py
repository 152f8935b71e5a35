"""The `retina` command.

    retina demo [--out DIR]              skeletonize a generated vessel image, save a PNG, print the topology
    retina skeletonize MASK OUT          skeleton of a binary mask image
    retina evaluate PRED LABEL [--fov DIR] [--protocol s3octa|iternet] [--out DIR]
                                         score a folder of predictions against a folder of labels
    retina synthesize OUT [--kind octa|fundus] [--count N]
                                         write a synthetic dataset (images/ + masks/, ImageFolderDataset layout)
    retina convert-vgg JSON IMAGES OUT --classes A,B,...
                                         VGG Image Annotator polygons -> class-map PNG masks
    retina info                          which kernels serve each device
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import retina_kernels

from . import image_files
from .data import octa_image, vessel_mask
from .metrics import betti_numbers


def _topology(mask: np.ndarray) -> tuple[int, int]:
    """(8-connected components, 4-connected holes) of a 2D binary mask (`retina.metrics.betti_numbers`)."""
    b0, b1 = betti_numbers(torch.from_numpy(mask.astype(bool))[None])[0].tolist()
    return b0, b1


def _overlay(mask: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """RGB picture: vessels grey, skeleton red."""
    rgb = np.zeros(mask.shape + (3,), np.uint8)
    rgb[mask.astype(bool)] = (90, 90, 90)
    rgb[skeleton.astype(bool)] = (255, 40, 40)
    return rgb


def _skeleton_2d(mask: np.ndarray, max_iter: int | None, device: str) -> np.ndarray:
    tensor = torch.from_numpy(mask.astype(np.uint8))[None, None].to(device)
    return retina_kernels.skeletonize(tensor, max_iter=max_iter)[0, 0].cpu().numpy()


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    print(f"retina demo: backends {retina_kernels.backends()}")
    mask = vessel_mask(args.size, args.size, seed=args.seed)
    _skeleton_2d(mask, None, args.device)  # warm-up (first call loads and initialises kernels)
    start = time.perf_counter()
    skeleton = _skeleton_2d(mask, None, args.device)
    elapsed = time.perf_counter() - start
    before, after = _topology(mask), _topology(skeleton)
    image_files.write_image(out / "vessels.png", (mask * 255).astype(np.uint8))
    path = image_files.write_image(out / "skeleton.png", _overlay(mask, skeleton))
    print(f"vessel mask {args.size}x{args.size} (seed {args.seed}): {int(mask.sum())} px -> skeleton "
          f"{int(skeleton.sum())} px in {1e3 * elapsed:.1f} ms on {args.device}")
    print(f"components {before[0]} -> {after[0]}, holes {before[1]} -> {after[1]} (must be equal)")
    scan = octa_image(304, seed=args.seed)
    image_files.write_image(out / "octa.png", np.rint(scan.image[0] * 255).astype(np.uint8))
    labels = np.zeros(scan.faz.shape + (3,), np.uint8)  # artery red, vein blue, FAZ green
    labels[scan.artery, 0], labels[scan.vein, 2], labels[scan.faz, 1] = 255, 255, 255
    image_files.write_image(out / "octa_labels.png", labels)
    print(f"wrote {out / 'vessels.png'}, {path}, and a synthetic OCTA scan with its labels "
          f"({out / 'octa.png'}, {out / 'octa_labels.png'})")
    return 0 if before == after else 1


def cmd_skeletonize(args: argparse.Namespace) -> int:
    image = image_files.read_image(args.mask, grayscale=True)
    mask = image > args.threshold
    skeleton = _skeleton_2d(mask, args.max_iter, args.device)
    image_files.write_image(args.out, (skeleton * 255).astype(np.uint8))
    print(f"{args.mask}: {int(mask.sum())} px -> {int(skeleton.sum())} px skeleton, written to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate

    summary = evaluate(args.pred, args.label, fov=args.fov, protocol=args.protocol, min_size=args.min_size,
                       out_dir=args.out)
    for key, value in summary.items():
        print(f"{key}: {value:.4f}")
    print(f"wrote {Path(args.out) / 'per_image.csv'} and {Path(args.out) / 'summary.json'}")
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from .data import synthetic_label_folders, write_synthetic_dataset

    out = write_synthetic_dataset(args.out, kind=args.kind, count=args.count, size=args.size, seed=args.seed,
                                  progress=lambda line: print(f"  {line}", flush=True))
    print(f"wrote {args.count} {args.kind} images to {out / 'images'} with labels in "
          f"{', '.join(str(out / label) for label in synthetic_label_folders(args.kind))}")
    return 0


def cmd_convert_vgg(args: argparse.Namespace) -> int:
    from .data.vgg import polygons_to_masks

    classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    if not classes:
        raise ValueError("--classes must name at least one class (class 0 first, usually 'background')")
    written = polygons_to_masks(args.json, args.images, args.out, classes, attribute=args.attribute)
    print(f"wrote {len(written)} class-map mask(s) to {args.out} ({len(classes)} classes: {', '.join(classes)})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    for key, value in retina_kernels.backends().items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retina", description="Retinal image segmentation on fast topology-aware kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"

    demo = sub.add_parser("demo", help="skeletonize a generated vessel image and save PNGs")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--size", type=int, default=512, help="image side in pixels (default: 512)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default=default_device)
    demo.set_defaults(func=cmd_demo)

    skel = sub.add_parser("skeletonize", help="skeleton of a binary mask image")
    skel.add_argument("mask", help="mask image (foreground = pixels above --threshold)")
    skel.add_argument("out", help="output image path (PNG recommended)")
    skel.add_argument("--threshold", type=int, default=127)
    skel.add_argument("--max-iter", type=int, default=None, help="stop after this many outer iterations")
    skel.add_argument("--device", default=default_device)
    skel.set_defaults(func=cmd_skeletonize)

    evaluate = sub.add_parser("evaluate", help="score predictions against labels (per-image CSV + summary)")
    evaluate.add_argument("pred", help="folder of prediction images (8-bit probabilities), matched by file stem")
    evaluate.add_argument("label", help="folder of label images (> 127 = vessel)")
    evaluate.add_argument("--fov", default=None, help="folder of field-of-view masks (optional)")
    evaluate.add_argument("--protocol", default="s3octa", choices=["s3octa", "iternet"])
    evaluate.add_argument("--min-size", type=int, default=20, help="s3octa: drop components below this many pixels")
    evaluate.add_argument("--out", default="evaluation", help="output folder (default: evaluation)")
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

    info = sub.add_parser("info", help="which kernels serve each device")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"retina {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
