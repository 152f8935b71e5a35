"""retina.train: the config round-trips to YAML and names bad keys by their dotted path; a run killed
with SIGKILL resumes to the same losses and weights, bit for bit; a crash during a checkpoint write
leaves the previous checkpoint; `retina train` / `retina predict` / `retina.load` work end to end."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import retina
from retina import cli, image_files
from retina.train import ConfigError, TrainConfig, Trainer, load, read_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**training) -> TrainConfig:
    return TrainConfig.from_dict({
        "model": {"name": "unet", "kwargs": {"in_channels": 1, "width": 4, "depth": 2}},
        "loss": {"name": "DiceCELoss", "kwargs": {"sigmoid": True}},
        "optimizer": {"name": "adamw", "lr": 5e-3},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "data": {"train": {"name": "SyntheticOCTA", "kwargs": {"length": 6, "size": 48, "channels": 1}},
                 "val": {"name": "SyntheticOCTA", "kwargs": {"length": 2, "size": 48, "channels": 1, "seed": 99}},
                 "batch_size": 2, "patch": 32, "patches_per_image": 2, "augment": {"flip": True, "noise": 0.01}},
        "training": {"steps": 14, "val_every": 7, "checkpoint_every": 4, "ema": 0.9, **training},
        "logging": {"log_every": 1, "overlays": 1, "tensorboard": False, "progress": False},
    })


def test_config_round_trip_overrides_and_errors(tmp_path):
    config = tiny_config()
    assert TrainConfig.from_yaml(config.to_yaml()) == config
    path = config.save(tmp_path / "c.yaml")
    loaded = TrainConfig.load(path, ["training.steps=3", "optimizer.lr=0.1", "data.val=null"])
    assert loaded.training.steps == 3 and loaded.optimizer.lr == 0.1 and loaded.data.val is None
    cases = [({"training": {"stepz": 1}}, "unknown key training.stepz"),
             ({"optimizer": {"lr": "fast"}}, "optimizer.lr must be float"),
             ({"data": {"train": {"kwargs": []}}}, "data.train.kwargs must be dict"),
             ({"model": 3}, "model must be ModelConfig")]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(data)
    for override, message in (("training.amp=float8", "training.amp"), ("optimizer.name=lion", "optimizer.name"),
                              ("training.epochs=2", "exactly one of")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.load(path, [override]).validate()
    with pytest.raises(ConfigError, match="key.sub=value"):
        TrainConfig.load(path, ["training.steps"])


def test_validation_on_training_samples_is_refused(tmp_path):
    config = tiny_config()
    config.data.val.kwargs["seed"] = 4  # draws 4 and 5: training's last two
    with pytest.raises(ConfigError, match=r"data.val: 2 of 2 validation samples are also training samples "
                                          r"\('octa-4' is training's 'octa-4'"):
        Trainer(config, tmp_path / "run")
    assert cli.main(["synthesize", str(tmp_path / "scans"), "--count", "8", "--size", "48"]) == 0
    folder = {"root": str(tmp_path / "scans"), "masks": "vessel", "gray": True}
    config.data.train = retina.train.config.DatasetConfig("folder", folder)
    config.data.val = retina.train.config.DatasetConfig("folder", folder)
    with pytest.raises(ConfigError, match="8 of 8 validation samples .* split: train / split: val"):
        Trainer(config, tmp_path / "run")
    config.data.val.kwargs = {**folder, "root": str(tmp_path / "elsewhere")}  # a root left unset, say
    with pytest.raises(FileNotFoundError, match=r"data.val \(folder\): images: folder not found: .*elsewhere"):
        Trainer(config, tmp_path / "run")
    config.data.val.kwargs = {**folder, "split": "test"}
    with pytest.raises(ConfigError, match=r"data.val \(folder\): split must be 'all', 'train' or 'val'"):
        Trainer(config, tmp_path / "run")
    config.data.train.kwargs = {**folder, "split": "train"}
    config.data.val.kwargs = {**folder, "split": "val"}
    trainer = Trainer(config, tmp_path / "run")
    assert (len(trainer.train_source), len(trainer.val_set)) == (6, 2)


def test_model_init_fine_tunes_from_a_checkpoint(tmp_path):
    Trainer(tiny_config(steps=2, val_every=2, ema=None), tmp_path / "first").fit()
    first = read_checkpoint(tmp_path / "first" / "best.pt")["inference_weights"]
    samples = json.loads((tmp_path / "first" / "samples.json").read_text())
    assert samples == {"train": [f"octa-{i}" for i in range(6)], "val": ["octa-99", "octa-100"]}
    config = tiny_config(steps=2, ema=None)
    config.model.init = str(tmp_path / "first" / "best.pt")
    trainer = Trainer(config, tmp_path / "tuned")
    assert all(torch.equal(v, first[k]) for k, v in trainer.model.state_dict().items())
    trainer.fit()
    # a resumed run restores its own weights: the init file is not read again
    (tmp_path / "first" / "best.pt").rename(tmp_path / "moved.pt")
    assert Trainer(config, tmp_path / "tuned", resume=True).fit()["steps"] == 2
    with pytest.raises(ConfigError, match="model.init: checkpoint not found"):
        Trainer(config, tmp_path / "again")
    config.model.init = str(tmp_path / "moved.pt")
    config.model.kwargs["width"] = 8
    with pytest.raises(ConfigError, match="model.init: .* holds another model \\(width: 4 there, 8 here\\)"):
        Trainer(config, tmp_path / "other")


def test_schedulers_warm_up_and_decay():
    from retina.train.trainer import lr_factor

    config = tiny_config()
    factors = [lr_factor(config, step, 14) for step in range(14)]
    assert factors[0] < factors[1] < factors[2] and factors[-1] < 0.1  # warmup, then cosine towards 0
    config.scheduler.name = "poly"
    assert lr_factor(config, 2, 14) == 1.0 and lr_factor(config, 13, 14) == pytest.approx((1 - 11 / 12) ** 0.9)


def run_killed_at(out: Path, kill_after_step: int) -> int:
    """Trains tiny_config in a subprocess that SIGKILLs itself after `kill_after_step` steps."""
    script = (
        "import os, signal, sys\n"
        "from tests.test_train import tiny_config\n"
        "from retina.train import Trainer\n"
        "def cb(row):\n"
        f"    if row['step'] >= {kill_after_step} and 'loss' in row: os.kill(os.getpid(), signal.SIGKILL)\n"
        "Trainer(tiny_config(), sys.argv[1], callback=cb).fit()\n"
    )
    return subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, timeout=300).returncode


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole = Trainer(tiny_config(), tmp_path / "whole")
    whole.fit()
    assert run_killed_at(tmp_path / "killed", 10) == -signal.SIGKILL  # killed between checkpoints 8 and 12
    assert read_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 8
    # a change that alters the experiment is refused by name; how the run is saved and timed may change
    other = tiny_config(steps=20)
    other.optimizer.lr = 0.01
    with pytest.raises(ConfigError, match=r"optimizer.lr: 0.005 -> 0.01; training.steps: 14 -> 20\. Resume with"):
        Trainer(other, tmp_path / "killed", resume=True).fit()
    resumed = Trainer(tiny_config(checkpoint_every=5, max_minutes=60.0), tmp_path / "killed", resume=True)
    resumed.fit()
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in whole.ema.items():
        assert torch.equal(value, resumed.ema[key]), key
    assert resumed.input_range == whole.input_range  # restored, then widened by the same batches
    losses = [(r["step"], r["loss"]) for r in whole.rows if "loss" in r]
    assert losses == [(r["step"], r["loss"]) for r in resumed.rows if "loss" in r]  # the log too (CSV)
    logged = (tmp_path / "killed" / "log.csv").read_text().splitlines()
    assert logged == (tmp_path / "whole" / "log.csv").read_text().splitlines()
    for name in ("best.pt", "curves.png", "config.yaml"):
        assert (tmp_path / "killed" / name).is_file()
    assert list((tmp_path / "killed" / "overlays").glob("*.png"))


def test_ctrl_c_or_sigterm_stops_after_the_step_and_resumes_to_the_same_run(tmp_path, monkeypatch, capsys):
    """The first SIGINT / SIGTERM stops the run after the step in progress with that step saved (no
    validation, no lost steps); resuming gives the uninterrupted run's weights bit for bit. A second signal
    acts at once (KeyboardInterrupt), and the handlers are the previous ones afterwards."""
    import signal as signals

    whole = Trainer(tiny_config(), tmp_path / "whole")
    whole.fit()
    previous = signals.getsignal(signals.SIGINT)
    for number, at in ((signals.SIGINT, 5), (signals.SIGTERM, 9)):
        def send(row, number=number, at=at):
            if row.get("step") == at and "loss" in row:
                os.kill(os.getpid(), number)

        out = tmp_path / signals.Signals(number).name
        summary = Trainer(tiny_config(), out, callback=send).fit()
        assert summary["stopped_by"] == f"signal {signals.Signals(number).name}" and summary["signal"] == number
        assert summary["steps"] == at and read_checkpoint(out / "checkpoint.pt")["step"] == at
        assert f"{signals.Signals(number).name}: stopping after this step" in capsys.readouterr().err
        assert signals.getsignal(signals.SIGINT) is previous
        resumed = Trainer(tiny_config(), out, resume=True)
        assert resumed.fit()["stopped_by"] == "steps"
        for key, value in whole.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[key]), key

    def twice(row):
        if row.get("step") == 3 and "loss" in row:
            os.kill(os.getpid(), signals.SIGINT)
            os.kill(os.getpid(), signals.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(), tmp_path / "twice", callback=twice).fit()
    assert signals.getsignal(signals.SIGINT) is previous
    # the command: exit status 128 + the signal, and how to go on
    monkeypatch.setattr(Trainer, "fit", lambda self: {"steps": 4, "stopped_by": "signal SIGTERM", "best": None,
                                                      "out": str(self.out), "signal": 15})
    tiny_config().save(tmp_path / "tiny.yaml")
    assert cli.main(["train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "cli")]) == 143
    assert f"continue with: retina train {tmp_path / 'cli' / 'config.yaml'} --out" in capsys.readouterr().out


class _RunsCode:
    """A pickle that runs code when loaded: what torch.load(weights_only=False) would execute."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoints_load_without_running_code(tmp_path):
    """A checkpoint is data: a trained run's file loads with torch's weights-only unpickler as is; a file
    carrying code is refused before the code runs; the NumPy random state (now a tensor; older files an
    array) is restored exactly either way."""
    from retina.train.checkpoint import FORMAT
    from retina.train.trainer import _rng_state, _set_rng_state

    trainer = Trainer(tiny_config(steps=1, val_every=100), tmp_path / "run")
    trainer.fit()
    torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)  # no allow-list needed
    marker = tmp_path / "ran"
    torch.save({"format": FORMAT, "payload": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint .*evil.pt"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    state = _rng_state()
    expected = np.random.random(3)
    _set_rng_state(state)
    assert np.array_equal(np.random.random(3), expected)
    legacy = {**state, "numpy": np.random.get_state()}  # before: NumPy's own tuple, array inside
    save_checkpoint(tmp_path / "legacy.pt", {"rng": legacy})
    expected = np.random.random(3)
    _set_rng_state(read_checkpoint(tmp_path / "legacy.pt")["rng"])
    assert np.array_equal(np.random.random(3), expected)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        read_checkpoint(path)


def test_load_gives_an_eval_model_with_its_config(tmp_path):
    trainer = Trainer(tiny_config(steps=2, val_every=100), tmp_path / "run")
    trainer.fit()
    model = retina.load(tmp_path / "run" / "checkpoint.pt")
    assert not model.training and model.config == trainer.model.config
    assert model.checkpoint_info["step"] == 2 and model.checkpoint_info["training"]["patch"] == 32
    low, high = model.checkpoint_info["training"]["input_range"]  # synthetic scans in [0, 1], noise 0.01 added
    assert -0.1 < low < 0.2 and 0.5 < high < 1.1
    image = torch.rand(1, 1, 32, 32)
    retina.inference.predict(model, image * 1.5)  # brighter than any training scan: still the model's input
    for wrong, shown in ((image * 255, r"\[0\.\d+, 25\d\.\d+\]"), (image - 2, r"\[-1\.9\d+, -1\.0\d+\]")):
        with pytest.raises(ValueError, match=rf"image values span {shown}, but the model was trained on inputs in"):
            retina.inference.predict(model, wrong)
    x = torch.rand(1, 1, 40, 36)
    ema_model = retina.models.create(**model.config)
    ema_model.load_state_dict(trainer.ema)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ema_model.eval()(x))  # the inference weights are the EMA
    assert load is retina.load
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config(steps=2), tmp_path / "run").fit()


def test_predict_stacks_channel_folders_for_a_model_of_separate_images(tmp_path, capsys):
    """A model trained on OCTA-500's three projections (three images per scan) predicts from one folder per
    projection, stacked by file name; a gray image is refused (repeating it into three channels would be a
    silent wrong input); missing files and a wrong folder count are named."""
    from retina.data.datasets.octa import PROJECTIONS
    from retina.predict import predict_files

    config = tiny_config(steps=1, val_every=100)
    config.model.kwargs["in_channels"] = 3
    config.data.train.kwargs["channels"] = 3
    config.data.val = None
    config.save(tmp_path / "octa.yaml")
    assert cli.main(["train", str(tmp_path / "octa.yaml"), "--out", str(tmp_path / "run")]) == 0
    model = retina.load(tmp_path / "run" / "checkpoint.pt")
    assert model.checkpoint_info["training"]["channel_sources"] == list(PROJECTIONS)
    rng = np.random.default_rng(0)
    folders = [tmp_path / name for name in PROJECTIONS]
    planes = {stem: [(rng.random((24, 28)) * 255).astype(np.uint8) for _ in folders] for stem in ("a", "b")}
    for stem, images in planes.items():
        for folder, image in zip(folders, images):
            image_files.write_image(folder / f"{stem}.png", image)
    capsys.readouterr()
    assert cli.main(["predict", *map(str, folders), "--channel-folders", "--checkpoint", str(tmp_path / "run" /
                     "checkpoint.pt"), "--out", str(tmp_path / "pred"), "--device", "cpu", "--mode", "whole"]) == 0
    for stem, images in planes.items():
        x = torch.from_numpy(np.stack(images).astype(np.float32) / 255)[None]
        with torch.no_grad():
            expected = np.rint(torch.sigmoid(model(x))[0, 0].numpy() * 255)
        written = image_files.read_image(tmp_path / "pred" / "prob" / f"{stem}.png")
        assert np.abs(written.astype(int) - expected).max() <= 1, stem  # the three planes, in order
    with pytest.raises(ValueError, match=r"one channel, but the model takes 3 images stacked as channels "
                                         r"\(OCTA\(FULL\), OCTA\(ILM_OPL\), OCTA\(OPL_BM\)\)"):
        predict_files(model, [folders[0]], tmp_path / "gray")
    with pytest.raises(ValueError, match="2 given, but the model takes 3 channels"):
        predict_files(model, folders[:2], tmp_path / "two", channel_folders=True)
    image_files.write_image(folders[1] / "b.png", (rng.random((24, 28, 3)) * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="b.png: a colour image, but an image of a channel folder must be one channel"):
        predict_files(model, folders, tmp_path / "colour", channel_folders=True)
    (folders[2] / "b.png").unlink()
    with pytest.raises(ValueError, match=r"OCTA\(OPL_BM\) \(OCTA\(OPL_BM\)\) has no 'b'"):
        predict_files(model, folders, tmp_path / "missing", channel_folders=True)


def test_a_model_of_faz_labels_is_measured_as_a_zone(tmp_path):
    from retina.predict import predict_files

    config = tiny_config(steps=1, val_every=100)
    config.data.train.kwargs["labels"] = ["faz"]
    config.data.val = None
    Trainer(config, tmp_path / "run").fit()
    model = retina.load(tmp_path / "run" / "checkpoint.pt")
    assert model.checkpoint_info["training"]["label_names"] == ["faz"]
    image_files.write_image(tmp_path / "in" / "scan.png", (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    predict_files(model, [tmp_path / "in"], tmp_path / "pred", pixel_mm=0.01)
    line = json.loads((tmp_path / "pred" / "measurements.jsonl").read_text())
    assert {"area_mm2", "circularity", "area_fraction"} <= set(line) and "vessel_density" not in line


def test_a_fundus_model_measures_vessels_inside_the_field_of_view(tmp_path):
    """A model trained on photographs with a field of view records it; its predictions' densities are then
    taken inside the FOV estimated from each photograph (the dark surround, a third of the rectangle, is no
    place for vessels), and the line says how much of the image that is."""
    from retina.data import fundus_image
    from retina.data.preprocess import estimate_fov
    from retina.predict import predict_files

    config = TrainConfig.from_dict({
        "model": {"name": "unet", "kwargs": {"in_channels": 3, "width": 4, "depth": 2}},
        "data": {"train": {"name": "SyntheticFundus", "kwargs": {"length": 2, "height": 48, "width": 48}},
                 "batch_size": 2},
        "training": {"steps": 1}, "logging": {"tensorboard": False, "progress": False}})
    Trainer(config, tmp_path / "run").fit()
    model = retina.load(tmp_path / "run" / "checkpoint.pt")
    assert model.checkpoint_info["training"]["field_of_view"] is True
    photo = fundus_image(256, 256, seed=7)
    image_files.write_image(tmp_path / "in" / "eye.png", np.rint(photo.image.transpose(1, 2, 0) * 255).astype(np.uint8))
    predict_files(model, [tmp_path / "in"], tmp_path / "pred", threshold=0.45)
    line = json.loads((tmp_path / "pred" / "measurements.jsonl").read_text())
    mask = image_files.read_image(tmp_path / "pred" / "mask" / "eye.png") > 0
    fov = estimate_fov(image_files.read_image(tmp_path / "in" / "eye.png"))
    assert line["fov_fraction"] == pytest.approx(fov.mean()) and 0.5 < fov.mean() < 0.95
    assert abs(fov.mean() - photo.fov.mean()) < 0.05  # the estimate is the drawn field
    assert line["vessel_area_density"] == pytest.approx(mask[fov].mean())
    assert line["vessel_density"] == pytest.approx(mask[fov].mean())


def test_predict_reruns_skip_only_what_the_same_weights_and_settings_wrote(tmp_path):
    """A rerun into the same folder goes on where a killed one stopped, but never keeps images that other
    weights or another threshold wrote: that is an error naming what changed, or with overwrite a redo."""
    from retina.predict import MANIFEST, predict_files

    model = retina.models.create("unet", in_channels=1, num_classes=1, width=4, depth=2)
    for i in range(3):
        scan = (np.random.default_rng(i).random((16, 20)) * 255).astype(np.uint8)
        image_files.write_image(tmp_path / "in" / f"s{i}.png", scan)
    calls = []

    def counting(model, image):
        calls.append(1)
        return model(image)

    out = tmp_path / "out"
    predict_files(model, [tmp_path / "in"], out, forward=counting)
    assert len(calls) == 3 and json.loads((out / MANIFEST).read_text())["threshold"] == 0.5
    (out / "measurements" / "s1.json").unlink()  # as if killed before s1's record was written
    predict_files(model, [tmp_path / "in"], out, forward=counting)
    assert len(calls) == 4  # only s1 again
    with pytest.raises(ValueError, match="holds predictions made with other threshold: choose another"):
        predict_files(model, [tmp_path / "in"], out, threshold=0.7, forward=counting)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="other weights_sha256"):
        predict_files(model, [tmp_path / "in"], out, forward=counting)
    predict_files(model, [tmp_path / "in"], out, forward=counting, overwrite=True)
    assert len(calls) == 7  # every image again, with the new weights recorded
    predict_files(model, [tmp_path / "in"], out, forward=counting)
    assert len(calls) == 7
    (out / MANIFEST).unlink()  # a folder written before the manifest existed
    with pytest.raises(ValueError, match="unrecorded settings"):
        predict_files(model, [tmp_path / "in"], out, forward=counting)


def test_train_and_predict_commands(tmp_path, capsys):
    config = tiny_config(steps=4, val_every=2)
    config.save(tmp_path / "tiny.yaml")
    assert cli.main(["train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
                     "training.checkpoint_every=2", "logging.progress=true"]) == 0
    out = capsys.readouterr().out
    assert "trained 4 steps" in out
    assert f"segment with: retina predict IMAGES --checkpoint {tmp_path / 'run' / 'best.pt'} --out DIR" in out
    # each validation is a line above the progress bar, saying whether it made best.pt
    assert "step 2 validation: dice " in out and "cldice " in out and "(best dice so far: best.pt)" in out
    images = tmp_path / "images"
    for i in range(2):
        image_files.write_image(images / f"scan{i}.png", (np.random.default_rng(i).random((40, 52)) * 255).astype(np.uint8))
    image_files.write_image(images / "rgb.png", np.zeros((30, 30, 3), np.uint8))  # made gray for the model
    args = ["predict", str(images), "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "pred"),
            "--device", "cpu", "--pixel-mm", "0.01"]
    assert cli.main(args) == 0
    for kind in ("prob", "mask", "overlay", "skeleton"):
        assert sorted(p.name for p in (tmp_path / "pred" / kind).iterdir()) == ["rgb.png", "scan0.png", "scan1.png"]
    assert image_files.read_image(tmp_path / "pred" / "prob" / "scan1.png").shape == (40, 52)
    lines = (tmp_path / "pred" / "measurements.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"vessel_density"' in lines[0] and '"area_mm2"' in lines[0]
    assert '"vessel_skeleton_density_per_mm"' in lines[0] and '"fractal_dimension"' in lines[0]  # biomarkers
    table = (tmp_path / "pred" / "measurements.csv").read_text().splitlines()
    assert len(table) == 4 and "vessel_diameter_index_mm" in table[0] and "tortuosity_mean" in table[0]
    before = (tmp_path / "pred" / "mask" / "scan0.png").stat().st_mtime_ns
    assert cli.main(args) == 0  # a rerun skips what is written
    assert (tmp_path / "pred" / "mask" / "scan0.png").stat().st_mtime_ns == before
    # tiled: exact tiles give the whole image's probabilities; blend is close
    for mode in ("exact", "blend"):
        assert cli.main([*args[:5], str(tmp_path / mode), "--device", "cpu", "--mode", mode, "--tile", "16"]) == 0
    assert cli.main([*args[:5], str(tmp_path / "deep"), "--bits", "16"]) == 0
    deep = image_files.read_image(tmp_path / "deep" / "prob" / "scan0.png")
    eight = image_files.read_image(tmp_path / "pred" / "prob" / "scan0.png")
    assert deep.dtype == np.uint16 and np.abs(deep / 257 - eight).max() <= 1
    whole = image_files.read_image(tmp_path / "pred" / "prob" / "scan0.png").astype(int)
    assert np.array_equal(image_files.read_image(tmp_path / "exact" / "prob" / "scan0.png"), whole)
    assert np.abs(image_files.read_image(tmp_path / "blend" / "prob" / "scan0.png") - whole).mean() < 30
    capsys.readouterr()
    for bad, message in ((["--tile", "6"], "not a multiple of the model's stride 4"), (["--tile", "x"], "--tile"),
                         (["--max-memory", "lots"], "--max-memory")):
        assert cli.main([*args[:5], str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err
    # bad arguments: one line, exit 2; a bad checkpoint: exit 1
    assert cli.main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert cli.main(["train", str(tmp_path / "tiny.yaml"), "training.stepz=3"]) == 2
    assert "unknown key training.stepz" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "new"), "--resume"]) == 2
    (tmp_path / "bad.pt").write_bytes(b"x")
    assert cli.main(["predict", str(images), "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "p2")]) == 1
    assert cli.main(["predict", str(images), "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out",
                     str(tmp_path / "p3"), "--threshold", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("retina ") for line in err)  # one line per failed command


def two_task_config(weights, model: str = "twoheadunet", **training) -> TrainConfig:
    """A two-output model on synthetic OCTA with vessel and FAZ labels: each named output learns its channel."""
    data = {"length": 4, "size": 32, "channels": 1, "labels": ["vessel", "faz"]}
    return TrainConfig.from_dict({
        "model": {"name": model, "kwargs": {"in_channels": 1, "width": 4 if model == "twoheadunet" else 8, "depth": 2}},
        "loss": {"tasks": {"vessel": {"name": "DiceCELoss", "kwargs": {"sigmoid": True}, "channel": 0},
                           "faz": {"name": "DiceLoss", "kwargs": {"sigmoid": True}, "channel": 1}},
                 "task_weights": weights},
        "optimizer": {"lr": 1e-2},
        "data": {"train": {"name": "SyntheticOCTA", "kwargs": data},
                 "val": {"name": "SyntheticOCTA", "kwargs": {**data, "length": 1, "seed": 50}}, "batch_size": 2},
        "training": {"steps": 8, "val_every": 8, "checkpoint_every": 8, "best_metric": "vessel_dice", **training},
        "logging": {"log_every": 1, "overlays": 1, "tensorboard": False, "progress": False},
    })


@pytest.mark.parametrize("weights, model", [({"vessel": 1.0, "faz": 0.5}, "twoheadunet"), ("s2anet", "twoheadunet"),
                                           ("s2anet", "vesselfaznet")])
def test_named_outputs_train_with_a_loss_each(tmp_path, weights, model):
    trainer = Trainer(two_task_config(weights, model), tmp_path / "run")
    trainer.fit()
    for task in ("vessel", "faz"):  # each task learns (the total's balance moves with the epoch under s2anet)
        losses = [r[f"loss_{task}"] for r in trainer.rows if "loss" in r]
        assert len(losses) == 8 and np.mean(losses[-2:]) < np.mean(losses[:2]), task
    scores = next(r for r in trainer.rows if "val_vessel_dice" in r)
    assert {"val_vessel_dice", "val_faz_dice", "val_vessel_cldice", "val_faz_betti0_error"} <= set(scores)
    # the loss equals MultiTaskLoss on the two mask channels (s2anet: with the current epoch's balance)
    model = trainer.model.eval()
    batch = trainer.train_set[0]
    output, mask = model(batch["image"][None]), batch["mask"][None]
    expected, _ = trainer.loss_fn(output, {"vessel": mask[:, :1], "faz": mask[:, 1:]}, epoch=trainer.epoch)
    torch.testing.assert_close(trainer._loss(output, mask), expected)


def test_named_output_config_errors(tmp_path):
    bad_channel = two_task_config(None)
    bad_channel.loss.tasks["faz"].channel = 5
    with pytest.raises(ConfigError, match="loss.tasks.faz.channel is 5"):
        Trainer(bad_channel, tmp_path / "a").fit()
    no_tasks = two_task_config(None)
    no_tasks.loss.tasks = None
    no_tasks.loss.name = "DiceLoss"
    with pytest.raises(ConfigError, match="give each its loss in loss.tasks"):
        Trainer(no_tasks, tmp_path / "b").fit()
    with pytest.raises(ConfigError, match="loss.task_weights"):
        Trainer(two_task_config({"vessel": 1.0}), tmp_path / "c")
    with pytest.raises(ConfigError, match="unknown key loss.tasks.faz.weight"):
        TrainConfig.from_dict({"loss": {"tasks": {"faz": {"name": "DiceLoss", "weight": 2}}}}).validate()
    with pytest.raises(ConfigError, match="loss.tasks.faz.channel must be int"):
        TrainConfig.from_dict({"loss": {"tasks": {"faz": {"name": "DiceLoss", "channel": "one"}}}})
    with pytest.raises(ConfigError, match="loss.tasks.faz.name is required"):
        TrainConfig.from_dict({"loss": {"tasks": {"faz": {"channel": 1}}}})
    with pytest.raises(ConfigError, match="loss.tasks.faz.channel must be an integer >= 0"):
        TrainConfig.from_dict({"loss": {"tasks": {"faz": {"name": "DiceLoss", "channel": -1}}}}).validate()
    config = two_task_config("s2anet")
    assert TrainConfig.from_yaml(config.to_yaml()) == config  # tasks round-trip
    nested = two_task_config(None)
    nested.loss.tasks["faz"].name = "MultiTaskLoss"
    with pytest.raises(ConfigError, match="loss.tasks.faz.name: 'MultiTaskLoss' is not"):
        Trainer(nested, tmp_path / "e")


@pytest.mark.parametrize("amp", ["bfloat16", "float16"])
def test_mixed_precision_trains(tmp_path, amp):
    """bfloat16 autocast, and float16 with a gradient scaler (its state in the checkpoint), on the CPU."""
    trainer = Trainer(tiny_config(steps=6, val_every=6, ema=None, amp=amp), tmp_path / amp)
    summary = trainer.fit()
    losses = [r["loss"] for r in trainer.rows if "loss" in r]
    assert summary["steps"] == 6 and all(np.isfinite(losses))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32
    state = read_checkpoint(tmp_path / amp / "checkpoint.pt")
    assert state["scaler"] == trainer.scaler.state_dict()
    assert bool(state["scaler"]) == (amp == "float16")  # a scaler only for float16


def test_tensorboard_events_hold_the_logged_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(steps=4, val_every=2)
    config.logging.tensorboard = True
    Trainer(config, tmp_path / "run").fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "val_dice", "val_cldice"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val_dice")] == [2, 4]


def test_predict_writes_each_named_output_with_its_measurements(tmp_path):
    Trainer(two_task_config(None, steps=2, val_every=2, checkpoint_every=2), tmp_path / "run").fit()
    image_files.write_image(tmp_path / "in" / "scan.png", (np.random.default_rng(0).random((36, 40)) * 255).astype(np.uint8))
    assert cli.main(["predict", str(tmp_path / "in"), "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out",
                     str(tmp_path / "pred"), "--pixel-mm", "0.01"]) == 0
    for name in ("vessel", "faz"):
        assert (tmp_path / "pred" / name / "mask" / "scan.png").is_file()
    line = json.loads((tmp_path / "pred" / "measurements.jsonl").read_text())
    assert "fractal_dimension" in line["vessel"] and "acircularity_index" in line["faz"]
    # the FAZ's area is its largest component's, the one its shape measures describe, not the whole mask's
    faz = image_files.read_image(tmp_path / "pred" / "faz" / "mask" / "scan.png") > 0
    from retina.biomarkers import faz_measurements
    assert line["faz"]["area_mm2"] == pytest.approx(faz_measurements(faz, 0.01)["area_mm2"])
    assert line["faz"]["area_fraction"] == pytest.approx(faz.mean())
    assert "vessel_density" not in line["faz"] and "skeleton_pixels" not in line["faz"]
    # a FAZ of 21x21 = 441 px and a 3x3 speck: the area is the zone's, the fraction counts both
    from retina.predict import _outputs, _write_output
    logits = torch.full((1, 40, 40), -5.0)
    logits[0, 5:26, 5:26] = 5.0
    logits[0, 33:36, 33:36] = 5.0
    measured = _write_output(logits, np.zeros((40, 40), np.uint8), _outputs(tmp_path / "unit", "x"), 0.5, 0.01, 8, "faz")
    assert measured["area_mm2"] == pytest.approx(441 * 1e-4) and measured["components"] == 2
    assert measured["area_fraction"] == pytest.approx(450 / 1600)
    header = (tmp_path / "pred" / "measurements.csv").read_text().splitlines()[0]
    assert "vessel.vessel_area_density" in header and "faz.area_mm2" in header


def test_predict_reports_finished_images_then_the_end(tmp_path):
    from retina.predict import predict_files

    for name in ("a", "b"):
        image_files.write_image(tmp_path / "images" / f"{name}.png", np.zeros((20, 24), np.uint8))
    seen = []
    predict_files(retina.models.UNet(1, 1, width=4, depth=2), [tmp_path / "images"], tmp_path / "out",
                  progress=lambda done, total, stem: seen.append((done, total, stem)))
    assert seen == [(0, 2, "a"), (1, 2, "b"), (2, 2, "")]


def test_out_of_memory_in_training_says_what_to_set(tmp_path):
    trainer = Trainer(tiny_config(steps=6, checkpoint_every=2, val_every=100), tmp_path / "run")
    forward, calls = trainer.net.forward, []

    def forward_until_the_third_step(x):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)

    trainer.net.forward = forward_until_the_third_step
    with pytest.raises(MemoryError, match=r"out of memory on cpu at training step 3 \(2 x 32² per step\): .*"
                                          r"data.patch=auto training.memory_budget=.*training.checkpointing=true.*"
                                          r"resume from .*checkpoint.pt with --resume"):
        trainer.fit()
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    from retina.inference.memory import out_of_memory

    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"))
    assert not out_of_memory(RuntimeError("shapes cannot be multiplied"))


class _ReadCountingOCTA(retina.data.SyntheticOCTA):
    """SyntheticOCTA that appends a line to `log` at every read, from whichever process reads."""

    def __init__(self, *args, log: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def __getitem__(self, index):
        with open(self.log, "a") as f:
            f.write(f"{index}\n")
        return super().__getitem__(index)


def test_cached_data_is_read_once_with_loader_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(retina.data, "ReadCountingOCTA", _ReadCountingOCTA, raising=False)
    config = tiny_config(steps=6, val_every=100, ema=None)  # 6 samples, 3 batches of 2: two epochs
    config.data.train = retina.train.config.DatasetConfig(
        "ReadCountingOCTA", {"length": 6, "size": 48, "channels": 1, "log": str(tmp_path / "reads.txt")})
    config.data.cache, config.data.num_workers, config.data.patch = True, 2, None
    Trainer(config, tmp_path / "run").fit()
    reads = (tmp_path / "reads.txt").read_text().split()
    assert sorted(reads) == [str(i) for i in range(6)]  # before: read again by each epoch's new workers
