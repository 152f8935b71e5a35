"""Dataset loaders on generated trees of each dataset's exact layout: counts per split, shapes, dtypes,
values equal to what was written, and clear errors for broken trees."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from retina import cli
from retina.data import (
    CAVRIC,
    CHASEDB1,
    DRIVE,
    OCTA500,
    OCTID_LAYERS,
    ROSE1,
    ROSE2,
    STARE,
    ImageFolderDataset,
    OCTLayers,
    PairedAugment,
    SyntheticFundus,
    SyntheticOCTA,
    polygons_to_masks,
    shared_samples,
    split_stems,
)
from retina.data.vgg import mask_from_regions

from . import dataset_trees as trees


def iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def octa3m(tmp_path_factory):
    root = tmp_path_factory.mktemp("octa500")
    return root, trees.octa500(root, "3M")


@pytest.mark.parametrize("split,count,first", [("train", 140, "10301"), ("val", 10, "10441"), ("test", 50, "10451"),
                                               ("all", 200, "10301")])
def test_octa500_3m_splits(octa3m, split, count, first):
    root, written = octa3m
    ds = OCTA500(root, "3M", split, labels=("RV", "FAZ"))
    assert len(ds) == count and ds.ids[0] == first
    sample = ds[0]
    assert sample["image"].shape == (3, 12, 12) and sample["image"].dtype == torch.float32
    assert ds.channel_sources == ("OCTA(FULL)", "OCTA(ILM_OPL)", "OCTA(OPL_BM)")  # checkpoints record them
    assert OCTA500(root, "3M", split, projections=["OCTA(FULL)"]).channel_sources is None
    assert sample["mask"].shape == (2, 12, 12) and sample["mask"].dtype == torch.float32
    rv, faz = written[first]
    assert np.array_equal(sample["mask"][0].numpy(), rv > 0) and np.array_equal(sample["mask"][1].numpy(), faz > 0)
    full = cv2.imread(str(root / "OCTA_3mm/ProjectionMaps/OCTA(FULL)" / f"{first}.bmp"), cv2.IMREAD_GRAYSCALE)
    assert torch.equal(sample["image"][0], torch.from_numpy(full).float() / 255)


def test_octa500_6m_splits_and_release_names(tmp_path):
    trees.octa500(tmp_path, "6M", size=6, gt_names=True)  # GT_LargeVessel / GT_FAZ folder names
    assert [len(OCTA500(tmp_path, "6M", s, labels="RV")) for s in ("train", "val", "test")] == [180, 20, 100]
    assert OCTA500(tmp_path / "OCTA_6mm", "6M", "val")[0]["id"] == "10181"  # root may be the subset folder


def test_octa500_flat_tree_with_both_subsets(tmp_path):
    """S3-OCTA's layout: ProjectionMaps/ and RV/ directly under the root, 3M and 6M ids side by side."""
    for subset in ("3M", "6M"):
        trees.octa500(tmp_path, subset, size=6)
    for subset in ("OCTA_3mm", "OCTA_6mm"):
        for folder in (tmp_path / subset).rglob("*.bmp"):
            target = tmp_path / folder.relative_to(tmp_path / subset)
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(target)
        for d in sorted((tmp_path / subset).rglob("*"), reverse=True):
            d.rmdir()
        (tmp_path / subset).rmdir()
    assert (tmp_path / "ProjectionMaps/OCTA(FULL)/10001.bmp").is_file() and (tmp_path / "GroundTruth/RV").is_dir()
    assert len(OCTA500(tmp_path, "3M", "test")) == 50 and OCTA500(tmp_path, "6M", "test").ids[0] == "10201"


def test_octa500_combined_label(tmp_path):
    written = trees.octa500(tmp_path, "3M", size=10, combined=True)
    sample = OCTA500(tmp_path, "3M", "test", labels=("RV", "FAZ"), combined=True)[3]
    rv, faz = written[sample["id"]]
    assert np.array_equal(sample["mask"][0].numpy(), rv > 0) and np.array_equal(sample["mask"][1].numpy(), faz > 0)


def test_octa500_broken_trees(octa3m, tmp_path):
    root, _ = octa3m
    with pytest.raises(ValueError, match="labels .*Vessels"):
        OCTA500(root, "3M", labels=("Vessels",))
    with pytest.raises(ValueError, match="split"):
        OCTA500(root, "3M", "validation")
    with pytest.raises(FileNotFoundError, match="Capillary"):
        OCTA500(root, "3M", labels=("Capillary",))
    trees.octa500(tmp_path, "3M", size=8)
    (tmp_path / "OCTA_3mm/GroundTruth/RV/10460.bmp").unlink()
    with pytest.raises(FileNotFoundError, match="10460.bmp"):
        OCTA500(tmp_path, "3M", "test")
    OCTA500(tmp_path, "3M", "train")  # other splits are intact
    cv2.imwrite(str(tmp_path / "OCTA_3mm/GroundTruth/RV/10301.bmp"), np.zeros((9, 8), np.uint8))
    with pytest.raises(ValueError, match=r"10301.bmp: label is 8x9 .*expected 8x8"):
        OCTA500(tmp_path, "3M", "train")[0]
    (tmp_path / "OCTA_3mm/ProjectionMaps/OCTA(FULL)/10302.bmp").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="10302.bmp"):
        OCTA500(tmp_path, "3M", "train")[1]


@pytest.fixture(scope="module")
def rose(tmp_path_factory):
    root = tmp_path_factory.mktemp("rose1")
    return root, trees.rose1(root)


@pytest.mark.parametrize("plexus", ["SVC", "DVC", "SVC_DVC"])
def test_rose1(rose, plexus):
    root, written = rose
    train, test = ROSE1(root, plexus, "train"), ROSE1(root, plexus, "test")
    assert (len(train), len(test)) == (30, 9)
    sample = test[2]
    assert sample["id"] == "33" and sample["image"].shape == (1, 16, 16)
    assert float(sample["image"][0, 0, 0]) == pytest.approx(2 / 255)
    assert np.array_equal(sample["mask"][0].numpy(), written[(plexus, "test", "33")] > 0)


def test_rose1_thin_thick_and_errors(rose):
    root, written = rose
    sample = ROSE1(root, "SVC", "train", labels=("thin_gt", "thick_gt"))[0]
    gt = written[("SVC", "train", "01")] > 0
    assert np.array_equal(sample["mask"][0].numpy(), gt) and np.array_equal(sample["mask"][1].numpy(), ~gt)
    with pytest.raises(FileNotFoundError, match="thin_gt"):
        ROSE1(root, "DVC", "train", labels="thin_gt")
    with pytest.raises(ValueError, match="plexus"):
        ROSE1(root, "ICP")


def test_rose2_and_unmatched_files(tmp_path):
    for split in ("train", "test"):
        for i in range(3):
            trees._gray(tmp_path / split / "original" / f"{i}.png", np.full((8, 9), 7, np.uint8))
            trees._gray(tmp_path / split / "gt" / f"{i}.png", trees._mask(8, 9, i))
    assert len(ROSE2(tmp_path, "train")) == 3 and ROSE2(tmp_path, "test")[1]["mask"].shape == (1, 8, 9)
    (tmp_path / "test/gt/2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no label in .*gt for image\(s\) \['2'\]"):
        ROSE2(tmp_path, "test")


@pytest.fixture(scope="module")
def drive_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("drive")
    return root, trees.drive(root)


def test_drive(drive_tree):
    root, written = drive_tree
    train, test = DRIVE(root, "training"), DRIVE(root, "test")
    assert (len(train), len(test)) == (20, 20) and train.ids[0] == "21" and test.ids[-1] == "20"
    sample = train[4]
    rgb, vessel, fov = written[sample["id"]]
    assert sample["image"].shape == (3, 40, 38)
    assert torch.equal(sample["image"], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)  # tif: lossless
    assert np.array_equal(sample["mask"][0].numpy(), vessel > 0)
    assert np.array_equal(sample["fov"][0].numpy(), fov > 0)


def test_drive_errors(tmp_path):
    trees.drive(tmp_path, 32, 32)
    (tmp_path / "test/mask/07_test_mask.gif").unlink()
    with pytest.raises(FileNotFoundError, match=r"FOV masks: no file in .*mask for image id\(s\) \['07'\]"):
        DRIVE(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="2nd_manual"):
        DRIVE(tmp_path, "training", annotator=2)
    with pytest.raises(FileNotFoundError, match="DRIVE validation|folder not found"):
        DRIVE(tmp_path / "nowhere", "test")


def test_stare_gz_and_estimated_fov(tmp_path):
    written = trees.stare(tmp_path)
    train, test, both = STARE(tmp_path, "train"), STARE(tmp_path, "test"), STARE(tmp_path)
    assert (len(train), len(test), len(both)) == (10, 10, 20)
    assert train.ids == trees.STARE_IDS[:10] and test.ids == trees.STARE_IDS[10:]
    sample = test[0]
    rgb, vessel, fov = written[sample["id"]]
    assert torch.equal(sample["image"], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert np.array_equal(sample["mask"][0].numpy(), vessel > 0)
    assert iou(sample["fov"][0].numpy(), fov) > 0.9
    vk = STARE(tmp_path, "test", annotator="vk")[0]
    assert np.array_equal(vk["mask"][0].numpy(), vessel == 0)


def test_chase(tmp_path):
    written = trees.chase(tmp_path)
    train, test = CHASEDB1(tmp_path, "train"), CHASEDB1(tmp_path, "test")
    assert (len(train), len(test)) == (20, 8) and train.ids[:3] == ["01L", "01R", "02L"] and test.ids[0] == "11L"
    sample = test[1]
    rgb, vessel, fov = written[sample["id"]]
    assert np.abs(sample["image"].numpy() - rgb.transpose(2, 0, 1) / 255).mean() < 0.05  # jpg
    assert np.array_equal(sample["mask"][0].numpy(), vessel > 0)
    assert iou(sample["fov"][0].numpy(), fov) > 0.9
    (tmp_path / "Image_03R_1stHO.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"03R"):
        CHASEDB1(tmp_path)


def test_cavric_folds(tmp_path):
    for i in range(13):
        trees._gray(tmp_path / "images" / f"c{i:02d}.bmp", np.full((6, 7), i, np.uint8))
        trees._gray(tmp_path / "labels" / f"c{i:02d}.bmp", trees._mask(6, 7, i))
    tests = [CAVRIC(tmp_path, fold, "test").ids for fold in range(6)]
    assert sorted(sum(tests, [])) == [f"c{i:02d}" for i in range(13)]  # the folds partition the data
    for fold in range(6):
        assert not set(CAVRIC(tmp_path, fold, "train").ids) & set(tests[fold])
    with pytest.raises(ValueError, match="fold"):
        CAVRIC(tmp_path, 6)


def test_image_folder_dataset_16bit_and_fov(tmp_path):
    image = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    cv2.imwrite(str(tmp_path / "x.tif"), image)
    for _name, folder in (("x.tif", "images"), ("x.png", "masks"), ("x.png", "fov")):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "x.tif").rename(tmp_path / "images/x.tif")
    cv2.imwrite(str(tmp_path / "masks/x.png"), (image > 30000).astype(np.uint8))  # 0/1 labels
    cv2.imwrite(str(tmp_path / "fov/x.png"), np.full((20, 30), 255, np.uint8))
    sample = ImageFolderDataset(tmp_path, gray=True, fov="fov")[0]
    assert torch.allclose(sample["image"][0], torch.from_numpy(image / 65535.0).float())
    assert np.array_equal(sample["mask"][0].numpy(), image > 30000) and sample["fov"].min() == 1
    with pytest.raises(FileNotFoundError, match="folder not found"):
        ImageFolderDataset(tmp_path, masks="labels")
    with pytest.raises(ValueError, match="no samples"):
        ImageFolderDataset(tmp_path, ids=[])


def test_split_stems_divides_stably():
    stems = [f"scan{i:03d}" for i in range(50)]
    train, val = split_stems(stems, "train", 0.2), split_stems(stems, "val", 0.2)
    assert len(val) == 10 and sorted(train + val) == stems and not set(train) & set(val)
    assert train == sorted(train)  # in the given order
    # the file order and the machine do not matter; the seed does
    assert set(split_stems(stems[::-1], "val", 0.2)) == set(val)
    assert set(split_stems(stems, "val", 0.2, seed=1)) != set(val)
    # an image added later moves at most one earlier image between the shares
    for added in ("scan050", "new", "a"):
        later = set(split_stems([*stems, added], "val", 0.2)) - {added}
        assert len(later ^ set(val)) <= 1
    assert split_stems(["a", "b"], "val", 0.01) and split_stems(["a", "b"], "train", 0.99)  # one each at least
    for args, message in ((("test", 0.2), "split must be"), (("val", 1.0), "val_fraction"),
                          (("val", 0.0), "val_fraction")):
        with pytest.raises(ValueError, match=message):
            split_stems(stems, *args)
    with pytest.raises(ValueError, match="1 sample"):
        split_stems(["a"], "train", 0.2)
    # cross-validation: k folds of equal size whose validation shares cover every stem once
    shares = [split_stems(stems, "val", folds=5, fold=k) for k in range(5)]
    assert sorted(sum(shares, [])) == stems and {len(share) for share in shares} == {10}
    assert split_stems(stems, "train", folds=5, fold=2) == [s for s in stems if s not in shares[2]]
    for kwargs, message in (({"folds": 1}, "folds must be in"), ({"folds": 51}, "folds must be in"),
                            ({"folds": 5, "fold": 5}, "fold must be in")):
        with pytest.raises(ValueError, match=message):
            split_stems(stems, "val", **kwargs)


def test_one_folder_divided_and_samples_found_in_two_datasets(tmp_path):
    assert cli.main(["synthesize", str(tmp_path / "a"), "--count", "10", "--size", "48"]) == 0
    folder = {"masks": "vessel", "gray": True}
    train = ImageFolderDataset(tmp_path / "a", split="train", val_fraction=0.3, **folder)
    val = ImageFolderDataset(tmp_path / "a", split="val", val_fraction=0.3, **folder)
    assert len(train) == 7 and len(val) == 3 and sorted(train.ids + val.ids) == ImageFolderDataset(
        tmp_path / "a", **folder).ids
    assert shared_samples(train, val) == []
    everything = ImageFolderDataset(tmp_path / "a", **folder)
    assert shared_samples(everything, val) == [(i, i) for i in val.ids]
    assert OCTLayers.__init__.__kwdefaults__["split"] == "all"
    fold = ImageFolderDataset(tmp_path / "a", split="val", folds=5, fold=1, **folder)
    assert len(fold) == 2 and len(ImageFolderDataset(tmp_path / "a", split="train", folds=5, fold=1, **folder)) == 8
    # a copy under another name in another folder is the same sample (compared by content)
    copy = tmp_path / "b"
    for sub in ("images", "vessel"):
        (copy / sub).mkdir(parents=True)
        source = tmp_path / "a" / sub / f"{val.ids[0]}.png"
        (copy / sub / "renamed.png").write_bytes(source.read_bytes())
    other = train.ids[0]
    (copy / "images" / "other.png").write_bytes(cv2.imencode(".png", np.zeros((48, 48), np.uint8))[1].tobytes())
    (copy / "vessel" / "other.png").write_bytes((tmp_path / "a" / "vessel" / f"{other}.png").read_bytes())
    assert shared_samples(everything, ImageFolderDataset(copy, **folder)) == [("renamed", val.ids[0])]
    # synthetic data: the same draw (generator, size, seed) is the same sample, whatever the channels
    octa = SyntheticOCTA(4, 48, seed=0)
    assert shared_samples(octa, SyntheticOCTA(4, 48, channels=1, seed=2)) == [("octa-2", "octa-2"), ("octa-3", "octa-3")]
    assert shared_samples(octa, SyntheticOCTA(4, 48, seed=4)) == []
    assert shared_samples(octa, SyntheticOCTA(4, 64, seed=0)) == []
    assert shared_samples(SyntheticFundus(2, 40, 40), SyntheticFundus(2, 40, 40, seed=1)) == [("fundus-1", "fundus-1")]
    assert shared_samples(octa, val) == [] and shared_samples([1, 2], octa) == []  # no sources: nothing to say


def _via_export(names, regions):
    return {f"{n}123": {"filename": n, "size": 123, "regions": r, "file_attributes": {}} for n, r in zip(names, regions)}


def _polygon(xs, ys, layer):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {"layer": layer}}


def test_vgg_polygons_to_class_masks(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images/scan1.jpeg"), np.zeros((30, 40), np.uint8))
    regions = [_polygon([0, 39, 39, 0], [5, 5, 14, 14], "NFL"), _polygon([0, 39, 39, 0], [10, 10, 20, 20], "INL")]
    (tmp_path / "ann.json").write_text(json.dumps({"_via_img_metadata": _via_export(["scan1.jpeg"], [regions])}))
    assert cli.main(["convert-vgg", str(tmp_path / "ann.json"), str(tmp_path / "images"), str(tmp_path / "masks"),
                     "--classes", ",".join(OCTID_LAYERS)]) == 0
    mask = cv2.imread(str(tmp_path / "masks/scan1.png"), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((30, 40), np.uint8)
    expected[5:10], expected[10:21] = OCTID_LAYERS.index("NFL"), OCTID_LAYERS.index("INL")  # later regions win
    assert np.array_equal(mask, expected)
    sample = OCTLayers(tmp_path)[0]
    assert sample["mask"].dtype == torch.int64 and torch.equal(sample["mask"], torch.from_numpy(expected).long())
    # VIA 1 stores regions as a dict keyed by index
    assert np.array_equal(mask_from_regions({"1": regions[1], "0": regions[0]}, (30, 40), OCTID_LAYERS), expected)


def test_vgg_errors(tmp_path):
    with pytest.raises(ValueError, match="region 0: class 'ILM' is not one of"):
        mask_from_regions([_polygon([0, 5, 5], [0, 0, 5], "ILM")], (8, 8), OCTID_LAYERS)
    with pytest.raises(ValueError, match="shape 'rect' is not supported"):
        mask_from_regions([{"shape_attributes": {"name": "rect"}, "region_attributes": {"layer": "NFL"}}], (8, 8),
                          OCTID_LAYERS)
    (tmp_path / "a.json").write_text(json.dumps(_via_export(["gone.png"], [[]])))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        polygons_to_masks(tmp_path / "a.json", tmp_path, tmp_path / "out", OCTID_LAYERS)
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a VGG Image Annotator export"):
        polygons_to_masks(tmp_path / "b.json", tmp_path, tmp_path / "out", OCTID_LAYERS)
    (tmp_path / "masks").mkdir()
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images/s.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(tmp_path / "masks/s.png"), np.full((4, 4), 12, np.uint8))
    with pytest.raises(ValueError, match=r"s.png: class 12 in the mask, but only 9 classes"):
        OCTLayers(tmp_path)[0]


def _collect(loader):
    return {b: batch for batch in loader for b in [tuple(batch["id"])]}


def test_loader_workers_are_deterministic(drive_tree):
    root, _ = drive_tree
    augment = PairedAugment(rotate=20, elastic_alpha=2, noise=0.05, contrast=0.1, seed=3)
    dataset = DRIVE(root, transform=augment)
    runs = []
    for workers in (0, 2):
        batches = list(DataLoader(dataset, batch_size=4, num_workers=workers))
        runs.append(torch.cat([b["image"] for b in batches]))
        assert torch.cat([b["mask"] for b in batches]).unique().tolist() == [0.0, 1.0]
    assert torch.equal(runs[0], runs[1])
    augment.set_epoch(1)
    assert not torch.equal(dataset[0]["image"], runs[0][0])


def test_synthetic_octa_dataset():
    ds = SyntheticOCTA(5, 64, labels=("vessel", "faz"), channels=1, seed=7)
    sample = ds[4]
    assert sample["image"].shape == (1, 64, 64) and sample["mask"].shape == (2, 64, 64) and sample["id"] == "octa-11"
    assert torch.equal(ds[-1]["mask"], sample["mask"])
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(ValueError, match="labels"):
        SyntheticOCTA(2, labels=("optic_disc",))


def test_synthesize_command_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert cli.main(["synthesize", str(out), "--kind", "octa", "--count", "3", "--size", "64", "--seed", "5"]) == 0
    assert "3/3 images" in capsys.readouterr().out
    dataset = ImageFolderDataset(out, masks="faz", gray=True)
    assert dataset.ids == ["octa-00005", "octa-00006", "octa-00007"]
    from retina.data import octa_image

    drawn = octa_image(64, 6)
    assert np.array_equal(dataset[1]["mask"][0].numpy(), drawn.faz)
    assert torch.equal(dataset[1]["image"][0], torch.from_numpy(np.rint(drawn.image[0] * 255) / 255).float())
    # a rerun skips complete samples and redoes an interrupted one
    (out / "images" / "octa-00006.png").unlink()
    before = (out / "images" / "octa-00005.png").stat().st_mtime_ns
    assert cli.main(["synthesize", str(out), "--count", "3", "--size", "64", "--seed", "5"]) == 0
    assert (out / "images" / "octa-00006.png").is_file()
    assert (out / "images" / "octa-00005.png").stat().st_mtime_ns == before
    # another size into the same folder would mix two datasets: refused, naming the sizes
    assert cli.main(["synthesize", str(out), "--count", "4", "--size", "96", "--seed", "5"]) == 1
    assert "octa-00005.png is 64x64, not 96x96" in capsys.readouterr().err
    assert cli.main(["synthesize", str(tmp_path / "f"), "--kind", "fundus", "--count", "1", "--size", "64"]) == 0
    assert len(ImageFolderDataset(tmp_path / "f", masks="vessel", fov="fov")) == 1
    assert cli.main(["synthesize", str(out), "--count", "0"]) == 2


def test_binary_labels_in_any_encoding_and_jpeg_noise(tmp_path, monkeypatch):
    from retina.data.datasets import base

    truth = np.zeros((40, 48), bool)
    truth[10:30, 20:26] = True
    noisy = np.where(truth, 250, 3).astype(np.uint8)
    noisy[0, :5] = [0, 1, 2, 4, 9]  # compression noise near black ...
    noisy[12, 21:24] = [240, 255, 247]  # ... and near white
    encodings = {"two": np.where(truth, 1, 0), "other_pair": np.where(truth, 200, 100), "noisy": noisy,
                 "empty": np.zeros_like(noisy), "full": np.full_like(noisy, 255)}
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for name, label in encodings.items():
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((40, 48), 90, np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), label.astype(np.uint8))
    dataset = ImageFolderDataset(tmp_path, gray=True)

    def mask(name):
        return dataset[dataset.ids.index(name)]["mask"][0].numpy().astype(bool)

    for name in ("two", "other_pair"):
        assert np.array_equal(mask(name), truth)  # the larger of two values, whatever they are
    assert not mask("empty").any() and mask("full").all()
    # a JPEG's noise is not foreground (nonzero would have made the whole image a vessel); said once
    monkeypatch.setattr(base, "_reported_multivalued", [])
    with pytest.warns(UserWarning, match="noisy.png: a binary label with 10 distinct values .* above 127.5"):
        assert np.array_equal(mask("noisy"), truth)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask("noisy")
