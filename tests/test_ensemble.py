"""Ensembles (the folds of a cross-validation predicting together): the mean probability of the members,
in every prediction mode, from Python and from `retina predict` with several checkpoints."""

import json

import numpy as np
import pytest
import torch

import retina
from retina import cli
from retina.image_files import read_image, write_image
from retina.inference import predict
from retina.models import Ensemble, UNet
from retina.models.ensemble import mean_probability_logits
from retina.train import Trainer
from tests.test_train import tiny_config


def _members(num_classes: int, count: int = 3) -> list[torch.nn.Module]:
    members = []
    for seed in range(count):
        torch.manual_seed(seed)
        members.append(UNet(1, num_classes, width=4, depth=2).double().eval())
    return members


@pytest.mark.parametrize("num_classes", [1, 3])
def test_ensemble_predicts_the_mean_probability_in_every_mode(num_classes):
    members = _members(num_classes)
    model = Ensemble(members)
    x = torch.rand(2, 1, 37, 45, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    to_probability = torch.sigmoid if num_classes == 1 else (lambda t: torch.softmax(t, 1))
    with torch.no_grad():
        expected = torch.stack([to_probability(m(x)) for m in members]).mean(0)
        whole = model(x)
    torch.testing.assert_close(to_probability(whole), expected, rtol=0, atol=1e-12)
    # tiled: each member's exact tiles, then the mean (exact mode equals the whole image)
    exact = predict(model, x, mode="exact", tile=16)
    torch.testing.assert_close(to_probability(exact), expected, rtol=0, atol=1e-10)
    blended = predict(model, x, mode="blend", tile=16)
    assert blended.shape == whole.shape and torch.isfinite(blended).all()
    assert model.size_multiple == members[0].size_multiple and model.config["members"][0]["name"] == "unet"
    # flip test-time augmentation: each member's mean logits over the four flips (as nnU-Net's folds each
    # mirror), then the members' mean probability; whole or in exact tiles alike
    def tta(member):
        with torch.no_grad():
            return sum(torch.flip(member(torch.flip(x, d)), d) for d in ((), (-1,), (-2,), (-2, -1))) / 4

    expected_tta = mean_probability_logits([tta(m) for m in members])
    torch.testing.assert_close(predict(model, x, mode="whole", flips=True), expected_tta, rtol=0, atol=1e-12)
    torch.testing.assert_close(predict(model, x, mode="exact", tile=16, flips=True), expected_tta, rtol=0, atol=1e-9)


def test_mean_probability_logits_stay_finite_and_keep_names():
    certain = torch.full((1, 1, 2, 2), 200.0)  # sigmoid rounds to 1 in float32
    logits = mean_probability_logits([certain, certain])
    assert torch.isfinite(logits).all() and torch.sigmoid(logits).min() > 0.999
    named = mean_probability_logits([{"vessel": certain, "faz": -certain}] * 2)
    assert set(named) == {"vessel", "faz"} and torch.sigmoid(named["faz"]).max() < 1e-6


def test_ensemble_members_must_take_one_input():
    with pytest.raises(ValueError, match="members differ in in_channels"):
        Ensemble([UNet(1, 1, width=4, depth=2), UNet(3, 1, width=4, depth=2)])
    a, b = _members(1, 2)
    a.checkpoint_info = {"training": {"preprocess": {"gray": "green"}}}
    b.checkpoint_info = {"training": {"preprocess": None}}
    with pytest.raises(ValueError, match="members 0 and 1 take different inputs: preprocess"):
        Ensemble([a, b])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def test_predict_command_ensembles_several_checkpoints(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"fold{seed}"
        Trainer(tiny_config(steps=2, val_every=2, seed=seed), run).fit()
        runs.append(str(run / "best.pt"))
    image = (np.random.default_rng(3).random((40, 44)) * 255).astype(np.uint8)
    write_image(tmp_path / "images" / "scan.png", image)
    args = ["predict", str(tmp_path / "images"), "--device", "cpu", "--out"]
    assert cli.main([*args, str(tmp_path / "both"), "--checkpoint", *runs]) == 0
    singles = []
    for i, run in enumerate(runs):
        assert cli.main([*args, str(tmp_path / f"one{i}"), "--checkpoint", run]) == 0
        singles.append(read_image(tmp_path / f"one{i}" / "prob" / "scan.png").astype(float))
    both = read_image(tmp_path / "both" / "prob" / "scan.png").astype(float)
    assert np.abs(both - (singles[0] + singles[1]) / 2).max() <= 1
    assert cli.main([*args, str(tmp_path / "tta"), "--checkpoint", runs[0], "--flips"]) == 0
    assert json.loads((tmp_path / "tta" / "predict.json").read_text())["flips"] is True
    model = retina.load_ensemble(runs)
    assert isinstance(model, Ensemble) and len(model.members) == 2
    assert not isinstance(retina.load_ensemble(runs[:1]), Ensemble)
