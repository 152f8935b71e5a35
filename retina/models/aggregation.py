"""Moved to `retina.nn.aggregation` (layers live in `retina.nn`); this module keeps the old import path."""

from ..nn.aggregation import ASPP, MiTBlock, SwinBlocks, attend, make_aggregation

__all__ = ["ASPP", "MiTBlock", "SwinBlocks", "attend", "make_aggregation"]
