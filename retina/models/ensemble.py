"""`Ensemble`: several trained models of one task (the k runs of a cross-validation, several seeds) as one
model whose prediction is their mean probability, as nnU-Net ensembles its folds.

    >>> model = retina.load_ensemble(["fold0/best.pt", "fold1/best.pt", "fold2/best.pt"])
    >>> logits = model(image)                       # logits of the mean probability
    >>> retina.inference.predict(model, image, mode="exact")   # each member tiled, then averaged
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import main_output

# what a member's checkpoint says about its input: members must agree on it, or one image cannot feed them all
_SHARED_INPUT = ("in_channels", "preprocess", "channel_sources", "field_of_view", "label_names")


def mean_probability_logits(outputs: Sequence[Any]) -> Any:
    """Logits whose probabilities are the mean of `outputs`' probabilities: per channel by the sigmoid
    for one channel, over channels by the softmax for several (as `retina predict` reads them); a dict
    (named outputs) per name. The mean is clamped a float epsilon inside (0, 1), so the logits stay
    finite (|logit| ≤ 16 in float32) and blend or resize without NaN."""
    first = outputs[0]
    if isinstance(first, dict):
        return {name: mean_probability_logits([o[name] for o in outputs]) for name in first}
    tiny = torch.finfo(first.dtype).eps
    if first.shape[1] == 1:
        p = torch.stack([torch.sigmoid(o) for o in outputs]).mean(0).clamp(tiny, 1 - tiny)
        return torch.log(p) - torch.log1p(-p)
    p = torch.stack([torch.softmax(o, dim=1) for o in outputs]).mean(0).clamp_min(tiny)
    return torch.log(p)


def _training_records(members: Sequence[torch.nn.Module]) -> dict:
    """The members' common input record (checkpoint_info["training"]); an error names the first field
    on which two members differ. input_range spans all of theirs."""
    records = [(getattr(m, "checkpoint_info", {}) or {}).get("training") or {} for m in members]
    merged = dict(records[0])
    for i, record in enumerate(records[1:], 1):
        for key in _SHARED_INPUT:
            if record.get(key) != records[0].get(key):
                raise ValueError(f"members 0 and {i} take different inputs: {key} {records[0].get(key)!r} and "
                                 f"{record.get(key)!r}")
    ranges = [r["input_range"] for r in records if r.get("input_range")]
    merged["input_range"] = [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else None
    merged["patch"] = None if len({r.get("patch") for r in records}) > 1 else records[0].get("patch")
    # an image that trained any member is not a test of the ensemble
    digests = [d for r in records for d in (r.get("image_digests") or [])]
    merged["image_digests"] = list(dict.fromkeys(digests)) or None
    return merged


class Ensemble(torch.nn.Module):
    """Models of one task, predicting together: `forward` returns the logits of their mean probability
    (`mean_probability_logits`), so prediction, thresholds and measurements take an ensemble like one
    model. `retina.inference.predict` runs each member in the given mode (each tiles as it trained) and
    averages. Members must take the same input (channels, and where their checkpoints record them the
    preprocessing, channel sources, field of view and labels); `checkpoint_info["members"]` keeps each
    member's own record."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one model")
        configs = [dict(getattr(m, "config", {}) or {}) for m in members]
        for key in ("in_channels", "num_classes"):
            values = {c.get(key) for c in configs}
            if len(values) > 1:
                raise ValueError(f"members differ in {key}: {sorted(values, key=repr)}")
        self.members = torch.nn.ModuleList(members)
        self.config = {"name": "ensemble", "in_channels": configs[0].get("in_channels"),
                       "num_classes": configs[0].get("num_classes"), "members": configs}
        self.checkpoint_info = {"training": _training_records(members),
                                "members": [getattr(m, "checkpoint_info", {}) for m in members]}
        self.size_multiple = math.lcm(*(int(getattr(m, "size_multiple", 1)) for m in members))

    def forward(self, x: torch.Tensor) -> Any:
        return mean_probability_logits([main_output(member(x)) for member in self.members])
