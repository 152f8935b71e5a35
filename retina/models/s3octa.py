"""`S3OCTA`: snake convolutions plus a global-aggregation branch, for OCTA vessel segmentation from the
three projections (FULL, ILM-OPL, OPL-BM) as channels."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..nn import SegFormerStage, SegmentationHead, SnakeBlock, make_aggregation, pad_to_multiple, upsample_to
from .base import SegmentationModel
from .blocks import run_block


class S3OCTA(SegmentationModel):
    """S3-OCTA: a U-shape of `depth` levels; every stage = [conv 3x3 | DSConv morph 1 | DSConv morph 0] ->
    concat -> fuse conv; at levels 1 .. depth-2 a global-aggregation branch runs on the stage's input and
    is concatenated into the skip; bilinear x2 up; 1x1 head. Returns logits (the public model returns
    their sigmoid).

    `widths="published"` (the default): the public model's widths, width·2^level down and back up, and its
    MiT branch (`retina.nn.SegFormerStage`) mapping a level's C input channels to 2C: depth 3, width 72 is
    the published "m" model and `S3OCTA.from_public` loads its `m.pth`. `widths="constant"`: every level at
    `width`, with any aggregation ("mit": retina's SegFormer layer at C channels, "swin", "aspp", None).
    (The published configuration's extend_scope of 7 was never passed to the layers, which ran with 3:
    3 is the default here.)

    Shapes: [B, in_channels, H, W] (any H, W; padded to 2^(depth-1), cropped back) -> [B, num_classes, H, W].
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, depth: int = 3, width: int = 72,
                 kernel_size: int = 11, extend_scope: float = 3.0, global_aggregation: str | None = "mit",
                 widths: str = "published", checkpointing: bool = False):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if widths not in ("published", "constant"):
            raise ValueError(f"widths must be 'published' or 'constant', got {widths!r}")
        if global_aggregation not in ("mit", "swin", "aspp", None):
            raise ValueError("global_aggregation must be one of ['aspp', 'mit', 'swin'] or None, got "
                             f"{global_aggregation!r}")
        if widths == "published" and global_aggregation not in ("mit", None):
            raise ValueError(f"global_aggregation {global_aggregation!r}: the published widths come with the MiT "
                             "branch (or none); use widths='constant' for swin or aspp")
        self.depth, self.checkpointing = depth, checkpointing
        self.has_aggregation = global_aggregation is not None
        grow = 2 if widths == "published" else 1
        level_width = [width * grow**level for level in range(depth)]
        stage_input = [in_channels] + level_width[:-1]
        order = (1, 0)  # S3-OCTA's stage order: morph 1 before morph 0
        self.encoder = nn.ModuleList(
            SnakeBlock(stage_input[level], level_width[level], kernel_size, extend_scope, order) for level in range(depth)
        )
        if widths == "published":
            branches = [SegFormerStage(stage_input[level], 2 * stage_input[level]) if self.has_aggregation
                        else nn.Identity() for level in range(1, depth - 1)]
        else:
            branches = [make_aggregation(global_aggregation, width) or nn.Identity() for _ in range(1, depth - 1)]
        self.aggregation = nn.ModuleList(branches)
        branch_width = [0] + [(2 * stage_input[level] if widths == "published" else width) * self.has_aggregation
                              for level in range(1, depth - 1)]
        skip_width = [level_width[level] + branch_width[level] for level in range(depth - 1)]
        self.decoder = nn.ModuleList(
            SnakeBlock(level_width[level + 1] + skip_width[level], level_width[level], kernel_size, extend_scope, order)
            for level in reversed(range(depth - 1))
        )
        self.pool = nn.MaxPool2d(2)
        self.head = SegmentationHead(width, num_classes)

    @classmethod
    def from_public(cls, source, *, depth: Optional[int] = None, **kwargs) -> "S3OCTA":
        """An S3OCTA with the published weights (`m.pth`: depth 3, width 72; `l.pth`: depth 4), from a path
        or a state dict. Public keys are renamed to retina's (stages, snakes, fusion, the MiT branch, the
        head); the MiT blocks of levels 0 and depth-1 that the public forward never calls are skipped by
        name, and listed in `model.skipped_public_keys`. Shapes are checked by load_state_dict (strict).
        `torch.sigmoid(model(x))` equals the public model's output."""
        state = source if isinstance(source, dict) else torch.load(source, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if "out_conv.weight" not in state or "dsconvs.0.conv.conv.weight" not in state:
            raise ValueError("not a public S3-OCTA state dict (no out_conv / dsconvs keys)")
        stages = len({k.split(".")[1] for k in state if k.startswith("dsconvs.")})
        depth = depth or (stages + 1) // 2
        first = state["dsconvs.0.conv.conv.weight"]
        config = {"in_channels": first.shape[1], "width": first.shape[0], "num_classes": state["out_conv.weight"].shape[0],
                  "kernel_size": state["dsconvs.0.dsconv_x.dsc_conv_x.weight"].shape[2], "depth": depth,
                  "global_aggregation": "mit" if any(k.startswith("ga_blocks.") for k in state) else None,
                  "widths": "published", **kwargs}
        model = cls(**config).to(first.dtype)  # the weights' own precision (a float64 copy stays exact)
        mapped, skipped = public_key_map(state, depth)
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ValueError(f"public state dict does not fit S3OCTA({config}): missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        model.skipped_public_keys = skipped
        return model.eval()

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2 ** (self.depth - 1))
        skips = []
        for level, block in enumerate(self.encoder):
            stage_input = x if level == 0 else self.pool(x)
            x = run_block(block, stage_input, self.checkpointing)
            if 1 <= level < self.depth - 1 and self.has_aggregation:
                x_skip = torch.cat([x, run_block(self.aggregation[level - 1], stage_input, self.checkpointing)], 1)
            else:
                x_skip = x
            skips.append(x_skip)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = run_block(block, torch.cat([upsample_to(x, skip), skip], 1), self.checkpointing)
        return self.head(x)[..., :h, :w]


# the public model's names for the parts of a stage, and of its MiT branch, in retina's modules
_STAGE_PARTS = {"conv.conv.": "conv.0.", "conv.gn.": "conv.1.", "dsconv_x.": "snakes.0.", "dsconv_y.": "snakes.1.",
                "conv_fusion.conv.": "fuse.0.", "conv_fusion.gn.": "fuse.1."}
_MIT_PARTS = {"mit.stages.0.1.": "embed.", "mit.stages.0.2.0.0.fn.": "attention.", "mit.stages.0.2.0.0.norm.": "norm1.",
              "mit.stages.0.2.0.1.fn.net.1.net.": "feed_forward.1.", "mit.stages.0.2.0.1.fn.net.": "feed_forward.",
              "mit.stages.0.2.0.1.norm.": "norm2."}


def public_key_map(state: dict, depth: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The public S3-OCTA state dict in retina's names (and shapes: the unfold-then-1x1 patch embedding
    becomes a 3x3 kernel), and the public keys skipped: the MiT blocks of levels 0 and depth-1, which the
    public forward never calls."""
    mapped, skipped = {}, []
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "dsconvs":
            index = int(parts[1])
            base = f"encoder.{index}." if index < depth else f"decoder.{index - depth}."
            rest = ".".join(parts[2:])
            for public, ours in _STAGE_PARTS.items():
                if rest.startswith(public):
                    mapped[base + ours + rest[len(public):]] = value
                    break
            else:
                raise KeyError(f"unexpected public key {key}")
        elif parts[0] == "out_conv":
            mapped["head." + parts[1]] = value
        elif parts[0] == "ga_blocks":
            level = int(parts[1])
            if not 1 <= level < depth - 1:
                skipped.append(key)
                continue
            rest = ".".join(parts[2:])
            for public, ours in _MIT_PARTS.items():
                if rest.startswith(public):
                    name = f"aggregation.{level - 1}.{ours}{rest[len(public):]}"
                    if ours == "embed." and name.endswith("weight"):  # [out, C·9, 1, 1] -> [out, C, 3, 3]
                        value = value.reshape(value.shape[0], -1, 3, 3)
                    mapped[name] = value
                    break
            else:
                raise KeyError(f"unexpected public key {key}")
        else:
            raise KeyError(f"unexpected public key {key}")
    return mapped, skipped
