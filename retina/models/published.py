"""Published weights as retina checkpoints: `import_published(name, weights, out)` reads a released file
(S3-OCTA's `m.pth`, IterNet's Keras `.h5`) and writes a checkpoint that `retina.load`, `retina predict`
and `retina evaluate` use like one of retina's own runs, with what the public code trained on recorded
in it: which images make the channels, the value range, the preprocessing, the patch size, the label.
So `retina predict` prepares a new image as the authors' code did and measures what their label was.

- `s3octa`: ShellRedia/S3-OCTA's `m.pth` (a state dict). Input: OCTA-500's three projection maps FULL,
  ILM_OPL and OPL_BM stacked as channels, 8-bit / 255, whole scans; label RV.
- `iternet-drive`, `iternet-chasedb1`, `iternet-stare`: conscienceli/IterNet's
  `trained_model/<DATASET>/*.hdf5`. Input: RGB / 255 resized to 576², 960² or 592² (the dataset's side in
  `prepare_dataset.py`); trained on 128² crops; vessels, measured inside the field of view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data.datasets.octa import PROJECTIONS
from ..image_files import file_digest
from .iternet import IterNet
from .s3octa import S3OCTA


@dataclass(frozen=True)
class PublishedWeights:
    """How to read one released file (`load(path) -> model` giving logits) and what its authors' code
    trained the model on, in the fields of a retina checkpoint's `training` record."""

    load: Callable[[Path], torch.nn.Module]
    source: str
    training: dict = field(default_factory=dict)


def _iternet(side: int, dataset: str) -> PublishedWeights:
    # prepare_dataset.py resizes every image to one square side; the model trained on 128² crops of it
    return PublishedWeights(IterNet.from_keras, f"conscienceli/IterNet, {dataset}", {
        "in_channels": 3, "preprocess": {"gray": None, "equalize": False, "clahe": None, "resize": [side, side]},
        "patch": 128, "channel_sources": None, "input_range": [0.0, 1.0], "field_of_view": True,
        "label_names": ["vessel"]})


PUBLISHED: dict[str, PublishedWeights] = {
    "s3octa": PublishedWeights(S3OCTA.from_public, "ShellRedia/S3-OCTA", {
        "in_channels": 3, "preprocess": None, "patch": None, "channel_sources": list(PROJECTIONS),
        "input_range": [0.0, 1.0], "field_of_view": False, "label_names": ["RV"]}),
    "iternet-drive": _iternet(576, "DRIVE"),
    "iternet-chasedb1": _iternet(960, "CHASE-DB1"),
    "iternet-stare": _iternet(592, "STARE"),
}


def import_published(name: str, weights: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Writes the retina checkpoint `out` of the released weights file `weights` of the model `name`
    (a key of `PUBLISHED`); returns `out`. The checkpoint records the file's sha256 and origin under
    `published` (`retina.load(out).checkpoint_info["published"]`); it holds no optimizer state, so it
    predicts and evaluates but does not resume a run."""
    from .. import __version__
    from ..train.checkpoint import save_checkpoint

    if name not in PUBLISHED:
        raise ValueError(f"name must be one of {', '.join(PUBLISHED)}, got {name!r}")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    published = PUBLISHED[name]
    try:
        model = published.load(weights).float().eval()
    except ImportError:
        raise
    except Exception as exc:  # another model's file, a damaged one, a pickle that is not a state dict
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"cannot read {weights} as the published {name} weights: {reason}") from None
    state = model.state_dict()
    return save_checkpoint(out, {
        "model_config": dict(model.config), "model": state, "inference_weights": state,
        "retina_version": __version__, "training": dict(published.training),
        "published": {"name": name, "source": published.source, "file": weights.name,
                      "sha256": file_digest(weights, "sha256")}})
