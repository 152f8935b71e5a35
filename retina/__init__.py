"""retina: retinal image segmentation (OCTA, fundus, OCT) on fast, topology-aware PyTorch kernels.

The compiled kernels live in `retina_kernels`; this package is the user's API around them:
`retina.models`, `retina.nn` (layers), `retina.losses`, `retina.metrics`, `retina.data`,
`retina.image_files`, `retina.train` (and `retina.load(checkpoint)`), `retina.predict`, and the `retina`
command (`retina.cli`).
"""

from retina_kernels import backends, skeletonize

from . import data, image_files, losses, metrics, models, nn, train
from .train import load, load_ensemble

__version__ = "0.1.0"
__all__ = ["__version__", "backends", "data", "image_files", "load", "load_ensemble", "losses", "metrics", "models",
           "nn", "skeletonize", "train"]
