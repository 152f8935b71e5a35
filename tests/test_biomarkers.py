"""retina.biomarkers on shapes with known answers (a disc's area and circularity, an ellipse's axis ratio,
straight and circular vessels' tortuosity, the fractal dimension of a line and a filled square, a
layered B-scan's thicknesses) and on the synthetic generators' labels."""

import math

import cv2
import numpy as np
import pytest
import torch

from retina import biomarkers as B
from retina.data.synthetic import octa_image


def disc(radius: int, size: int = 200) -> np.ndarray:
    image = np.zeros((size, size), np.uint8)
    cv2.circle(image, (size // 2, size // 2), radius, 1, -1)
    return image


@pytest.mark.parametrize("radius", [40, 80])
def test_a_disc_is_circular_with_its_area(radius):
    faz = B.faz_measurements(torch.from_numpy(disc(radius)), pixel_mm=0.01)
    assert faz["area_mm2"] == pytest.approx(math.pi * (radius * 0.01) ** 2, rel=0.01)
    assert faz["perimeter_mm"] == pytest.approx(2 * math.pi * radius * 0.01, rel=0.01)
    assert faz["circularity"] == pytest.approx(1.0, abs=0.02)
    assert faz["acircularity_index"] == pytest.approx(1.0, abs=0.015)
    assert faz["axis_ratio"] == pytest.approx(1.0, abs=0.01)


def test_an_ellipse_has_its_axis_ratio_and_an_irregular_zone_a_higher_acircularity():
    ellipse = np.zeros((200, 200), np.uint8)
    cv2.ellipse(ellipse, (100, 100), (60, 20), 30, 0, 360, 1, -1)
    faz = B.faz_measurements(ellipse)
    # OpenCV fills the boundary pixels of an ellipse: its semi-axes are half a pixel longer
    assert faz["axis_ratio"] == pytest.approx(3.0, rel=0.03)
    assert faz["area_px2"] == pytest.approx(math.pi * 60.5 * 20.5, rel=0.01)
    star = disc(50)
    for angle in range(0, 360, 45):  # notches in the border
        cv2.circle(star, (int(100 + 50 * math.cos(math.radians(angle))), int(100 + 50 * math.sin(math.radians(angle)))),
                   12, 0, -1)
    assert B.faz_measurements(star)["acircularity_index"] > B.faz_measurements(disc(50))["acircularity_index"] + 0.1
    assert B.faz_measurements(disc(30) | np.roll(disc(10), 90, 1))["area_px2"] == disc(30).sum()  # largest component
    assert math.isnan(B.faz_measurements(np.zeros((20, 20)))["circularity"])


def test_tortuosity_of_a_straight_and_a_semicircular_vessel():
    straight = np.zeros((64, 128), np.uint8)
    straight[30:33, 5:120] = 1  # a 3-pixel-wide vessel
    assert B.tortuosity(straight)["mean"] == pytest.approx(1.0, abs=1e-9)
    arc = np.zeros((200, 200), np.uint8)
    cv2.circle(arc, (100, 100), 60, 1, 1)
    arc[101:] = 0
    result = B.tortuosity(arc, skeletonize=False)
    assert result["branches"] == 1 and result["mean"] == pytest.approx(math.pi / 2, rel=0.01)
    assert math.isnan(B.tortuosity(np.zeros((10, 10)))["mean"])


def test_fractal_dimension_of_a_line_and_a_filled_square():
    line = np.zeros((256, 256), np.uint8)
    line[100, :] = 1
    assert B.fractal_dimension(line) == pytest.approx(1.0, abs=1e-9)
    assert B.fractal_dimension(np.ones((256, 256))) == pytest.approx(2.0, abs=1e-9)
    assert 1.0 < B.fractal_dimension(octa_image(256, seed=1).vessel) < 2.0


def test_densities_diameter_and_branch_points():
    bar = np.zeros((100, 200), np.uint8)
    bar[48:53, 5:195] = 1  # 5 px wide, 190 long: its skeleton (a straight line) stops 4 px short of each end
    fov = np.zeros((100, 200), np.uint8)
    fov[:, :100] = 1
    assert B.vessel_area_density(bar) == pytest.approx(950 / 20000)
    assert B.vessel_area_density(bar, fov) == pytest.approx(475 / 10000)
    assert B.vessel_diameter_index(bar) == pytest.approx(950 / 182)  # area over skeleton length, ~ the width 5
    assert B.vessel_diameter_index(bar, pixel_mm=0.01) == pytest.approx(0.01 * 950 / 182)
    length = B.skeleton_length(np.eye(10, dtype=bool))
    assert length == pytest.approx(9 * math.sqrt(2))
    skeleton_density = B.vessel_skeleton_density(bar, pixel_mm=0.01)  # mm of skeleton per mm² of field
    assert skeleton_density == pytest.approx(B.skeleton_length(B.vessels.skeleton_of(bar != 0)) / 20000 / 0.01)
    cross = np.zeros((41, 41), np.uint8)
    cross[20, 5:36] = 1
    cross[5:36, 20] = 1
    assert B.branch_points(cross, skeletonize=False) == {"branch_points": 1, "endpoints": 4}
    with pytest.raises(ValueError, match="pixel_mm"):
        B.vessel_skeleton_density(bar, pixel_mm=-1)
    with pytest.raises(ValueError, match="mask must be"):
        B.vessel_area_density(np.zeros((2, 3, 4)))


def test_synthetic_octa_labels_give_plausible_clinical_values():
    """The generator's FAZ (radius 0.2-0.33 mm, wavy) and vessels measured in mm on a 3 mm 304² field."""
    for seed in range(3):
        sample = octa_image(304, seed=seed)
        faz = B.faz_measurements(sample.faz, pixel_mm=3 / 304)
        assert faz["area_mm2"] == pytest.approx(sample.faz.sum() * (3 / 304) ** 2)
        assert 0.08 < faz["area_mm2"] < 0.5 and faz["acircularity_index"] > 1.0
        vessels = B.vessel_measurements(sample.vessel, pixel_mm=3 / 304)
        assert vessels["vessel_area_density"] == pytest.approx(sample.vessel.mean())
        assert vessels["branch_points"] > 10 and vessels["endpoints"] > 10
        assert 1.0 <= vessels["tortuosity_mean"] < 2.0 and 1.2 < vessels["fractal_dimension"] < 2.0


def test_layer_thickness_of_a_layered_bscan_and_layers_out_of_order():
    height, width = 60, 40
    classes = np.zeros((height, width), np.int64)
    thickness = [3, 5, 4, 6]  # layers 1..4 from the top
    top = 10 + (np.arange(width) // 8)  # a slanted retina
    for column in range(width):
        row = top[column]
        for k, t in enumerate(thickness, start=1):
            classes[row : row + t, column] = k
            row += t
    result = B.layer_thickness(classes, 5, axial_mm=0.004, names=["background", "NFL", "GCL", "INL", "OPL"])
    assert result["mean"] == pytest.approx({"NFL": 0.012, "GCL": 0.020, "INL": 0.016, "OPL": 0.024})
    assert (result["top"][0] == top).all() and (result["bottom"][3] == top + sum(thickness) - 1).all()
    assert result["out_of_order"] == []
    swapped = classes.copy()
    column = swapped[:, 7]
    column[(column == 1) | (column == 2)] = np.where(column[(column == 1) | (column == 2)] == 1, 2, 1)
    swapped[:, 7] = column
    result = B.layer_thickness(swapped, 5)
    assert result["out_of_order"] == [7]  # reported, and left out of the means
    assert result["mean"]["layer1"] == 3.0
    with pytest.raises(ValueError, match="classes must lie"):
        B.layer_thickness(classes, 3)
