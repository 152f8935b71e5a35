"""Topology of binary masks for the tests, by SciPy labelling (independent of retina's kernels).

2D: foreground 8-connected, background 4-connected, outside = background; 3D: 26 / 6."""

import numpy as np
from scipy import ndimage
from skimage.measure import euler_number


def betti_2d(mask: np.ndarray) -> tuple[int, int, int]:
    """(components, holes, Euler number) of a 2D mask."""
    mask = np.asarray(mask, bool)
    components = ndimage.label(mask, structure=np.ones((3, 3)))[1]
    holes = ndimage.label(~np.pad(mask, 1), structure=ndimage.generate_binary_structure(2, 1))[1] - 1
    return components, holes, int(euler_number(mask, connectivity=2))


def betti_3d(mask: np.ndarray) -> tuple[int, int, int]:
    """(components, cavities, Euler number) of a 3D mask."""
    mask = np.asarray(mask, bool)
    components = ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
    cavities = ndimage.label(~np.pad(mask, 1), structure=ndimage.generate_binary_structure(3, 1))[1] - 1
    return components, cavities, int(euler_number(mask, connectivity=3))
