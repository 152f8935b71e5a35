"""retina_kernels.skeletonize: goldens, oracle agreement, topology, edge cases, dtypes, errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import retina_kernels
from retina.data import vessel_mask, vessel_volume
from retina_kernels.reference import skeletonize as reference

from .conftest import requires_cuda
from .topology import betti_2d, betti_3d


def vessels_2d(batch, height, width, seed=0):
    masks = [vessel_mask(height, width, seed=seed + i) for i in range(batch)]
    return torch.from_numpy(np.stack(masks)[:, None]).to(torch.uint8)


def vessels_3d(batch, depth, height, width, seed=0):
    vols = [vessel_volume(depth, height, width, seed=seed + i) for i in range(batch)]
    return torch.from_numpy(np.stack(vols)[:, None]).to(torch.uint8)


def has_2x2_block(mask: np.ndarray) -> bool:
    m = mask.astype(bool)
    return bool((m[:-1, :-1] & m[1:, :-1] & m[:-1, 1:] & m[1:, 1:]).any())


# ---- goldens and oracle --------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["op", "reference"])
def test_golden_five_iterations(golden, impl):
    g = golden("skeleton2d_iter5")
    mask = torch.from_numpy(g["mask"])
    fn = retina_kernels.skeletonize if impl == "op" else reference.skeletonize
    out = fn(mask, max_iter=5)
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), g["skeleton"])


@pytest.mark.parametrize(
    "shape", [(1, 1, 64, 64), (3, 1, 45, 131), (2, 1, 130, 67), (1, 1, 1, 200), (1, 1, 200, 1), (2, 1, 3, 3)]
)
@pytest.mark.parametrize("max_iter", [None, 1, 3])
def test_matches_reference_2d(shape, max_iter):
    gen = torch.Generator().manual_seed(sum(shape))
    noise = (torch.rand(shape, generator=gen) < 0.55).to(torch.uint8)
    vessels = vessels_2d(shape[0], shape[2], shape[3], seed=shape[2])
    for mask in (noise, vessels):
        ours = retina_kernels.skeletonize(mask, max_iter=max_iter)
        assert torch.equal(ours, reference.skeletonize(mask, max_iter=max_iter))


@pytest.mark.parametrize("shape", [(1, 1, 9, 10, 11), (2, 1, 16, 13, 20), (1, 1, 1, 12, 12), (1, 1, 5, 1, 7)])
@pytest.mark.parametrize("max_iter", [None, 2])
def test_matches_reference_3d(shape, max_iter):
    gen = torch.Generator().manual_seed(sum(shape))
    noise = (torch.rand(shape, generator=gen) < 0.6).to(torch.uint8)
    vessels = vessels_3d(shape[0], *shape[2:], seed=7)
    for mask in (noise, vessels):
        ours = retina_kernels.skeletonize(mask, max_iter=max_iter)
        assert torch.equal(ours, reference.skeletonize(mask, max_iter=max_iter))


def test_reference_3d_simple_test_equals_topology_invariance():
    """The exact (26, 6) simple-point test equals 'deleting the centre keeps components, cavities and
    the Euler number' on random 3x3x3 neighbourhoods — and Euler invariance alone does not."""
    rng = np.random.default_rng(0)
    codes, expected, euler_only = [], [], []
    for i in range(1500):
        cube = rng.random((3, 3, 3)) < (0.15 + 0.7 * (i % 7) / 6)
        cube[1, 1, 1] = True
        without = cube.copy()
        without[1, 1, 1] = False
        before, after = betti_3d(np.pad(cube, 1)), betti_3d(np.pad(without, 1))
        expected.append(before == after)
        euler_only.append(before[2] == after[2])
        codes.append(sum(int(b) << k for k, b in enumerate(cube.reshape(-1))))
    fast = reference.simple_3d(torch.tensor(codes)).numpy()
    np.testing.assert_array_equal(fast, np.array(expected))
    assert (np.array(euler_only) != np.array(expected)).any()


# ---- properties on vessel-like masks -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_topology_thin_and_idempotent_2d(seed):
    size = (96 + 17 * seed, 128 - 9 * seed)
    mask = vessels_2d(1, *size, seed=seed)
    skel = retina_kernels.skeletonize(mask)
    m, s = mask[0, 0].numpy(), skel[0, 0].numpy()
    assert betti_2d(s) == betti_2d(m)
    assert not has_2x2_block(s)
    assert (s <= m).all() and s.sum() < m.sum()
    assert torch.equal(retina_kernels.skeletonize(skel), skel)


@pytest.mark.parametrize("seed", range(3))
def test_topology_and_idempotent_3d(seed):
    mask = vessels_3d(1, 40, 44, 48, seed=seed)
    skel = retina_kernels.skeletonize(mask)
    m, s = mask[0, 0].numpy(), skel[0, 0].numpy()
    assert betti_3d(s) == betti_3d(m)
    assert (s <= m).all() and s.sum() < m.sum() / 2
    assert torch.equal(retina_kernels.skeletonize(skel), skel)


def test_batch_elements_are_independent():
    empty = torch.zeros(1, 1, 70, 90, dtype=torch.uint8)
    batch = torch.cat([vessels_2d(1, 70, 90, seed=3), empty, vessels_2d(1, 70, 90, seed=4)])
    out = retina_kernels.skeletonize(batch)
    for i in range(3):
        assert torch.equal(out[i : i + 1], retina_kernels.skeletonize(batch[i : i + 1]))
    vols = vessels_3d(2, 20, 21, 22, seed=5)
    out3 = retina_kernels.skeletonize(vols)
    for i in range(2):
        assert torch.equal(out3[i : i + 1], retina_kernels.skeletonize(vols[i : i + 1]))


def test_max_iter_stops_early_and_converges():
    mask = vessels_2d(1, 128, 128, seed=1)
    assert torch.equal(retina_kernels.skeletonize(mask, max_iter=0), mask)
    one = retina_kernels.skeletonize(mask, max_iter=1)
    full = retina_kernels.skeletonize(mask)
    assert mask.sum() > one.sum() > full.sum()
    assert torch.equal(retina_kernels.skeletonize(mask, max_iter=10_000), full)


# ---- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_empty_full_and_single_pixel(dims):
    shape = (1, 1, 7, 8) if dims == 2 else (1, 1, 5, 6, 7)
    empty = torch.zeros(shape, dtype=torch.uint8)
    assert torch.equal(retina_kernels.skeletonize(empty), empty)
    full = torch.ones(shape, dtype=torch.uint8)
    skel = retina_kernels.skeletonize(full)
    betti = betti_2d if dims == 2 else betti_3d
    assert betti(skel[0, 0].numpy())[:2] == (1, 0) and 0 < skel.sum() < full.sum()
    single = torch.zeros(shape, dtype=torch.uint8)
    single[(0, 0) + (2,) * dims] = 1
    assert torch.equal(retina_kernels.skeletonize(single), single)


def simple_pixels(skeleton: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(simple, neighbour count) of every pixel of a 2D 0/1 image: whether deleting a foreground pixel
    changes no component or hole (the reference's table), and how many foreground neighbours it has."""
    from retina_kernels.reference.skeletonize import _OFFSETS_2D, simple_table_2d

    padded = torch.nn.functional.pad(skeleton.to(torch.uint8), (1, 1, 1, 1))
    h, w = skeleton.shape
    neighbours = [padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx].long() for dy, dx in _OFFSETS_2D]
    code = sum(n << k for k, n in enumerate(neighbours))
    return simple_table_2d()[code] & skeleton.bool(), sum(neighbours)


@pytest.mark.parametrize("noisy", [False, True])
def test_what_remains_is_thin_and_every_2x2_block_is_a_crossing(noisy):
    """README's claim, as it is true: on large vessel-like masks a few 2x2 blocks remain, and each is made
    of non-simple pixels (a crossing: deleting any would cut the skeleton or open a hole), the blocks the
    public reference leaves too. No simple pixel with two or more neighbours remains."""
    blocks = 0
    for seed in range(2):
        mask = vessels_2d(1, 1024, 1024, seed=seed)
        if noisy:
            flip = torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed)) < 0.02
            mask = (mask.bool() ^ flip).to(torch.uint8)
        skeleton = retina_kernels.skeletonize(mask)[0, 0]
        simple, neighbours = simple_pixels(skeleton)
        assert not (simple & (neighbours >= 2)).any()
        s = skeleton.bool()
        corner = s[:-1, :-1] & s[1:, :-1] & s[:-1, 1:] & s[1:, 1:]  # top-left pixels of 2x2 blocks
        in_block = torch.zeros_like(s)
        for dy in (0, 1):
            for dx in (0, 1):
                in_block[dy : dy + corner.shape[0], dx : dx + corner.shape[1]] |= corner
        assert not (simple & in_block).any()
        blocks += int(corner.sum())
    assert blocks > 0  # they do occur: the claim "no 2x2 blocks" would be false


def test_border_touching_and_one_pixel_wide():
    mask = torch.zeros(1, 1, 20, 30, dtype=torch.uint8)
    mask[..., :4, :] = 1  # a thick band along the top border
    mask[..., :, -3:] = 1  # and down the right border
    skel = retina_kernels.skeletonize(mask)
    assert betti_2d(skel[0, 0].numpy()) == betti_2d(mask[0, 0].numpy())
    assert not has_2x2_block(skel[0, 0].numpy())
    line = torch.ones(1, 1, 1, 50, dtype=torch.uint8)  # already a skeleton: both ends are endpoints
    assert torch.equal(retina_kernels.skeletonize(line), line)
    column = torch.ones(2, 1, 33, 1, dtype=torch.uint8)
    assert torch.equal(retina_kernels.skeletonize(column), column)


@pytest.mark.parametrize("shape", [(0, 1, 16, 16), (2, 1, 0, 16), (0, 1, 4, 4, 4), (1, 1, 4, 0, 4)])
def test_empty_tensors(shape):
    out = retina_kernels.skeletonize(torch.zeros(shape, dtype=torch.float32))
    assert out.shape == shape and out.dtype == torch.float32


def test_non_contiguous_inputs():
    base = vessels_2d(2, 64, 80, seed=9)
    expected = retina_kernels.skeletonize(base.contiguous())
    transposed = base.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert not transposed.is_contiguous()
    assert torch.equal(retina_kernels.skeletonize(transposed), expected)
    strided = torch.zeros(2, 1, 128, 160, dtype=torch.uint8)
    strided[..., ::2, ::2] = base
    view = strided[..., ::2, ::2]
    assert torch.equal(retina_kernels.skeletonize(view), expected)
    channels_last = base.to(memory_format=torch.channels_last)
    assert torch.equal(retina_kernels.skeletonize(channels_last), expected)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_dtype(dtype):
    mask = vessels_2d(1, 50, 70, seed=2)
    expected = retina_kernels.skeletonize(mask)
    out = retina_kernels.skeletonize(mask.to(dtype))
    assert out.dtype == dtype and out.shape == mask.shape
    assert torch.equal(out.to(torch.uint8), expected)


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask, kwargs, error, match",
    [
        (torch.zeros(8, 8), {}, ValueError, r"mask must be \[N, 1, H, W\]"),
        (torch.zeros(1, 8, 8), {}, ValueError, r"got shape \(1, 8, 8\)"),
        (torch.zeros(1, 3, 8, 8), {}, ValueError, "exactly 1 channel"),
        (torch.full((1, 1, 4, 4), 0.5), {}, ValueError, "only 0 and 1, found 0.5"),
        (torch.full((1, 1, 4, 4), 2, dtype=torch.uint8), {}, ValueError, "only 0 and 1, found 2"),
        (torch.full((1, 1, 4, 4), float("nan")), {}, ValueError, "mask contains NaN"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int32), {}, TypeError, "mask must have dtype"),
        (np.zeros((1, 1, 4, 4)), {}, TypeError, "mask must be a torch.Tensor"),
        (torch.zeros(1, 1, 4, 4), {"max_iter": -1}, ValueError, "max_iter must be >= 0"),
        (torch.zeros(1, 1, 4, 4), {"max_iter": 2.5}, TypeError, "max_iter must be an int"),
        (torch.zeros(1, 1, 4, 4), {"max_iter": True}, TypeError, "max_iter must be an int"),
    ],
)
def test_errors_name_the_problem(mask, kwargs, error, match):
    with pytest.raises(error, match=match):
        retina_kernels.skeletonize(mask, **kwargs)


@pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")
def test_raw_op_checks_its_arguments():
    with pytest.raises(ValueError, match="must be uint8"):
        torch.ops.retina.skeletonize(torch.zeros(1, 1, 4, 4), None)
    with pytest.raises(ValueError, match="1 channel"):
        torch.ops.retina.skeletonize(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), None)
    with pytest.raises(ValueError, match="max_iter must be >= 0"):
        torch.ops.retina.skeletonize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), -3)


# ---- registration, fallback ----------------------------------------------------------------------


@pytest.mark.skipif(not retina_kernels.extension_loaded(), reason="needs the compiled extension")
@pytest.mark.parametrize("shape", [(2, 1, 19, 23), (1, 1, 6, 7, 8)])
def test_opcheck(shape):
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.uint8)
    torch.library.opcheck(torch.ops.retina.skeletonize.default, (mask, None))
    torch.library.opcheck(torch.ops.retina.skeletonize.default, (mask, 2))


def test_backends_reports_the_extension():
    info = retina_kernels.backends()
    assert info["cpu"] == ("C++" if retina_kernels.extension_loaded() else "reference")
    assert set(info) == {"extension", "cpu", "cpu threads", "cuda", "cuda soft_skeleton", "cuda dsconv2d", "triton"}


def test_fallback_without_extension_warns_once_and_agrees(tmp_path):
    script = (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import retina_kernels\n"
        "    import retina\n"
        "msgs = [str(x.message) for x in w if 'compiled extension' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert retina_kernels.backends()['cpu'] == 'reference'\n"
        "m = (torch.rand(2, 1, 30, 40, generator=torch.Generator().manual_seed(1)) < 0.5).float()\n"
        "torch.save(retina_kernels.skeletonize(m), __import__('sys').argv[1])\n"
    )
    out_path = str(tmp_path / "fallback.pt")
    env = dict(os.environ, RETINA_KERNELS_DISABLE_EXTENSION="1")
    subprocess.run([sys.executable, "-c", script, out_path], check=True, env=env)
    m = (torch.rand(2, 1, 30, 40, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    assert torch.equal(torch.load(out_path), retina_kernels.skeletonize(m))


# ---- CUDA (run on the GPU machine by scripts/gpu_check.sh) ----------------------------------------


@pytest.mark.cuda
@requires_cuda
def test_cuda_backend_is_compiled():
    assert retina_kernels.backends()["cuda"] == "CUDA"


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (3, 1, 45, 131), (2, 1, 257, 300), (1, 1, 1, 200), (4, 1, 1024, 1024)])
@pytest.mark.parametrize("max_iter", [None, 1, 5])
def test_cuda_equals_cpu_2d(shape, max_iter):
    mask = vessels_2d(shape[0], shape[2], shape[3], seed=shape[3])
    cpu = retina_kernels.skeletonize(mask, max_iter=max_iter)
    cuda = retina_kernels.skeletonize(mask.cuda(), max_iter=max_iter)
    assert cuda.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("shape", [(1, 1, 9, 10, 11), (2, 1, 40, 44, 48), (1, 1, 96, 96, 96)])
@pytest.mark.parametrize("max_iter", [None, 2])
def test_cuda_equals_cpu_3d(shape, max_iter):
    mask = vessels_3d(shape[0], *shape[2:], seed=1)
    on_cuda = retina_kernels.skeletonize(mask.cuda(), max_iter=max_iter).cpu()
    assert torch.equal(on_cuda, retina_kernels.skeletonize(mask, max_iter=max_iter))


@pytest.mark.cuda
@requires_cuda
def test_cuda_golden_dtypes_and_opcheck(golden):
    g = golden("skeleton2d_iter5")
    mask = torch.from_numpy(g["mask"]).cuda()
    np.testing.assert_array_equal(retina_kernels.skeletonize(mask, max_iter=5).cpu().numpy(), g["skeleton"])
    for dtype in (torch.bool, torch.float16, torch.bfloat16, torch.float32):
        out = retina_kernels.skeletonize(mask.to(dtype), max_iter=5)
        assert out.dtype == dtype and out.is_cuda
        np.testing.assert_array_equal(out.to(torch.uint8).cpu().numpy(), g["skeleton"])
    torch.library.opcheck(torch.ops.retina.skeletonize.default, (mask, None))
    empty = torch.zeros(0, 1, 8, 8, device="cuda", dtype=torch.uint8)
    assert retina_kernels.skeletonize(empty).shape == empty.shape
