"""Thin typed wrappers over torch.ops.retina.*: validation, dtype handling, fake kernels, fallback.
Importing this package imports every op, and so registers what serves each (retina_kernels.registry)."""

from . import differentiable_skeleton, dsconv, skeletonize, soft_skeleton  # noqa: F401
