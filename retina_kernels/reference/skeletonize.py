"""Reference of docs/skeletonize.md on any device: same schedule as the kernels, simple points by an explicit
flood fill of each neighbourhood rather than the kernels' bit tricks."""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F

# 2D neighbour k of the 8-bit code sits at this (dy, dx).
_OFFSETS_2D = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
# (row parity, column parity) of the four 2D sub-passes.
_SUBPASSES_2D = ((1, 1), (0, 1), (1, 0), (0, 0))


def _components(cells: set, adjacent, touching=lambda c: True) -> int:
    """Number of components of `cells` under `adjacent` that contain a cell satisfying `touching`."""
    cells, count = set(cells), 0
    while cells:
        stack = [cells.pop()]
        component = list(stack)
        while stack:
            a = stack.pop()
            near = {b for b in cells if adjacent(a, b)}
            cells -= near
            stack.extend(near)
            component.extend(near)
        count += any(touching(c) for c in component)
    return count


@functools.lru_cache(maxsize=None)
def simple_table_2d() -> torch.Tensor:
    """bool[256]: is the centre simple for (8, 4) connectivity, given its 8 neighbours as a code?"""
    king = lambda a, b: max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1  # noqa: E731
    rook = lambda a, b: abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1  # noqa: E731
    table = []
    for code in range(256):
        fg = {o for k, o in enumerate(_OFFSETS_2D) if code >> k & 1}
        bg = set(_OFFSETS_2D) - fg
        face = lambda c: abs(c[0]) + abs(c[1]) == 1  # noqa: E731
        table.append(_components(fg, king) == 1 and _components(bg, rook, face) == 1)
    return torch.tensor(table)


def _neighbours_2d(padded: torch.Tensor, rp: int, cp: int, h: int, w: int) -> list[torch.Tensor]:
    """The 8 neighbours of the pixels of parity (rp, cp), from a 1-padded [N, 1, H+2, W+2] image."""
    return [padded[:, :, 1 + rp + dy : h + 1 + dy : 2, 1 + cp + dx : w + 1 + dx : 2] for dy, dx in _OFFSETS_2D]


def _peel_2d(x: torch.Tensor, max_iter: int | None, halvings: torch.Tensor | None = None) -> torch.Tensor:
    """The 2D schedule on x (uint8 0/1, modified in place). With `halvings` (uint8, zeros) it also counts
    each pixel's gradient-factor halvings (docs/differentiable_skeleton.md) and runs exactly max_iter iterations; deleted
    pixels end at 255."""
    h, w = x.shape[-2:]
    table = simple_table_2d().to(x.device)
    deleted = torch.zeros_like(x, dtype=torch.bool) if halvings is not None else None
    t = 0
    while max_iter is None or t < max_iter:
        t += 1
        padded = F.pad(x, (1, 1, 1, 1))
        neighbours = sum(padded[:, :, 1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx].long() for dy, dx in _OFFSETS_2D)
        two_or_more = neighbours >= 2  # a foreground pixel with fewer is an endpoint
        changed = False
        for rp, cp in _SUBPASSES_2D:
            padded = F.pad(x, (1, 1, 1, 1))
            code = sum(n.long() << k for k, n in enumerate(_neighbours_2d(padded, rp, cp, h, w)))
            centre = x[:, :, rp::2, cp::2]
            two = two_or_more[:, :, rp::2, cp::2]
            delete = (centre == 1) & table[code] & two
            if halvings is not None:
                # min(x, 1 - d) ties: x = 1 kept (d = 0), and x = 0 with d = 1 (background counts as simple).
                half = ((centre == 1) & ~delete) | ((centre == 0) & two)
                halvings[:, :, rp::2, cp::2] += half.to(torch.uint8)
                deleted[:, :, rp::2, cp::2] |= delete
            if bool(delete.any()):
                changed = True
                x[:, :, rp::2, cp::2] = torch.where(delete, torch.zeros_like(centre), centre)
        if not changed and halvings is None:
            break
    if halvings is not None:
        halvings[deleted] = 255
    return x


# ---- 3D ---------------------------------------------------------------------------------------------

_CUBE = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # bit i = _CUBE[i]
_CENTRE = 1 << 13


def _mask_of(pred) -> int:
    return sum(1 << i for i, c in enumerate(_CUBE) if pred(c))


def _adjacency(max_steps: int, l1_limit: int) -> list[int]:
    """For every cell, the cube cells adjacent to it (Chebyshev distance 1, L1 distance <= l1_limit)."""
    out = []
    for a in _CUBE:
        out.append(
            _mask_of(
                lambda b: max(abs(a[i] - b[i]) for i in range(3)) == max_steps
                and sum(abs(a[i] - b[i]) for i in range(3)) <= l1_limit
            )
        )
    return out


_ADJ26 = _adjacency(1, 3)
_ADJ6 = _adjacency(1, 1)
_FACES = _mask_of(lambda c: sum(map(abs, c)) == 1)
_N18 = _mask_of(lambda c: sum(map(abs, c)) in (1, 2))
_FULL = (1 << 27) - 1


def _grow(seed: torch.Tensor, allowed: torch.Tensor, adjacency: list[int]) -> torch.Tensor:
    """Flood fill, vectorised over neighbourhoods: all cells of `allowed` connected to `seed`."""
    reach = seed
    while True:
        grown = reach.clone()
        for i, adj in enumerate(adjacency):
            grown |= ((reach >> i) & 1) * adj
        grown &= allowed
        if torch.equal(grown, reach):
            return reach
        reach = grown


def simple_3d(code: torch.Tensor) -> torch.Tensor:
    """Is the centre of each 27-bit neighbourhood code (int64) simple for (26, 6) connectivity?"""
    fg = code & (_FULL & ~_CENTRE)
    fg_one = (fg != 0) & (_grow(fg & -fg, fg, _ADJ26) == fg)
    bg = ~code & _N18
    bg_faces = bg & _FACES
    bg_one = (bg_faces != 0) & ((bg_faces & ~_grow(bg_faces & -bg_faces, bg, _ADJ6)) == 0)
    return fg_one & bg_one


def _subpasses_3d():
    # The reference loops padded-volume offsets (0,0,0), (1,0,0), (0,1,0), ... with z fastest; an offset
    # o selects image parity 1 - o.
    for ox, oy, oz in itertools.product((0, 1), repeat=3):
        yield 1 - oz, 1 - oy, 1 - ox


def _skeletonize_3d(x: torch.Tensor, max_iter: int | None) -> torch.Tensor:
    d, h, w = x.shape[-3:]
    t = 0
    while max_iter is None or t < max_iter:
        t += 1
        padded = F.pad(x, (1, 1, 1, 1, 1, 1)).long()
        count = sum(
            padded[:, :, 1 + a : d + 1 + a, 1 + b : h + 1 + b, 1 + c : w + 1 + c]
            for a, b, c in _CUBE
            if (a, b, c) != (0, 0, 0)
        )
        endpoint = count <= 1
        changed = False
        for pz, py, px in _subpasses_3d():
            centre = x[:, :, pz::2, py::2, px::2]
            if centre.numel() == 0:
                continue
            padded = F.pad(x, (1, 1, 1, 1, 1, 1)).long()
            code = sum(
                padded[:, :, 1 + pz + a : d + 1 + a : 2, 1 + py + b : h + 1 + b : 2, 1 + px + c : w + 1 + c : 2] << i
                for i, (a, b, c) in enumerate(_CUBE)
            )
            delete = (centre == 1) & ~endpoint[:, :, pz::2, py::2, px::2] & simple_3d(code)
            if bool(delete.any()):
                changed = True
                x[:, :, pz::2, py::2, px::2] = torch.where(delete, torch.zeros_like(centre), centre)
        if not changed:
            break
    return x


def skeletonize(mask: torch.Tensor, *, max_iter: int | None = None) -> torch.Tensor:
    """Reference of `retina_kernels.skeletonize` for a uint8 [N,1,H,W] / [N,1,D,H,W] mask of 0/1."""
    x = (mask != 0).to(torch.uint8).contiguous()
    if x.numel() == 0 or max_iter == 0:
        return x
    return _peel_2d(x, max_iter) if x.dim() == 4 else _skeletonize_3d(x, max_iter)


def skeleton_factors(mask: torch.Tensor, num_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of `torch.ops.retina.skeleton_factors`: (skeleton, halvings) of a uint8 [N,1,H,W] mask."""
    x = (mask != 0).to(torch.uint8).contiguous()
    halvings = torch.zeros_like(x)
    if x.numel() == 0 or num_iter == 0:
        return x, halvings
    return _peel_2d(x, num_iter, halvings), halvings
