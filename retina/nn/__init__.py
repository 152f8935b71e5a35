"""Layers: `DSConv` (dynamic snake convolution on the fused `retina_kernels.dsconv2d`)."""

from .dsconv import DSConv

__all__ = ["DSConv"]
