"""The package's structure: what serves each op comes from the ops' registrations, layers live in
`retina.nn` (old paths still import), one rule lists a folder's images, the CLI's synthetic labels are
the datasets'."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import retina
import retina_kernels
from retina import cli, image_files
from retina.data import ImageFolderDataset, SyntheticFundus, SyntheticOCTA, synthetic_label_folders
from retina.metrics import evaluate


def test_import_retina_exposes_its_subpackages():
    for name in ("data", "image_files", "losses", "metrics", "models", "nn"):
        assert getattr(retina, name).__name__ == f"retina.{name}"


def test_a_registered_backend_is_listed_without_editing_backends(monkeypatch):
    from retina_kernels import registry

    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    registry.register_backend("new_op", "cpu", "C++")  # agrees with the device's line: folded into it
    assert retina_kernels.backends()["cpu"] == "C++"
    registry.register_backend("new_op", "cpu", "reference")  # disagrees: the device line names each op
    assert "new_op: reference" in retina_kernels.backends()["cpu"]
    registry.register_backend("new_op", "cuda", "Triton", own_line=True)
    expected = "Triton" if torch.cuda.is_available() else registry.NO_CUDA
    assert retina_kernels.backends()["cuda new_op"] == expected


def imported_modules(module) -> set[str]:
    """The retina_kernels modules that `module`'s source imports (relative imports resolved)."""
    tree = ast.parse(Path(module.__file__).read_text())
    package = module.__name__.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names.add(f"{package}.{base}".rstrip(".") if node.level else base)
            names.update(f"{package}.{base}.{alias.name}".replace("..", ".") for alias in node.names if node.level)
    return names


def test_the_loader_and_the_registry_import_no_op_and_backends_sits_above_them():
    from retina_kernels import _extension, info, registry

    for module in (_extension, registry):  # below the ops: no circle through them
        assert not any(".ops" in name or name.endswith(".info") for name in imported_modules(module)), module
    assert "retina_kernels.ops" in imported_modules(info)


def test_layers_live_in_nn_and_old_paths_still_import():
    from retina import nn
    from retina.models import aggregation, blocks, concat_conv

    assert blocks.ConvNormAct is nn.ConvNormAct and blocks.SnakeBlock is nn.SnakeBlock
    assert concat_conv.conv2d_of_concatenation is nn.conv2d_of_concatenation
    assert aggregation.attend is nn.attend and aggregation.MiTBlock is nn.MiTBlock
    assert nn.ConvNormAct.__module__ == "retina.nn.conv"


def test_segmentation_heads():
    heads = retina.nn.SegmentationHeads(8, {"vessel": 1, "faz": 2})
    out = heads(torch.randn(2, 8, 5, 7))
    assert list(out) == ["vessel", "faz"] and out["vessel"].shape == (2, 1, 5, 7) and out["faz"].shape == (2, 2, 5, 7)
    assert set(heads.state_dict()) == {"vessel.weight", "vessel.bias", "faz.weight", "faz.bias"}
    with pytest.raises(ValueError, match="outputs must name"):
        retina.nn.SegmentationHeads(8, {})
    with pytest.raises(ValueError, match="num_classes"):
        retina.nn.SegmentationHead(8, 0)


def test_retina_io_is_the_image_files_module():
    from retina import io

    assert io is image_files


def test_images_by_stem_one_rule(tmp_path):
    for name in ("b.png", "a.tif", "c.ppm.gz", "notes.txt", ".hidden.png", "Thumbs.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert list(image_files.images_by_stem(tmp_path, "x")) == ["a", "b", "c"]
    (tmp_path / "a.bmp").write_bytes(b"")
    with pytest.raises(ValueError, match=r"two files for 'a' .*a.bmp and a.tif"):
        image_files.images_by_stem(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        image_files.images_by_stem(tmp_path / "missing", "x")


def test_evaluate_and_image_folder_dataset_read_one_folder_alike(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("images", "masks", "pred"):
        (tmp_path / folder).mkdir()
    for stem in ("s1", "s2"):
        label = (rng.random((12, 10)) < 0.4).astype(np.uint8) * 255
        image_files.write_image(tmp_path / "images" / f"{stem}.png", label)
        image_files.write_image(tmp_path / "masks" / f"{stem}.png", label)
        image_files.write_image(tmp_path / "pred" / f"{stem}.png", label)
    (tmp_path / "pred" / "readme.txt").write_text("not an image")  # both ignore it
    dataset = ImageFolderDataset(tmp_path, gray=True)
    summary = evaluate(tmp_path / "pred", tmp_path / "masks", protocol="retina", out_dir=tmp_path / "out")
    assert dataset.ids == ["s1", "s2"]
    assert summary["dice"] == 1.0
    assert (tmp_path / "out" / "per_image.csv").read_text().splitlines()[1].startswith("s1,")
    image_files.write_image(tmp_path / "masks" / "s1.bmp", np.zeros((12, 10), np.uint8))
    for read in (lambda: ImageFolderDataset(tmp_path, gray=True),
                 lambda: evaluate(tmp_path / "pred", tmp_path / "masks")):
        with pytest.raises(ValueError, match="two files for 's1'"):
            read()


def test_synthesize_writes_the_datasets_labels(tmp_path):
    assert synthetic_label_folders("octa") == SyntheticOCTA.LABELS
    assert synthetic_label_folders("fundus") == (*SyntheticFundus.LABELS, "fov")
    assert cli.main(["synthesize", str(tmp_path / "f"), "--kind", "fundus", "--count", "1", "--size", "48"]) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted(["images", *synthetic_label_folders("fundus")])
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic_label_folders("oct")
