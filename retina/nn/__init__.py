"""Layers: the building blocks of `retina.models`.

- `DSConv`: dynamic snake convolution on the fused `retina_kernels.dsconv2d`.
- `ConvNormAct`, `ConcatConvNormAct` (of a channel concatenation, without making it), `SnakeBlock`,
  `groups_for`, `conv2d_of_concatenation`.
- Global aggregation: `MiTBlock`, `SwinBlocks`, `ASPP`, `attend`, `make_aggregation`; `SegFormerStage` (the
  published S3-OCTA's MiT branch: `ChannelLayerNorm`, `EfficientSelfAttention`, `MixFeedForward`).
- Heads: `SegmentationHead`, `SegmentationHeads` (several named outputs).
- Task exchange: `LocalContextExchange`, `GlobalContextExchange` (VesselFAZNet's decoders).
- Spatial helpers: `pad_to_multiple`, `padding_to_multiple`, `replicate_pad`, `upsample_to`.
"""

from .aggregation import ASPP, MiTBlock, SwinBlocks, attend, make_aggregation
from .concat_conv import conv2d_of_concatenation
from .conv import ConcatConvNormAct, ConvNormAct, SnakeBlock, groups_for
from .dsconv import DSConv
from .exchange import GlobalContextExchange, LocalContextExchange
from .heads import SegmentationHead, SegmentationHeads
from .segformer import ChannelLayerNorm, EfficientSelfAttention, MixFeedForward, SegFormerStage
from .spatial import pad_to_multiple, padding_to_multiple, replicate_pad, upsample_to

__all__ = ["ASPP", "ChannelLayerNorm", "ConcatConvNormAct", "ConvNormAct", "DSConv", "EfficientSelfAttention",
           "GlobalContextExchange", "LocalContextExchange",
           "MiTBlock", "MixFeedForward", "SegFormerStage", "SegmentationHead", "SegmentationHeads",
           "SnakeBlock", "SwinBlocks", "attend", "conv2d_of_concatenation", "groups_for", "make_aggregation",
           "pad_to_multiple", "padding_to_multiple", "replicate_pad", "upsample_to"]
