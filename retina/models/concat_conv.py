"""Moved to `retina.nn.concat_conv` (layers live in `retina.nn`); this module keeps the old import path."""

from ..nn.concat_conv import concatenate, conv2d_of_concatenation

__all__ = ["concatenate", "conv2d_of_concatenation"]
