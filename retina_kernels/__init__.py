"""retina_kernels: the compiled kernels behind retina, with a plain-PyTorch reference of every op.

    >>> import retina_kernels
    >>> retina_kernels.backends()          # which implementation serves each device
    >>> retina_kernels.skeletonize(mask)   # [N, 1, H, W] or [N, 1, D, H, W], values 0/1
    >>> retina_kernels.differentiable_skeleton(prob)   # [N, C, H, W] in [0, 1], differentiable
    >>> retina_kernels.soft_skeleton(prob, num_iter=10)   # soft-clDice's soft skeleton, 2D or 3D
    >>> retina_kernels.dsconv2d(x, offset, weight, bias, morph=0)   # dynamic snake convolution
"""

from ._extension import extension_loaded
from .info import backends
from .ops.differentiable_skeleton import differentiable_skeleton
from .ops.dsconv import dsconv2d
from .ops.skeletonize import skeletonize
from .ops.soft_skeleton import soft_skeleton
from .registry import register_backend

__all__ = ["backends", "differentiable_skeleton", "dsconv2d", "extension_loaded", "register_backend", "skeletonize",
           "soft_skeleton"]
