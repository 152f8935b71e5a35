"""retina: retinal image segmentation (OCTA, fundus, OCT) on fast, topology-aware PyTorch kernels.

The compiled kernels live in `retina_kernels`; this package is the user's API around them.
"""

from retina_kernels import backends, skeletonize

from . import models, nn

__version__ = "0.1.0"
__all__ = ["__version__", "backends", "models", "nn", "skeletonize"]
