"""Data-parallel training: `torchrun --nproc_per_node 2 -m retina train` on the CPU (gloo) gives the losses
and weights of one process with the same global batch; only rank 0 writes the run; resume works the same."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from retina.train import TrainConfig, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def config(batch_size: int) -> TrainConfig:
    data = {"length": 8, "size": 32, "channels": 1}
    return TrainConfig.from_dict({
        "model": {"name": "unet", "kwargs": {"in_channels": 1, "width": 4, "depth": 2}},
        "loss": {"name": "DiceCELoss", "kwargs": {"sigmoid": True}},
        "optimizer": {"name": "adamw", "lr": 1e-2},
        "scheduler": {"name": "constant"},  # so that a 3-step run's end is a 6-step run's step 3 (resume below)
        "data": {"train": {"name": "SyntheticOCTA", "kwargs": data},
                 "val": {"name": "SyntheticOCTA", "kwargs": {**data, "length": 3, "seed": 40}},
                 "batch_size": batch_size},
        "training": {"steps": 6, "val_every": 3, "checkpoint_every": 3, "ema": 0.5},
        "logging": {"log_every": 1, "overlays": 1, "tensorboard": False, "progress": False},
    })


def retina_train(config_path: Path, out: Path, processes: int, *extra: str) -> None:
    command = [sys.executable, "-m", "retina", "train", str(config_path), "--out", str(out), *extra]
    if processes > 1:
        command[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "retina"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and torch_teardown_abort(result):
        # In two CI runs (2026-12-06, torch 2.13, 2 cores) rank 1 aborted in teardown after the run had
        # finished and rank 0 had written it; not reproduced in 60 local launches, some under load. The
        # run's results are what this test checks (below), so that abort alone does not fail it.
        warnings.warn(f"torchrun: a rank aborted in teardown after the run finished:\n{result.stderr[-1500:]}",
                      stacklevel=2)
        return
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def torch_teardown_abort(result: subprocess.CompletedProcess, finished_line: str = "trained ") -> bool:
    """Whether the run finished (rank 0 reported it, after every rank's final barrier: a stdout line
    starting `finished_line`) and a rank then aborted with C++'s terminate outside any exception, i.e.
    while the process was being torn down."""
    finished = f"\n{finished_line}" in "\n" + result.stdout
    before, _, after = result.stderr.partition("terminate called without an active exception")
    return finished and bool(after) and "Traceback" not in before


def logged(out: Path, key: str) -> list[float]:
    import csv

    with (out / "log.csv").open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_two_gloo_processes_equal_one_process_with_the_global_batch(tmp_path):
    config(1).save(tmp_path / "ddp.yaml")
    config(2).save(tmp_path / "single.yaml")
    retina_train(tmp_path / "ddp.yaml", tmp_path / "ddp", 2)
    retina_train(tmp_path / "single.yaml", tmp_path / "single", 1)
    np.testing.assert_allclose(logged(tmp_path / "ddp", "loss"), logged(tmp_path / "single", "loss"), rtol=1e-5)
    # validation: 3 images shared out over 2 ranks, gathered: the same means
    np.testing.assert_allclose(logged(tmp_path / "ddp", "val_dice"), logged(tmp_path / "single", "val_dice"), rtol=1e-5)
    ddp, single = (read_checkpoint(tmp_path / run / "checkpoint.pt") for run in ("ddp", "single"))
    assert ddp["step"] == single["step"] == 6
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # only rank 0 wrote: one set of files, no stray temporaries
    names = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert names == ["best.pt", "checkpoint.pt", "config.yaml", "curves.png", "log.csv", "overlays", "samples.json"]

    # resume under torchrun continues from the checkpoint to the same end as the uninterrupted run
    retina_train(tmp_path / "ddp.yaml", tmp_path / "ddp2", 2, "training.steps=3")
    longer = (tmp_path / "ddp2" / "config.yaml").read_text().replace("steps: 3", "steps: 6")
    (tmp_path / "ddp2" / "config.yaml").write_text(longer)
    state = read_checkpoint(tmp_path / "ddp2" / "checkpoint.pt")
    state["config"]["training"]["steps"] = 6  # as if the 6-step run had been killed at step 3
    torch.save(state, tmp_path / "ddp2" / "checkpoint.pt")
    retina_train(tmp_path / "ddp2" / "config.yaml", tmp_path / "ddp2", 2, "--resume")
    np.testing.assert_allclose(logged(tmp_path / "ddp2", "loss"), logged(tmp_path / "ddp", "loss"), rtol=1e-6)


def test_predict_under_torchrun_shares_out_the_files_and_agrees_with_one_process(tmp_path):
    """Each rank segments every second file; rank 0 writes the jsonl of all; the images equal a single
    process's; a rerun with another threshold is refused on every rank (the manifest), --overwrite redoes."""
    from retina import image_files

    one_step = config(2)
    one_step.training.steps, one_step.data.val = 1, None
    one_step.save(tmp_path / "c.yaml")
    retina_train(tmp_path / "c.yaml", tmp_path / "run", 1)
    for i in range(5):
        image_files.write_image(tmp_path / "in" / f"scan{i}.png",
                                (np.random.default_rng(i).random((24, 28)) * 255).astype(np.uint8))

    def retina_predict(out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "retina", "predict", str(tmp_path / "in"), "--checkpoint",
                   str(tmp_path / "run" / "checkpoint.pt"), "--out", str(out), "--device", "cpu", *extra]
        if processes > 1:
            command[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m",
                            "retina"]
        return subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True, timeout=300)

    for out, processes in ((tmp_path / "one", 1), (tmp_path / "two", 2)):
        done = retina_predict(out, processes)
        assert done.returncode == 0 or torch_teardown_abort(done, "wrote prob/"), done.stderr[-3000:]
    lines = (tmp_path / "two" / "measurements.jsonl").read_text().splitlines()
    assert [line.split('"id": "')[1].split('"')[0] for line in lines] == [f"scan{i}" for i in range(5)]
    for i in range(5):
        for kind in ("prob", "mask"):
            assert np.array_equal(image_files.read_image(tmp_path / "two" / kind / f"scan{i}.png"),
                                  image_files.read_image(tmp_path / "one" / kind / f"scan{i}.png")), (kind, i)
    refused = retina_predict(tmp_path / "two", 2, "--threshold", "0.3")
    assert refused.returncode != 0 and "holds predictions made with other threshold" in refused.stderr
    redone = retina_predict(tmp_path / "two", 2, "--threshold", "0.3", "--overwrite")
    assert redone.returncode == 0 or torch_teardown_abort(redone, "wrote prob/"), redone.stderr[-3000:]
    assert '"threshold": 0.3' in (tmp_path / "two" / "predict.json").read_text()
