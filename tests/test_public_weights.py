"""Loading the published weights: IterNet's released Keras .h5 (layers matched by order and shape,
kernels permuted) on a file written with the released layout (tests/layouts/iternet_layers.json:
names, order and shapes of the real file; seeded values, no download)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retina.models import S3OCTA, IterNet

LAYOUTS = Path(__file__).parent / "layouts"


def write_released_iternet(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A Keras 2.3 full-model .h5 of IterNet's released layout: model_weights/<layer>/<weight name>, the
    groups' layer_names / weight_names attributes as fixed-length byte strings, optimizer_weights too."""
    import h5py
    layers = json.loads((LAYOUTS / "iternet_layers.json").read_text())
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.3.1"
        f.attrs["backend"] = b"tensorflow"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([layer["name"].encode() for layer in layers], dtype="S")
        for layer in layers:
            g = group.create_group(layer["name"])
            g.attrs["weight_names"] = np.array([name.encode() for name, _ in layer["weights"]], dtype="S")
            for name, shape in layer["weights"]:
                value = rng.standard_normal(shape).astype(np.float32) * 0.05
                g.create_dataset(name, data=value)
                written[f"{layer['name']}/{name}"] = value
        f.create_group("optimizer_weights")
    return written


def test_iternet_loads_the_released_keras_layout(tmp_path):
    written = write_released_iternet(tmp_path / "iternet.h5")
    model = IterNet.from_keras(tmp_path / "iternet.h5")
    assert model.config["width"] == 32 and model.config["iterations"] == 3 and model.config["in_channels"] == 3
    assert not model.training
    first = written["model2_conv2d_1/conv2d_1/kernel:0"]  # [3, 3, 3, 32] channels-last
    torch.testing.assert_close(model.encoder[0][0].weight, torch.from_numpy(first).permute(3, 2, 0, 1))
    transposed = written["model2_conv2d_transpose_35/conv2d_transpose_1/kernel:0"]  # [2, 2, out 256, in 512]
    assert model.decoder[0].up.weight.shape == (512, 256, 2, 2)
    torch.testing.assert_close(model.decoder[0].up.weight, torch.from_numpy(transposed).permute(3, 2, 0, 1))
    # the fusions sit where the file puts them: the first inside the mini-UNet's layers, the others after
    torch.testing.assert_close(model.fusions[0].bias, torch.from_numpy(written["model2_conv2d_74/conv2d_29/bias:0"]))
    torch.testing.assert_close(model.fusions[2].bias, torch.from_numpy(written["model2_conv2d_110/conv2d_31/bias:0"]))
    torch.testing.assert_close(model.heads[-1].bias, torch.from_numpy(written["model2_final_113/final_out/bias:0"]))
    torch.testing.assert_close(model.heads[0].bias, torch.from_numpy(written["out11/out11/bias:0"]))
    # every weight of the file is used once
    loaded = sum(p.numel() for p in model.parameters())
    assert loaded == sum(v.size for v in written.values()) == 8_244_356
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 3, 48, 40))).all()


def test_iternet_from_keras_refuses_other_files(tmp_path):
    import h5py
    write_released_iternet(tmp_path / "iternet.h5")
    with h5py.File(tmp_path / "iternet.h5", "r+") as f:  # one layer's kernel of the wrong shape
        group = f["model_weights/model2_conv2d_8"]
        del group["conv2d_3/kernel:0"]
        group.create_dataset("conv2d_3/kernel:0", data=np.zeros((3, 3, 32, 48), np.float32))
    with pytest.raises(ValueError, match="conv2d_3/kernel:0 .* does not fit"):
        IterNet.from_keras(tmp_path / "iternet.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("model_weights").attrs["layer_names"] = np.array([], dtype="S")
    with pytest.raises(ValueError, match="not an IterNet weights file"):
        IterNet.from_keras(tmp_path / "other.h5")


def public_s3octa_state(seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """A state dict of the published m.pth layout (tests/layouts/s3octa_m_keys.json), seeded values:
    normalisation scales near 1, everything else small."""
    keys = json.loads((LAYOUTS / "s3octa_m_keys.json").read_text())
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        value = torch.randn(shape, generator=g, dtype=dtype)
        scale_like = key.endswith(("gn.weight", "gn_offset.weight", "norm.g"))
        state[key] = 1 + 0.1 * value if scale_like else 0.1 * value
    return state


def test_s3octa_from_public_equals_the_public_forward():
    from tests.public_s3octa import public_s3octa_forward

    state = public_s3octa_state()
    model = S3OCTA.from_public(state).double()
    assert model.config["width"] == 72 and model.config["depth"] == 3 and model.config["widths"] == "published"
    # the two MiT blocks the public forward never calls, skipped by name
    assert {k.split(".")[1] for k in model.skipped_public_keys} == {"0", "2"}
    assert len(model.skipped_public_keys) == 34
    used = sum(v.numel() for k, v in state.items() if k not in model.skipped_public_keys)
    unused_snake_convs = sum(v.numel() for k, v in state.items() if "dsconv_x.dsc_conv_x" in k or "dsconv_y.dsc_conv_y" in k)
    assert sum(p.numel() for p in model.parameters()) == used - unused_snake_convs == 10_019_785
    x = torch.rand(2, 3, 32, 44, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = torch.sigmoid(model(x))
        public = public_s3octa_forward(state, x)
    torch.testing.assert_close(ours, public, rtol=1e-9, atol=1e-10)


def test_s3octa_from_public_refuses_other_state_dicts():
    state = public_s3octa_state(dtype=torch.float32)
    del state["dsconvs.1.conv_fusion.gn.bias"]
    with pytest.raises(ValueError, match="missing .*encoder.1.fuse.1.bias"):
        S3OCTA.from_public(state)
    with pytest.raises(ValueError, match="not a public S3-OCTA state dict"):
        S3OCTA.from_public({"weight": torch.zeros(1)})


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_published_s3octa_becomes_a_checkpoint_that_predicts_from_projection_folders(tmp_path, capsys):
    import retina
    from retina import cli
    from retina.image_files import read_image, write_image

    state = public_s3octa_state(dtype=torch.float32)
    torch.save(state, tmp_path / "m.pth")
    assert cli.main(["import-weights", "s3octa", str(tmp_path / "m.pth"), str(tmp_path / "s3octa.pt")]) == 0
    out = capsys.readouterr().out
    assert "--channel-folders" in out and "'OCTA(FULL)' 'OCTA(ILM_OPL)' 'OCTA(OPL_BM)'" in out
    model = retina.load(tmp_path / "s3octa.pt")
    info = model.checkpoint_info
    assert info["published"] == {"name": "s3octa", "source": "ShellRedia/S3-OCTA", "file": "m.pth",
                                 "sha256": _sha256(tmp_path / "m.pth")}
    assert info["training"]["channel_sources"] == ["OCTA(FULL)", "OCTA(ILM_OPL)", "OCTA(OPL_BM)"]
    assert info["training"]["label_names"] == ["RV"]
    # the projections as the public code reads them: three 8-bit maps stacked, / 255, the whole scan
    rng = np.random.default_rng(0)
    maps = {name: rng.integers(0, 256, (2, 36, 40), dtype=np.uint8) for name in ("FULL", "ILM_OPL", "OPL_BM")}
    for name, images in maps.items():
        for i, image in enumerate(images):
            write_image(tmp_path / f"OCTA({name})" / f"1030{i}.bmp", image)
    folders = [str(tmp_path / f"OCTA({name})") for name in maps]
    args = ["predict", *folders, "--channel-folders", "--checkpoint", str(tmp_path / "s3octa.pt"), "--out",
            str(tmp_path / "pred"), "--device", "cpu"]
    assert cli.main(args) == 0
    stacked = torch.from_numpy(np.stack([maps[n][1] for n in maps]).astype(np.float32) / 255)[None]
    with torch.no_grad():
        public = torch.sigmoid(S3OCTA.from_public(state)(stacked))[0, 0].numpy()
    prob = read_image(tmp_path / "pred" / "prob" / "10301.png").astype(np.float64)
    assert np.abs(prob - np.rint(public * 255)).max() <= 1
    # one gray image would be repeated into all three channels: refused
    assert cli.main(["predict", folders[0], "--checkpoint", str(tmp_path / "s3octa.pt"), "--out",
                     str(tmp_path / "gray")]) == 1
    assert "the model takes 3 images stacked as channels (OCTA(FULL), OCTA(ILM_OPL), OCTA(OPL_BM))" in \
        capsys.readouterr().err


def test_published_iternet_keeps_its_resize_patch_and_field_of_view(tmp_path, capsys):
    import retina
    from retina import cli
    from retina.predict import recorded_field_of_view, recorded_preprocess

    write_released_iternet(tmp_path / "DRIVE.hdf5")
    assert cli.main(["import-weights", "iternet-drive", str(tmp_path / "DRIVE.hdf5"), str(tmp_path / "i.pt")]) == 0
    model = retina.load(tmp_path / "i.pt")
    reference = IterNet.from_keras(tmp_path / "DRIVE.hdf5").eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    prepare = recorded_preprocess(model)  # RGB kept, no equalization: resized to DRIVE's 576² only
    assert prepare.size == (576, 576) and prepare.gray is None and not prepare.equalize and prepare.clahe is None
    assert recorded_field_of_view(model)
    assert model.checkpoint_info["training"]["patch"] == 128  # auto mode blends 128² tiles, as it trained
    # the wrong file for the name, a missing file, an unknown name: one line each
    assert cli.main(["import-weights", "s3octa", str(tmp_path / "DRIVE.hdf5"), str(tmp_path / "x.pt")]) == 1
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    torch.save(public_s3octa_state(), tmp_path / "m.pth")
    assert cli.main(["import-weights", "iternet-stare", str(tmp_path / "m.pth"), str(tmp_path / "x.pt")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["import-weights", "iternet-drive", str(tmp_path / "none.h5"), str(tmp_path / "x.pt")]) == 1
    assert "weights file not found" in capsys.readouterr().err
    assert cli.main(["import-weights", "unet", str(tmp_path / "DRIVE.hdf5"), str(tmp_path / "x.pt")]) == 2
    assert "NAME must be one of s3octa, iternet-drive" in capsys.readouterr().err


def test_fine_tuning_the_published_s3octa_starts_from_its_weights(tmp_path):
    from retina.models import import_published
    from retina.train import TrainConfig, Trainer

    state = public_s3octa_state(dtype=torch.float32)
    torch.save(state, tmp_path / "m.pth")
    import_published("s3octa", tmp_path / "m.pth", tmp_path / "s3octa.pt")
    recipe = Path(__file__).resolve().parents[1] / "configs" / "s3octa_octa500.yaml"
    config = TrainConfig.load(recipe, [f"model.init={tmp_path / 's3octa.pt'}", "data.val=null",
                                       "data.train.name=SyntheticOCTA", "data.train.kwargs={length: 2, size: 32}"])
    trainer = Trainer(config.validate(), tmp_path / "run")
    expected = S3OCTA.from_public(state).state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in trainer.model.state_dict().items())
