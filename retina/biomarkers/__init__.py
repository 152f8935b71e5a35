"""Clinical measurements from segmentations, with their definitions and references in each module:
OCTA vessels (`vessel_measurements`: area and skeleton density, diameter index, fractal dimension,
tortuosity, branch points), the FAZ (`faz_measurements`: area, perimeter, circularity, acircularity,
axis ratio) and OCT layers (`layer_thickness`). Torch or NumPy masks in, floats out; pixel sizes in mm
are arguments."""

from .faz import faz_measurements
from .layers import layer_thickness
from .vessels import (
    branch_points,
    fractal_dimension,
    skeleton_branches,
    skeleton_length,
    tortuosity,
    vessel_area_density,
    vessel_diameter_index,
    vessel_measurements,
    vessel_skeleton_density,
)

__all__ = ["branch_points", "faz_measurements", "fractal_dimension", "layer_thickness", "skeleton_branches",
           "skeleton_length", "tortuosity", "vessel_area_density", "vessel_diameter_index", "vessel_measurements",
           "vessel_skeleton_density"]
