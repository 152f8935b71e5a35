"""Synthetic retinal data with exact labels, seeded: the built-in data of the demo, tests and benchmarks.

- `vessel_mask`, `vessel_volume`: binary vessel trees (2D / 3D).
- `octa_image`: OCTA-like projections with vessel / artery / vein / capillary / FAZ labels.
- `fundus_image`: fundus-like colour photographs with vessel / artery / vein / optic disc / FOV labels.
"""

from .fundus import FundusSample, fundus_image
from .masks import vessel_mask, vessel_volume
from .octa import OctaSample, octa_image
from .trees import Segments, TreeStyle

__all__ = ["FundusSample", "OctaSample", "Segments", "TreeStyle", "fundus_image", "octa_image", "vessel_mask",
           "vessel_volume"]
