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
