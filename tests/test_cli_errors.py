"""Bad input to every `retina` subcommand: a clear one-line error (exit 2 for an argument, 1 for a file or
its data), no traceback, nothing half-written; and binary masks in any common encoding read correctly,
saying how they were read. Each class of error is driven through the installed console script
(`test_console_script_*`); the many variations run `retina.cli.main` in-process, the same code without a
Python start-up each (CI has 2 cores)."""

import contextlib
import io
import os
import stat
import struct
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import retina_kernels
from retina import cli, image_files
from retina.data import vessel_mask

SCRIPT = Path(sys.executable).with_name("retina")


def console_script(*args, cwd):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "retina"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def retina(*args, cwd):
    """`retina ARGS` run in-process in `cwd`: (returncode, stdout, stderr) like subprocess.run's."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as exit_:  # argparse
                code = exit_.code
            except Exception:  # --debug re-raises: what the console script would print
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def fails(done, code, *words):
    """The command exited with `code` and said one line naming each of `words`, without a traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stdout[-1000:], done.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("retina"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def mask():
    return vessel_mask(40, 48, seed=3).astype(bool)


def expected_skeleton(m):
    return retina_kernels.skeletonize(torch.from_numpy(m)[None, None])[0, 0].numpy().astype(bool)


@pytest.mark.parametrize("encoding", ["0/1 8-bit", "0/1 16-bit", "0/65535", "3 and 7", "gray as RGB", "red on black"])
def test_skeletonize_reads_every_binary_encoding(tmp_path, mask, encoding):
    image = {
        "0/1 8-bit": mask.astype(np.uint8),
        "0/1 16-bit": mask.astype(np.uint16),
        "0/65535": mask.astype(np.uint16) * 65535,
        "3 and 7": np.where(mask, 7, 3).astype(np.uint8),
        "gray as RGB": np.repeat(mask[..., None].astype(np.uint8) * 255, 3, 2),
        "red on black": np.stack([mask * 200, mask * 0, mask * 0], 2).astype(np.uint8),
    }[encoding]
    image_files.write_image(tmp_path / "m.png", image)
    done = retina("skeletonize", "m.png", "s.png", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "read as a binary mask" in done.stdout
    written = image_files.read_image(tmp_path / "s.png", grayscale=True) > 0
    assert np.array_equal(written, expected_skeleton(mask))


def test_skeletonize_threshold_is_in_the_files_own_units(tmp_path, mask):
    """--threshold on a 16-bit image compares 16-bit values (OpenCV's grayscale read made them 8-bit, so
    any threshold above 255 gave an empty skeleton); a colour image is refused, not made luminance."""
    rng = np.random.default_rng(1)
    image = np.where(mask, rng.integers(40000, 65536, mask.shape), rng.integers(0, 30000, mask.shape)).astype(np.uint16)
    image_files.write_image(tmp_path / "deep.png", image)
    assert cli.main(["skeletonize", str(tmp_path / "deep.png"), str(tmp_path / "s.png"), "--threshold", "35000",
                     "--device", "cpu"]) == 0
    assert np.array_equal(image_files.read_image(tmp_path / "s.png") > 0, expected_skeleton(mask))
    image_files.write_image(tmp_path / "rgb.png", rng.integers(0, 256, (*mask.shape, 3)).astype(np.uint8))
    fails(retina("skeletonize", "rgb.png", "s.png", "--threshold", "100", cwd=tmp_path), 1, "rgb.png",
          "a colour image, but a mask binarised by --threshold must be one channel")


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    return path


def test_skeletonize_refuses_bad_masks(tmp_path, mask):
    rng = np.random.default_rng(0)
    image_files.write_image(tmp_path / "photo.png", (rng.random((30, 30)) * 255).astype(np.uint8))
    fails(retina("skeletonize", "photo.png", "s.png", cwd=tmp_path), 1, "photo.png", "not a binary mask")
    for suffix in (".bmp", ".tif"):
        cv2.imwrite(str(tmp_path / f"cut{suffix}"), (mask * 255).astype(np.uint8))
        truncated(tmp_path / f"cut{suffix}")
        fails(retina("skeletonize", f"cut{suffix}", "s.png", cwd=tmp_path), 1, f"cut{suffix}")
    cv2.imwritemulti(str(tmp_path / "pages.tif"), [(mask * 255).astype(np.uint8)] * 2)
    fails(retina("skeletonize", "pages.tif", "s.png", cwd=tmp_path), 1, "pages.tif", "2 pages")

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)  # 3.6 G pixels declared, a few bytes of data
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                        + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    fails(retina("skeletonize", "bomb.png", "s.png", cwd=tmp_path), 1, "bomb.png")
    fails(retina("skeletonize", "missing.png", "s.png", cwd=tmp_path), 1, "missing.png")
    assert not (tmp_path / "s.png").exists()  # no partial output from any of them


def test_skeletonize_refuses_bad_outputs_and_devices(tmp_path, mask):
    image_files.write_image(tmp_path / "m.png", mask.astype(np.uint8) * 255)
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.png").mkdir()
    fails(retina("skeletonize", "m.png", "file/s.png", cwd=tmp_path), 2, "file", "not a folder")
    fails(retina("skeletonize", "m.png", "folder.png", cwd=tmp_path), 2, "folder.png", "a folder")
    fails(retina("skeletonize", "m.png", "s.xyz", cwd=tmp_path), 2, "s.xyz", "suffix")
    fails(retina("skeletonize", "m.png", "s.png", "--device", "tpu0", cwd=tmp_path), 2, "--device", "tpu0")
    fails(retina("skeletonize", "m.png", "s.png", "--device", "meta", cwd=tmp_path), 2, "--device", "meta")
    if not torch.cuda.is_available():
        fails(retina("skeletonize", "m.png", "s.png", "--device", "cuda", cwd=tmp_path), 2, "CUDA is not available")
    fails(retina("skeletonize", "m.png", "s.png", "--max-iter", "-1", cwd=tmp_path), 2, "--max-iter")
    fails(retina("skeletonize", "m.png", cwd=tmp_path), 2, "required")  # argparse, in one line too
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    done = retina("skeletonize", "m.png", "locked/s.png", cwd=tmp_path)
    if os.geteuid() == 0:  # root writes into a read-only folder, so there is nothing to refuse
        assert done.returncode == 0, done.stderr
    else:
        fails(done, 2, "locked", "not writable")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def write_pair(folder: Path, stem: str, array: np.ndarray, suffix=".png"):
    image_files.write_image(folder / f"{stem}{suffix}", array)


def test_evaluate_reads_0_1_labels_and_names_every_problem(tmp_path):
    pred, label, fov = (tmp_path / n for n in ("pred", "label", "fov"))
    masks = [vessel_mask(40, 48, seed=i).astype(bool) for i in range(3)]
    for i, m in enumerate(masks):
        write_pair(pred, f"im{i}", (m * 230).astype(np.uint8))
        write_pair(label, f"im{i}", m.astype(np.uint8))  # 0/1: read as binary, not as empty
        write_pair(fov, f"im{i}", np.full(m.shape, 255, np.uint8))
    done = retina("evaluate", "pred", "label", "--protocol", "retina", "--out", "ev", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "dice: 1.0000" in done.stdout and "values {0, 1}" in done.stdout
    # a mixed-size pair is scored on its own
    write_pair(pred, "big", (vessel_mask(64, 50, seed=9) * 230).astype(np.uint8))
    write_pair(label, "big", vessel_mask(64, 50, seed=9).astype(np.uint8) * 255)
    assert retina("evaluate", "pred", "label", "--out", "ev2", cwd=tmp_path).returncode == 0
    # a label without a prediction
    write_pair(label, "lonely", masks[0].astype(np.uint8))
    fails(retina("evaluate", "pred", "label", "--out", "ev3", cwd=tmp_path), 1, "lonely", "--allow-missing")
    assert not (tmp_path / "ev3").exists()
    done = retina("evaluate", "pred", "label", "--allow-missing", "--out", "ev3", cwd=tmp_path)
    assert done.returncode == 0 and "1 have no prediction" in done.stdout, done.stderr
    (label / "lonely.png").unlink()
    # two files with one stem
    write_pair(pred, "im0", (masks[0] * 230).astype(np.uint8), ".bmp")
    fails(retina("evaluate", "pred", "label", cwd=tmp_path), 1, "im0.bmp", "im0.png")
    (pred / "im0.bmp").unlink()
    # FOV problems
    fails(retina("evaluate", "pred", "label", "--fov", "fov", "--protocol", "iternet", cwd=tmp_path), 1, "big")
    write_pair(fov, "big", np.full((10, 10), 255, np.uint8))
    fails(retina("evaluate", "pred", "label", "--fov", "fov", "--protocol", "iternet", cwd=tmp_path), 1,
          "big.png", "FOV mask is 10x10")
    # arguments
    fails(retina("evaluate", "pred", "label", "--threshold", "1.5", cwd=tmp_path), 2, "--threshold")
    fails(retina("evaluate", "pred", "label", "--min-area", "-3", cwd=tmp_path), 2, "--min-area")
    fails(retina("evaluate", "pred", "label", "--min-percent", "101", cwd=tmp_path), 2, "--min-percent")
    fails(retina("evaluate", "pred", "nowhere", cwd=tmp_path), 2, "nowhere")
    (tmp_path / "taken").write_text("x")
    fails(retina("evaluate", "pred", "label", "--out", "taken", cwd=tmp_path), 2, "taken", "not a folder")


def test_other_subcommands_refuse_bad_arguments(tmp_path):
    (tmp_path / "taken").write_text("x")
    fails(retina("synthesize", "out", "--count", "0", cwd=tmp_path), 2, "--count")
    fails(retina("synthesize", "taken", "--count", "1", cwd=tmp_path), 2, "taken")
    fails(retina("convert-vgg", "none.json", "images", "out", "--classes", "a,b", cwd=tmp_path), 1, "none.json")
    fails(retina("demo", "--device", "meta", cwd=tmp_path), 2, "--device")
    fails(retina("nonsense", cwd=tmp_path), 2, "invalid choice")


def test_atomic_writer_replaces_only_regular_files_and_keeps_the_umask(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        image_files.write_bytes_atomic(fifo, b"data")
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still a pipe
    with pytest.raises(ValueError, match="a folder"):
        image_files.write_bytes_atomic(tmp_path, b"data")
    old = os.umask(0o027)
    try:
        written = image_files.write_bytes_atomic(tmp_path / "new.txt", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o640
    written.chmod(0o604)
    image_files.write_bytes_atomic(written, b"again")  # replacing keeps the file's mode
    assert stat.S_IMODE(written.stat().st_mode) == 0o604 and written.read_bytes() == b"again"


def test_console_script_exit_codes_and_one_line_errors(tmp_path, mask):
    image_files.write_image(tmp_path / "m.png", mask.astype(np.uint8))  # 0/1
    done = console_script("skeletonize", "m.png", "s.png", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0 and "values {0, 1}" in done.stdout, done.stderr
    image_files.write_image(tmp_path / "photo.png", np.arange(256, dtype=np.uint8).reshape(16, 16))
    fails(console_script("skeletonize", "photo.png", "t.png", cwd=tmp_path), 1, "photo.png", "not a binary mask")
    fails(console_script("skeletonize", "m.png", "t.xyz", cwd=tmp_path), 2, "suffix")
    fails(console_script("evaluate", "nowhere", "nowhere", cwd=tmp_path), 2, "nowhere")
    fails(console_script("frobnicate", cwd=tmp_path), 2, "invalid choice")
    done = console_script("--debug", "skeletonize", "missing.png", "s.png", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr
