"""retina.data: synthetic generators (deterministic, labels equal to what was drawn), preprocessing
against OpenCV / NumPy, paired augmentation (labels follow the image exactly), image I/O errors."""

import gzip

import cv2
import numpy as np
import pytest
import torch

from retina import io
from retina.data import (
    PairedAugment,
    clahe,
    equalize_histogram,
    estimate_fov,
    fundus_image,
    green_channel,
    normalize,
    octa_image,
    vessel_mask,
)
from retina.data.augment import warp
from retina.data.synthetic.trees import TreeStyle, draw, grow

from .conftest import requires_cuda

# -- synthetic ---------------------------------------------------------------------------------------

def _fields(sample):
    return {k: v for k, v in vars(sample).items()}


@pytest.mark.parametrize("make", [lambda s: octa_image(96, s), lambda s: fundus_image(80, 72, s)])
def test_generators_are_deterministic_per_seed(make):
    a, b, c = _fields(make(3)), _fields(make(3)), _fields(make(4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"]) and not np.array_equal(a["vessel"], c["vessel"])


def test_octa_labels_and_intensities():
    s = octa_image(304, seed=1)
    assert s.image.shape == (3, 304, 304) and s.image.dtype == np.float32
    assert 0 <= s.image.min() and s.image.max() <= 1
    assert np.array_equal(s.vessel, s.artery | s.vein) and s.artery.any() and s.vein.any()
    assert not (s.faz & s.vessel).any() and not (s.faz & s.capillary).any() and not (s.capillary & s.vessel).any()
    faz_area = s.faz.sum() / (304 / 3.0) ** 2  # mm²: a human FAZ is about 0.1-0.5 mm²
    assert 0.08 < faz_area < 0.6
    superficial = s.image[1]
    background = ~(s.vessel | s.capillary | s.faz)
    assert superficial[s.vessel].mean() > superficial[s.capillary].mean() > superficial[background].mean()
    assert superficial[s.faz].mean() < superficial[s.capillary].mean()
    # projection artefact: the deep slab shows the large vessels, fainter
    deep = s.image[2]
    assert deep[s.vessel].mean() > deep[s.faz].mean()


def test_fundus_labels_and_intensities():
    s = fundus_image(584, 565, seed=2)
    assert s.image.shape == (3, 584, 565) and s.image.dtype == np.float32
    assert np.array_equal(s.vessel, s.artery | s.vein)
    assert not (s.vessel & ~s.fov).any() and not s.image[:, ~s.fov].any()  # black outside the FOV
    green = s.image[1]
    ring = cv2.dilate(s.vessel.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~s.vessel & s.fov
    ring &= ~s.optic_disc
    assert green[s.vessel & ~s.optic_disc].mean() < 0.85 * green[ring].mean()  # vessels darker than their surround
    assert green[s.vein].mean() < green[s.artery & ~s.vein].mean()  # veins darker than arteries
    assert green[s.optic_disc].mean() > green[s.fov & ~s.optic_disc].mean()  # the disc is bright
    assert abs(s.fov.sum() / (np.pi * (0.48 * 565) ** 2) - 1) < 0.02


def test_drawn_masks_match_the_segments():
    """The rasterised tree equals an independent rendering: pixels within radius of a segment."""
    rng = np.random.default_rng(5)
    extent = np.array([64.0, 80.0])
    segs = grow(rng, np.array([[0.0, 40.0]]), np.array([[1.0, 0.1]]), np.array([3.0]), extent, TreeStyle(), 1.0)
    assert len(segs) > 10
    drawn = draw(np.zeros((64, 80), np.uint8), segs).astype(bool)
    yy, xx = np.mgrid[:64, :80]
    p = np.stack([yy, xx], -1).reshape(-1, 1, 2).astype(float)
    d = segs.end - segs.start
    t = np.clip(((p - segs.start) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0, 1)
    dist = np.linalg.norm(p - (segs.start + t[..., None] * d), axis=-1)
    half_width = np.maximum(1, np.rint(2 * segs.radius)) / 2
    inside = (dist <= half_width + 1.1).any(1).reshape(64, 80)  # cv2 thick lines overshoot by up to ~1 px
    core = (dist <= np.maximum(half_width - 0.75, 0)).any(1).reshape(64, 80)
    assert not (drawn & ~inside).any() and not (core & ~drawn).any()


def test_generator_argument_errors():
    with pytest.raises(ValueError, match="size"):
        octa_image(8)
    with pytest.raises(ValueError, match="field_mm"):
        octa_image(64, field_mm=0.1)
    with pytest.raises(ValueError, match="height and width"):
        fundus_image(16, 100)
    with pytest.raises(ValueError, match="height and width"):
        vessel_mask(0, 5)


# -- preprocessing ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fundus():
    s = fundus_image(200, 190, seed=9)
    return np.rint(s.image.transpose(1, 2, 0) * 255).astype(np.uint8), s.fov


def test_green_channel_both_layouts(fundus):
    rgb, _ = fundus
    assert np.array_equal(green_channel(rgb), rgb[..., 1])
    assert np.array_equal(green_channel(np.ascontiguousarray(rgb.transpose(2, 0, 1))), rgb[..., 1])
    assert green_channel(rgb[..., 0]) is not None
    with pytest.raises(ValueError, match="shape"):
        green_channel(np.zeros((5, 6, 2)))


def test_clahe_and_equalization_match_opencv(fundus):
    rgb, fov = fundus
    green = rgb[..., 1]
    expected = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(green)
    assert np.array_equal(clahe(rgb, clip_limit=3.0, tile_grid=(4, 4)), expected)
    assert np.array_equal(clahe(green.astype(np.float32) / 255, 3.0, (4, 4)), expected)  # [0, 1] floats
    assert np.array_equal(equalize_histogram(green), cv2.equalizeHist(green))
    inside = equalize_histogram(green, mask=fov)[fov]
    assert inside.max() == 255 and abs(np.median(inside) - 127) < 20  # spread over the range inside the FOV
    assert not equalize_histogram(green, mask=fov)[~fov].any()
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        clahe(np.full((8, 8), 2.0))
    with pytest.raises(ValueError, match="clip_limit"):
        clahe(green, clip_limit=0)


def test_normalize_inside_mask(fundus):
    rgb, fov = fundus
    z = normalize(rgb[..., 1], mask=fov)
    assert abs(z[fov].mean()) < 1e-4 and abs(z[fov].std() - 1) < 1e-4
    chw = normalize(rgb.transpose(2, 0, 1), mask=fov, mode="minmax")
    assert chw.shape == (3, 200, 190) and chw[:, fov].min() == 0 and chw[:, fov].max() == 1
    assert not normalize(np.ones((5, 5))).any()
    with pytest.raises(ValueError, match="NaN"):
        normalize(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match=r"mask has shape \(4, 4\), expected \(200, 190\)"):
        normalize(rgb[..., 1], mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="mode"):
        normalize(rgb, mode="l2")


def test_estimate_fov_recovers_the_drawn_disc(fundus):
    rgb, fov = fundus
    estimate = estimate_fov(rgb)
    assert (estimate & fov).sum() / (estimate | fov).sum() > 0.95
    assert not (estimate & ~fov).any()  # eroded: never outside the true FOV
    assert np.array_equal(estimate_fov(rgb.transpose(2, 0, 1)), estimate)
    assert not estimate_fov(np.zeros((20, 20, 3), np.uint8)).any()


# -- augmentation --------------------------------------------------------------------------------------

def _pair(n=3, h=40, w=52, seed=0):
    masks = torch.from_numpy(np.stack([vessel_mask(h, w, seed=seed + i) for i in range(n)])).float()[:, None]
    return {"image": masks.repeat(1, 2, 1, 1).clone(), "mask": masks.clone(), "fov": torch.ones(n, 1, h, w)}


def test_flips_are_exact_and_paired():
    batch = _pair()
    out = PairedAugment(flip=True).batch(batch, torch.Generator().manual_seed(1))
    assert torch.equal(out["image"][:, :1], out["mask"]) and torch.equal(out["image"][:, 1:], out["mask"])
    flipped = [not torch.equal(o, m) for o, m in zip(out["mask"], batch["mask"])]
    assert any(flipped)
    for o, m in zip(out["mask"], batch["mask"]):
        assert any(torch.equal(o, torch.flip(m, d)) for d in ([], [-1], [-2], [-2, -1]))


@pytest.mark.parametrize("degrees,k", [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_rotation_by_right_angles_matches_rot90(degrees, k):
    batch = _pair(n=2, h=48, w=48)
    image, labels = warp(batch["image"], {"mask": batch["mask"]}, torch.zeros(2, 2, dtype=torch.bool),
                         torch.full((2,), degrees), torch.ones(2))
    expected = torch.rot90(batch["mask"], k, dims=(-2, -1))
    assert torch.equal(labels["mask"], expected)
    assert torch.allclose(image[:, :1], expected, atol=1e-5)


@pytest.mark.parametrize("elastic", [0.0, 4.0])
def test_warps_move_labels_with_the_image(elastic):
    batch = _pair(n=4, h=64, w=72)
    class_map = (batch["mask"][:, 0] * 2).long()  # a [N, H, W] class map rides along
    batch["classes"] = class_map
    augment = PairedAugment(rotate=40, scale=0.2, elastic_alpha=elastic, label_keys=("mask", "fov", "classes"))
    out = augment.batch(batch, torch.Generator().manual_seed(2))
    assert out["mask"].unique().tolist() == [0.0, 1.0] and out["classes"].dtype == torch.int64
    assert set(out["classes"].unique().tolist()) <= {0, 2}
    agree = ((out["image"][:, :1] > 0.5) == (out["mask"] > 0.5)).float().mean()
    assert agree > 0.97  # bilinear image and nearest labels sample the same warp
    assert torch.equal(out["classes"] == 2, out["mask"][:, 0] > 0.5)
    assert (out["fov"] == 0).any()  # rotated-in corners are outside the field of view


def test_intensity_changes_touch_the_image_only():
    batch = _pair(n=2)
    batch["image"] = batch["image"] * 0.5 + 0.25
    out = PairedAugment(flip=False, brightness=0.1, contrast=0.3, gamma=0.3, noise=0.05).batch(
        batch, torch.Generator().manual_seed(0))
    assert torch.equal(out["mask"], batch["mask"]) and not torch.equal(out["image"], batch["image"])


def test_per_sample_seeding():
    sample = {k: v[0] for k, v in _pair(n=1).items()} | {"index": 5, "id": "x"}
    augment = PairedAugment(rotate=30, elastic_alpha=3, noise=0.1, seed=11)
    a, b = augment(dict(sample)), augment(dict(sample))
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == sample["image"].shape and a["id"] == "x"
    assert not torch.equal(augment(dict(sample, index=6))["image"], a["image"])
    augment.set_epoch(1)
    assert not torch.equal(augment(dict(sample))["image"], a["image"])
    with pytest.raises(KeyError, match="index"):
        augment({"image": sample["image"]})


def test_augment_argument_errors():
    with pytest.raises(ValueError, match="rotate"):
        PairedAugment(rotate=-1)
    with pytest.raises(ValueError, match="contrast"):
        PairedAugment(contrast=1.5)
    batch = _pair(n=2)
    with pytest.raises(ValueError, match=r"batch\['mask'\] has shape"):
        PairedAugment().batch({"image": batch["image"], "mask": batch["mask"][:1]})
    with pytest.raises(TypeError, match="floating"):
        PairedAugment().batch({"image": batch["image"].long()})
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        PairedAugment().batch({"image": batch["image"][0]})


@requires_cuda
@pytest.mark.cuda
def test_augment_on_cuda_matches_cpu_geometry():
    batch = _pair(n=3)
    augment = PairedAugment(rotate=45, elastic_alpha=3)
    cpu = augment.batch(batch, torch.Generator().manual_seed(4))
    gpu = augment.batch({k: v.cuda() for k, v in batch.items()}, torch.Generator().manual_seed(4))
    assert (gpu["mask"].cpu() != cpu["mask"]).float().mean() < 1e-3
    assert torch.allclose(gpu["image"].cpu(), cpu["image"], atol=1e-4)


# -- image I/O ---------------------------------------------------------------------------------------

def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.png"):
        io.read_image(tmp_path / "bad.png")
    (tmp_path / "bad.ppm.gz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.ppm.gz: not a valid gzip"):
        io.read_image(tmp_path / "bad.ppm.gz")
    ok, data = cv2.imencode(".pgm", np.arange(12, dtype=np.uint8).reshape(3, 4))
    (tmp_path / "x.pgm.gz").write_bytes(gzip.compress(data.tobytes()))
    assert np.array_equal(io.read_image(tmp_path / "x.pgm.gz"), np.arange(12).reshape(3, 4))


def test_gif_falls_back_to_pillow_without_the_opencv_codec(tmp_path, monkeypatch):
    from PIL import Image

    labels = (np.arange(35).reshape(5, 7) % 2 * 255).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "m.gif")
    monkeypatch.setattr(io.cv2, "imread", lambda *a, **k: None)  # an OpenCV built without gif
    assert np.array_equal(io.read_image(tmp_path / "m.gif")[..., 0], labels)
    assert np.array_equal(io.read_image(tmp_path / "m.gif", grayscale=True), labels)
    (tmp_path / "bad.gif").write_bytes(b"GIF89a junk")
    with pytest.raises(ValueError, match="bad.gif"):
        io.read_image(tmp_path / "bad.gif")


def test_preprocess_transform_prepares_images_and_resizes_labels_to_match():
    from retina.data import Preprocess, equalize_histogram

    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((3, 30, 20)).astype(np.float32))
    fov = torch.zeros(1, 30, 20)
    fov[:, 5:25, 3:17] = 1
    mask = (torch.rand(2, 30, 20) > 0.5).float()
    classes = torch.randint(0, 9, (30, 20))
    out = Preprocess(gray="green", equalize=True)({"image": image, "fov": fov, "mask": mask, "id": "a"})
    expected = equalize_histogram(image[1].numpy(), fov[0].numpy() > 0.5).astype(np.float32) / 255
    np.testing.assert_array_equal(out["image"].numpy(), expected[None])  # equalized inside the FOV
    assert out["id"] == "a" and out["mask"] is mask
    resized = Preprocess(resize=(15, 10))({"image": image, "mask": mask, "fov": fov})
    assert resized["image"].shape == (3, 15, 10) and resized["mask"].shape == (2, 15, 10)
    assert set(resized["mask"].unique().tolist()) <= {0.0, 1.0}  # nearest, still binary
    np.testing.assert_array_equal(resized["mask"].numpy(), mask.numpy()[:, 1::2, 1::2])  # pixel centres
    class_map = Preprocess(resize=60)({"image": image, "mask": classes})["mask"]
    assert class_map.dtype == torch.int64 and class_map.shape == (60, 60)
    assert set(class_map.unique().tolist()) <= set(classes.unique().tolist())
    gray = Preprocess(gray="luminance").image(image)
    assert gray.shape == (1, 30, 20) and gray.dtype == torch.float32
    recorded = Preprocess(clahe=2.0, resize=(8, 9)).to_dict()  # what a checkpoint stores
    assert recorded == {"gray": None, "equalize": False, "clahe": 2.0, "resize": [8, 9]}
    assert Preprocess(**recorded).size == (8, 9)
    for kwargs, message in (({"gray": "red"}, "gray must be"), ({"equalize": True, "clahe": 2.0}, "not both"),
                            ({"clahe": 0}, "clahe"), ({"resize": (0, 4)}, "resize")):
        with pytest.raises(ValueError, match=message):
            Preprocess(**kwargs)
