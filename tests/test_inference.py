"""retina.inference: exact tiles equal the whole-image forward for every model (odd sizes, batch > 1,
float64 and float32, tiles far smaller than the image, an out-of-memory error mid-way); blend mode has no
seams and keeps identity; receptive fields match hand-derived ones; bad arguments name themselves."""

import numpy as np
import pytest
import torch
from torch import nn

import retina
from retina.inference import parse_memory, predict, receptive_field
from retina.inference import tiled as tiled_module
from retina.inference.blend import tile_starts, tile_weights

MODELS = {
    "unet": dict(in_channels=1, width=4, depth=3),
    "unet-batchnorm": dict(name="unet", in_channels=1, width=4, depth=2, norm="batch"),
    "twoheadunet": dict(in_channels=1, width=4, depth=2),
    "dscnet": dict(in_channels=1, width=4, kernel_size=5),
    "s3octa-mit": dict(name="s3octa", in_channels=3, width=8, depth=3, kernel_size=5, global_aggregation="mit"),
    "s3octa-swin": dict(name="s3octa", in_channels=3, width=8, depth=3, kernel_size=5, global_aggregation="swin",
                        widths="constant"),
    "s3octa-aspp": dict(name="s3octa", in_channels=3, width=8, depth=3, kernel_size=5, global_aggregation="aspp",
                        widths="constant"),
    "s3octa-none": dict(name="s3octa", in_channels=3, width=8, depth=3, kernel_size=5, global_aggregation=None),
    "s3octa-constant-mit": dict(name="s3octa", in_channels=3, width=8, depth=3, kernel_size=5, widths="constant"),
    "iternet": dict(in_channels=3, width=4, iterations=2),
    "vesselfaznet": dict(in_channels=3, width=8, depth=3),
}


def build(key: str, dtype=torch.float32) -> nn.Module:
    kwargs = dict(MODELS[key])
    name = kwargs.pop("name", key)
    torch.manual_seed(0)
    model = retina.models.create(name, **kwargs).to(dtype).eval()
    for module in model.modules():  # non-trivial normalisation statistics and affine parameters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    return model


def flat(output) -> torch.Tensor:
    return torch.cat([v.flatten() for v in output.values()]) if isinstance(output, dict) else output.flatten()


def assert_exact(model, x, tolerance_relative: float, **kwargs):
    with torch.no_grad():
        whole = model(x)
    calls = []
    tiled = predict(model, x, mode="exact", tile=16, device="cpu", _before_tile=lambda *s: calls.append(s), **kwargs)
    assert type(tiled) is type(whole)
    if isinstance(whole, dict):
        assert tiled.keys() == whole.keys()
    assert len(calls) > 100  # tiles far smaller than the image, many of them
    difference = (flat(tiled) - flat(whole)).abs().max().item()
    assert difference <= tolerance_relative * flat(whole).abs().max().item(), difference
    return calls


@pytest.mark.parametrize("key", list(MODELS))
def test_exact_tiles_equal_the_whole_image_in_float64(key):
    model = build(key, torch.float64)
    channels = model.config["in_channels"]
    x = torch.rand(2, channels, 97, 131, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_exact(model, x, 1e-10)
    out = predict(model, x[:1], mode="exact", tile=32)
    assert all(v.dtype == torch.float64 for v in (out.values() if isinstance(out, dict) else [out]))


@pytest.mark.parametrize("key", ["unet", "dscnet", "s3octa-mit", "s3octa-aspp"])
def test_exact_tiles_equal_the_whole_image_in_float32(key):
    model = build(key)
    x = torch.rand(3, model.config["in_channels"], 101, 67, generator=torch.Generator().manual_seed(2))
    assert_exact(model, x, 1e-4)


def test_exact_survives_out_of_memory_by_halving_the_tile_without_redoing_tiles():
    model = build("s3octa-mit")
    x = torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(x)
    seen, failures = [], []

    def tight_memory(batch, rows, cols):  # a device that holds one image's 8 x 8 tiles at most
        if batch > 1 or rows * cols > 64:
            failures.append((batch, rows, cols))
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        seen.append((rows, cols))

    tiled = predict(model, x, mode="exact", tile=32, device="cpu", _before_tile=tight_memory)
    assert failures and all(r * c <= 64 for r, c in seen)
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max()

    def always(batch, rows, cols):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(MemoryError, match="even for a"):
        predict(model, x, mode="exact", tile=32, device="cpu", _before_tile=always)


def test_exact_leaves_the_model_where_it_was_and_returns_on_the_output_device():
    model = build("unet")
    x = np.random.default_rng(0).random((1, 40, 44)).astype(np.float32)  # [C, H, W] numpy
    out = predict(model, x, mode="exact", tile=8, output_device="cpu")
    assert out.shape == (1, 1, 40, 44) and out.device.type == "cpu" and out.dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu" and not model.training


class Constant(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 2, *x.shape[2:]), 3.25, dtype=x.dtype)


class Identity(nn.Module):
    size_multiple = 4

    def forward(self, x):
        return x * 1


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_blend_has_no_seams_keeps_identity_channels_and_batch(blend):
    x = torch.rand(2, 3, 53, 70)
    constant = predict(Constant(), x, mode="blend", tile=16, overlap=0.5, blend=blend, batch_size=3)
    assert constant.shape == (2, 2, 53, 70)
    torch.testing.assert_close(constant, torch.full_like(constant, 3.25), rtol=1e-6, atol=0)
    identity = predict(Identity(), x, mode="blend", tile=(16, 24), overlap=0.25, blend=blend, flips=True)
    torch.testing.assert_close(identity, x, rtol=1e-6, atol=1e-6)
    larger = predict(Identity(), x, mode="blend", tile=128, blend=blend)  # one tile, the whole image
    torch.testing.assert_close(larger, x)
    assert larger.device.type == "cpu" and larger.dtype == torch.float32


def test_blend_of_a_model_with_named_outputs_and_of_a_trained_patch_size():
    model = build("twoheadunet")
    x = torch.rand(1, 1, 45, 50)
    out = predict(model, x, mode="blend", tile=16, overlap=0.25)
    assert set(out) == {"vessel", "faz"} and out["faz"].shape == (1, 1, 45, 50)


def test_blend_tiles_lie_on_the_stride_grid_and_weights_are_gaussian():
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68] and tile_starts(20, 32, 24) == [0]
    weights = tile_weights(32, 32, "gaussian")
    assert weights.max() == 1 and weights.min() > 0
    assert weights[16, 16] > weights[8, 16] > weights[0, 16]
    sigma = 32 / 8  # the weight halves-ish at one sigma: exp(-1/2) between the centre and 4 pixels away
    ratio = tile_weights(33, 33, "gaussian")[16, 16 + int(sigma)] / tile_weights(33, 33, "gaussian")[16, 16]
    assert ratio.item() == pytest.approx(np.exp(-0.5 * (sigma / (33 / 8)) ** 2), rel=1e-6)


def test_auto_mode_infers_the_way_the_model_was_trained(monkeypatch):
    model = build("unet")
    x = torch.rand(1, 1, 48, 40)
    with torch.no_grad():
        whole = model(x)
    torch.testing.assert_close(predict(model, x), whole)  # the CPU measures nothing: whole fits
    modes = []
    monkeypatch.setattr(tiled_module, "probe_bytes_per_pixel", lambda *a: 1e6)  # 1 MB a pixel: nothing fits
    monkeypatch.setattr(tiled_module, "run_exact", lambda *a, **k: modes.append("exact") or whole)
    monkeypatch.setattr(tiled_module, "run_blend", lambda *a, **k: modes.append(("blend", k["tile"])) or whole)
    predict(model, x, max_memory="1GiB")
    model.checkpoint_info = {"training": {"patch": 32}}
    predict(model, x, max_memory="1GiB")
    assert modes == ["exact", ("blend", (32, 32))]


def test_bad_arguments_name_themselves():
    model = build("unet")
    x = torch.rand(1, 1, 32, 32)
    cases = [
        (dict(image=torch.rand(32, 32)), "image must be"),
        (dict(image=torch.rand(1, 3, 32, 32)), "3 channels, the model takes 1"),
        (dict(image=torch.full((1, 1, 32, 32), float("nan"))), "NaN or infinite"),
        (dict(image=torch.zeros(1, 1, 8, 8, dtype=torch.int64)), "floating point"),
        (dict(mode="tiles"), "mode must be"),
        (dict(tile=0), "tile must be > 0"),
        (dict(tile=12), "not a multiple of the model's stride 8"),
        (dict(tile=(16,)), "tile must be"),
        (dict(overlap=1.0), "overlap must be in"),
        (dict(blend="cosine"), "blend must be"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_memory="lots"), "max_memory must be"),
        (dict(max_memory=-1), "max_memory must be > 0"),
        (dict(mode="exact", max_memory=1000), "below the .* that one minimal tile needs"),
        (dict(mode="exact", amp=torch.bfloat16), "amp: exact mode"),
    ]
    for kwargs, message in cases:
        image = kwargs.pop("image", x)
        with pytest.raises((ValueError, TypeError), match=message):
            predict(model, image, **kwargs)


def test_parse_memory():
    assert parse_memory("2GiB") == 2 * 2**30 and parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5GB") == 1_500_000_000 and parse_memory(4096) == 4096 and parse_memory(None) is None


def hand_derived_stacks():
    gn = nn.GroupNorm(1, 2)  # live, it would make every output depend on every pixel
    return [
        (nn.Conv2d(1, 2, 3, padding=1), (1, 1)),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), gn, nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1)), (2, 2)),
        (nn.Sequential(nn.Conv2d(1, 2, 5, padding=4, dilation=2), nn.Conv2d(2, 1, (3, 1), padding=(1, 0))), (5, 4)),
        (nn.Sequential(nn.Conv2d(1, 2, (1, 7), padding=(0, 3)), nn.Conv2d(2, 1, 1)), (0, 3)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_receptive_field_of_hand_derived_stacks(index):
    module, expected = hand_derived_stacks()[index]
    torch.manual_seed(index)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5)  # no weight exactly zero at the field's edge
    assert receptive_field(module, 1, 41) == expected


def test_receptive_field_of_a_unet_lies_between_its_convolutions_and_its_resampling():
    """UNet depth 3: two 3x3 convs per block at scale 2^l reach 2·2^l: 2+4+8+16 down, 8+4+2 up = 44;
    max pooling (1+2+4) and bilinear upsampling (up to 8+4+2) add at most 21 more."""
    rows, cols = receptive_field(build("unet"), size=257)
    assert 44 <= rows <= 65 and 44 <= cols <= 65
    snake_rows, _ = receptive_field(build("dscnet"), size=321)  # snakes reach further than plain convs
    assert rows < snake_rows < 160
