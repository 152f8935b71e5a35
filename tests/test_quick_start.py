"""README's quick start: its demo command is the first thing a new user runs, so it is run here as the
README writes it (through the installed `retina` console script), with the `retina` commands no other
test covers (skeletonize, info) and README's python examples."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import retina_kernels
from retina import io

ROOT = Path(__file__).parents[1]


def readme_blocks(language: str) -> list[str]:
    """The fenced ```language code blocks of README.md."""
    return re.findall(rf"```{language}\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def readme_demo_command() -> list[str]:
    """The demo command of README's quick start, after its setup step: e.g. [".venv/bin/retina", "demo"]."""
    demo = [line for block in readme_blocks("bash") for line in block.splitlines() if line.rstrip().endswith(" demo")]
    assert len(demo) == 1, f"README.md should have one quick-start line ending in ' demo', found {demo}"
    return shlex.split(demo[0].split("&&")[-1])


def retina_command() -> list[str]:
    """The installed console script beside this interpreter (setup_env.sh and pip install put it there),
    as README's `.venv/bin/retina`; `python -m retina` where the package is only on the path."""
    script = shutil.which("retina", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "retina"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_readme_demo_command_trains_models_that_segment(tmp_path):
    """README's demo, with a short budget: it trains DSCNet with clDice and with Dice, writes everything it
    says, and the clDice-trained model beats chance on its test images."""
    program, *args = readme_demo_command()
    assert Path(program).name == "retina" and args == ["demo"], (program, args)
    done = run([*retina_command(), *args, "--minutes", "0.3", "--device", "cpu"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "demo_output"  # the default, in the working directory
    assert "| IBPclDiceLoss |" in done.stdout and "demo_output" in done.stdout
    assert " validation: dice " in done.stdout  # the user watches each run's validations
    assert "next: segment your images with a demo model (retina predict IMAGES --checkpoint" in done.stdout
    results = json.loads((out / "metrics.json").read_text())
    assert set(results) == {"clDice", "Dice"} and (out / "metrics.md").is_file()
    for run_dir in ("dscnet_cldice", "dscnet_dice"):
        folder = out / run_dir
        for name in ("best.pt", "checkpoint.pt", "config.yaml", "log.csv", "curves.png", "test/measurements.jsonl"):
            assert (folder / name).is_file(), folder / name
        assert list((folder / "overlays").glob("*.png"))
        for kind in ("prob", "mask", "overlay", "skeleton"):
            assert len(list((folder / "test" / kind).glob("*.png"))) == 6
    labels = [io.read_image(p) > 0 for p in sorted((out / "test" / "labels").glob("*.png"))]
    chance = float(np.mean([label.mean() for label in labels]))  # the Dice of a coin with the vessels' rate
    assert results["clDice"]["dice"] > chance + 0.1, (results, chance)


def test_demo_fundus_segments_the_real_photograph(tmp_path):
    from retina.demo import run_demo

    results = run_demo(tmp_path / "demo", minutes=0.05, kind="fundus", device="cpu", say=lambda line: None)
    assert set(results) == {"clDice", "Dice"}
    overlay = io.read_image(tmp_path / "demo" / "real_fundus" / "overlay" / "retina.png")
    assert overlay.shape == (512, 512, 3)
    # a second demo into the same folder trains on from the first and predicts with the new weights
    manifest = tmp_path / "demo" / "dscnet_dice" / "test" / "predict.json"
    first = manifest.read_text()
    run_demo(tmp_path / "demo", minutes=0.05, kind="fundus", device="cpu", say=lambda line: None)
    assert manifest.read_text() != first


def test_skeletonize_command_writes_the_op_skeleton(tmp_path):
    rng = np.random.default_rng(3)
    mask = np.zeros((40, 56), np.uint8)
    mask[8:30, 5:50] = 255
    mask[rng.random(mask.shape) < 0.05] = 0  # holes the skeleton must keep
    io.write_image(tmp_path / "mask.png", mask)
    done = run([*retina_command(), "skeletonize", "mask.png", "skeleton.png", "--device", "cpu"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    written = io.read_image(tmp_path / "skeleton.png", grayscale=True)
    expected = retina_kernels.skeletonize(torch.from_numpy(mask > 127)[None, None])[0, 0].numpy()
    assert set(np.unique(written)) <= {0, 255}
    assert np.array_equal(written > 127, expected)


def test_info_command_lists_the_backends(tmp_path):
    done = run([*retina_command(), "info"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    import retina

    assert printed.pop("retina") == retina.__version__ and printed.pop("torch") == torch.__version__
    for key in ("python", "numpy", "opencv"):  # what a bug report needs
        assert printed.pop(key)
    expected = retina_kernels.backends()
    assert printed.keys() == expected.keys()
    # "cpu threads" reports torch.get_num_threads() of the process that asks, which tests may have changed.
    del printed["cpu threads"], expected["cpu threads"]
    assert printed == expected


def test_version_option_names_the_stack(capsys):
    import retina
    from retina import cli

    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"retina {retina.__version__} (torch {torch.__version__}, python ")


def test_readme_python_examples_run():
    blocks = readme_blocks("python")
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
