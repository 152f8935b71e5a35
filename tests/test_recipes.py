"""Every recipe in configs/ trains for a few steps on a generated look-alike tree of its dataset (the
released layout, small images), with the recipe's model, loss and preprocessing as written; only image
sizes and the step count are overridden. The trained checkpoint then segments a new image."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import retina
from retina import cli
from retina.image_files import read_image
from retina.predict import predict_files
from retina.train import TrainConfig, Trainer, read_checkpoint
from tests import dataset_trees

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST = ["training.steps=2", "training.epochs=null", "training.val_every=2", "training.checkpoint_every=2",
        "logging.progress=false", "logging.tensorboard=false", "logging.overlays=1"]


def recipe(name: str, root: Path, *overrides: str) -> TrainConfig:
    data = [f"data.train.kwargs.root={root}"]
    config = TrainConfig.load(CONFIGS / f"{name}.yaml")
    if config.data.val is not None:
        data.append(f"data.val.kwargs.root={root}")
    return TrainConfig.load(CONFIGS / f"{name}.yaml", [*data, *FAST, *overrides]).validate()


def trained(config: TrainConfig, out: Path) -> dict:
    summary = Trainer(config, out).fit()
    assert summary["steps"] == 2
    state = read_checkpoint(out / "checkpoint.pt")
    assert state["model_config"]["name"] == config.model.name
    return state


def test_every_recipe_is_tested():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(RECIPES)


@pytest.mark.parametrize("name", ["s3octa_octa500", "dscnet_octa500"])
def test_octa500_recipes(tmp_path, name):
    dataset_trees.octa500(tmp_path / "OCTA-500", size=32)
    config = recipe(name, tmp_path / "OCTA-500")
    state = trained(config, tmp_path / "run")
    model = retina.models.create(**state["model_config"])
    assert model.config["in_channels"] == (3 if name.startswith("s3octa") else 1)
    assert (tmp_path / "run" / "best.pt").is_file()  # validated on OCTA-500's val split


def test_unet_drive_recipe_and_its_preprocessing_at_prediction(tmp_path):
    written = dataset_trees.drive(tmp_path / "DRIVE", h=60, w=58)
    config = recipe("unet_drive", tmp_path / "DRIVE", "data.preprocess.resize=64", "data.patch=32",
                    "data.patches_per_image=2", "data.batch_size=4")
    assert config.data.preprocess == {"gray": "green", "equalize": True, "resize": 64}
    state = trained(config, tmp_path / "run")
    assert state["training"]["preprocess"]["equalize"] and state["training"]["patch"] == 32
    model = retina.load(tmp_path / "run" / "checkpoint.pt")
    image = tmp_path / "DRIVE" / "test" / "images" / "01_test.tif"
    predict_files(model, [image], tmp_path / "pred")
    # an RGB photograph in, made grey and equalized and resized to 64 as in training, answered at its size
    assert read_image(tmp_path / "pred" / "prob" / "01_test.png").shape == written["01"][1].shape
    expected = retina.data.Preprocess(gray="green", equalize=True, resize=64)
    rgb = torch.from_numpy(written["01"][0].transpose(2, 0, 1).astype(np.float32) / 255)
    with torch.no_grad():
        logits = model(expected.image(rgb)[None])
    logits = torch.nn.functional.interpolate(logits, size=rgb.shape[1:], mode="bilinear")
    prob = np.rint(torch.sigmoid(logits)[0, 0].numpy() * 255)
    assert np.abs(read_image(tmp_path / "pred" / "prob" / "01_test.png") - prob).max() <= 1


def test_dscnet_folder_recipe_on_a_synthesized_folder(tmp_path, capsys):
    # `retina synthesize` writes images/ and one folder per label; a user's folder has masks/
    assert cli.main(["synthesize", str(tmp_path / "scans"), "--count", "10", "--size", "32"]) == 0
    (tmp_path / "scans" / "vessel").rename(tmp_path / "scans" / "masks")
    config = recipe("dscnet_folder", tmp_path / "scans")
    trainer = Trainer(config, tmp_path / "run")
    assert (len(trainer.train_source), len(trainer.val_set)) == (8, 2)
    assert trainer.train_source[0]["image"].shape == (1, 32, 32)
    assert trainer.fit()["steps"] == 2 and (tmp_path / "run" / "best.pt").is_file()
    # which images trained and which validated, for the methods section and to keep a test set apart
    samples = json.loads((tmp_path / "run" / "samples.json").read_text())
    assert samples == {"train": trainer.train_source.ids, "val": trainer.val_source.ids}
    assert sorted(samples["train"] + samples["val"]) == [f"octa-{i:05d}" for i in range(10)]
    # the checkpoint knows its training images by content: predict marks them, and says how many
    args = ["predict", str(tmp_path / "scans" / "images"), "--checkpoint", str(tmp_path / "run" / "best.pt"),
            "--out", str(tmp_path / "pred"), "--device", "cpu"]
    assert cli.main(args) == 0
    assert "note: 8 of 10 images trained this model" in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "pred" / "measurements.jsonl").read_text().splitlines()]
    assert {line["id"] for line in lines if line["in_training_data"]} == set(samples["train"])


def test_train_command_runs_one_fold_of_a_cross_validation(tmp_path, capsys):
    from retina.data import split_stems

    assert cli.main(["synthesize", str(tmp_path / "scans"), "--count", "10", "--size", "32"]) == 0
    (tmp_path / "scans" / "vessel").rename(tmp_path / "scans" / "masks")
    roots = [f"data.train.kwargs.root={tmp_path / 'scans'}", f"data.val.kwargs.root={tmp_path / 'scans'}"]
    recipe_file = str(CONFIGS / "dscnet_folder.yaml")
    args = ["train", recipe_file, *roots, *FAST, "--fold", "1", "--folds", "5", "--out", str(tmp_path / "fold_1")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "cross-validation: 1 of 5 folds done; best cldice: fold 1 " in out
    assert f"ensemble them: retina predict IMAGES --checkpoint {tmp_path}/fold_*/best.pt --out DIR" in out
    samples = json.loads((tmp_path / "fold_1" / "samples.json").read_text())
    stems = [f"octa-{i:05d}" for i in range(10)]
    assert samples["val"] == split_stems(stems, "val", folds=5, fold=1) and len(samples["train"]) == 8
    saved = TrainConfig.load(tmp_path / "fold_1" / "config.yaml")  # resumable without --fold
    assert saved.data.val.kwargs["fold"] == 1 and saved.data.train.kwargs["folds"] == 5
    assert cli.main([*args[:-6], "--fold", "3", "--folds", "5", "--out", str(tmp_path / "fold_3")]) == 0
    report = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cross-validation"))
    assert "2 of 5 folds done; best cldice: fold 1 " in report and ", fold 3 " in report and " ± " in report
    capsys.readouterr()
    for bad, message in ((["--fold", "5"], "--fold must be in [0, 5)"), (["--fold", "0", "--folds", "1"], "--folds"),
                         ([f"data.val.kwargs.root={tmp_path}", "--fold", "0"], "must divide one folder")):
        assert cli.main(["train", recipe_file, *roots, *FAST, *bad, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    octa = ["train", str(CONFIGS / "dscnet_octa500.yaml"), "--fold", "0", "--out", str(tmp_path / "bad")]
    assert cli.main(octa) == 2 and "data.train is OCTA500, which has no folds" in capsys.readouterr().err


def test_unet_oct_layers_recipe(tmp_path):
    dataset_trees.oct_layers(tmp_path / "oct", count=6)
    config = recipe("unet_oct_layers", tmp_path / "oct", "data.preprocess.resize=64")
    trained(config, tmp_path / "run")  # on the folder's training share, validated on the rest
    rows = (tmp_path / "run" / "log.csv").read_text()
    assert "val_miou" in rows
    # the layer model's path to its numbers: class maps and thickness in mm, then scored against the labels
    model = retina.load(tmp_path / "run" / "checkpoint.pt")
    scans = tmp_path / "oct" / "images"
    predict_files(model, [scans], tmp_path / "pred", axial_mm=0.0039)
    line = json.loads((tmp_path / "pred" / "measurements.jsonl").read_text().splitlines()[0])
    assert len(line["class_fractions"]) == 9 and len(line["layer_thickness_mean_mm"]) == 8
    with pytest.raises(ValueError, match="axial_mm must be a pixel size in mm > 0"):
        predict_files(model, [scans], tmp_path / "bad", axial_mm=0)
    labels = tmp_path / "oct" / "masks"
    summary = retina.metrics.evaluate(tmp_path / "pred" / "prob", labels, protocol="classes", num_classes=9)
    assert 0 <= summary["miou"] <= 1 and "iou_8" in summary


def test_iternet_drive_recipe_trains_every_iteration(tmp_path):
    dataset_trees.drive(tmp_path / "DRIVE", h=60, w=58)
    config = recipe("iternet_drive", tmp_path / "DRIVE", "data.patch=32", "data.batch_size=4", "data.patches_per_image=2")
    trainer = Trainer(config, tmp_path / "run")
    batch = trainer.train_set[0]
    outputs = trainer.model.train()(batch["image"][None])
    assert len(outputs) == 4  # three iterations' inputs and the final output, each with its loss
    trainer.fit()
    assert trainer.step == 2


def test_joint_vessel_faz_recipe(tmp_path):
    dataset_trees.octa500(tmp_path / "OCTA-500", size=32)
    config = recipe("joint_vessel_faz_octa500", tmp_path / "OCTA-500")
    assert config.loss.task_weights == "s2anet"
    trained(config, tmp_path / "run")
    log = (tmp_path / "run" / "log.csv").read_text()
    assert "loss_vessel" in log and "loss_faz" in log and "val_faz_dice" in log


RECIPES = ["s3octa_octa500", "dscnet_octa500", "unet_drive", "unet_oct_layers", "iternet_drive",
           "joint_vessel_faz_octa500", "dscnet_folder"]
