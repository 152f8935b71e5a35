"""Betti numbers (docs/metrics.md) and the Euler characteristic, on torch tensors (CPU or GPU).

Connectivity, fixed: 2D foreground 8-connected, background 4-connected; 3D foreground 26-connected,
background 6-connected. β0 = foreground components; the last Betti number counts the components of the
background padded by one (so the outside is one component) minus one; 3D β1 follows from the Euler
characteristic, χ = β0 - β1 + β2.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def _cell_count(mask: torch.Tensor, extent: tuple[int, ...]) -> torch.Tensor:
    """Cells of the closed-cube complex with the given extent per axis (1 = the cell spans that axis, 0 =
    it sits on a lattice plane), counted per image: a cell is present when any voxel touching it is."""
    dims = mask.dim() - 1
    x = mask.float().unsqueeze(1)
    # A lattice-plane coordinate touches the voxels on both sides: max-pool 2 wide over padding 1.
    kernel = tuple(1 if e else 2 for e in extent)
    padding = tuple(0 if e else 1 for e in extent)
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    present = pool(x, kernel, stride=1, padding=padding)
    return present.flatten(1).sum(1)


def _euler(mask: torch.Tensor) -> torch.Tensor:
    dims = mask.dim() - 1
    total = torch.zeros(mask.shape[0], device=mask.device)
    for extent in itertools.product((0, 1), repeat=dims):
        total += (-1) ** sum(extent) * _cell_count(mask, extent)
    return total.round().long()


def _components(mask: torch.Tensor, full: bool) -> torch.Tensor:
    """Connected components per image: OpenCV's labelling for 2D CPU masks (fast), else propagation."""
    if mask.dim() == 3 and mask.device.type == "cpu":
        connectivity = 8 if full else 4
        counts = [cv2.connectedComponents(m.astype(np.uint8), connectivity=connectivity)[0] - 1
                  for m in mask.numpy()]
        return torch.tensor(counts, dtype=torch.long)
    return _propagated_components(mask, full)


def _propagated_components(mask: torch.Tensor, full: bool) -> torch.Tensor:
    """Connected components per image of a bool [N, *spatial] mask: full (8/26) or face (4/6) adjacency.
    Every pixel starts with its own index; each round takes the max over the neighbours, then jumps to
    the label of the pixel its label names (pointer jumping: long vessels converge in a few dozen
    rounds, not one round per pixel of their length). Works on any device."""
    n = mask.shape[0]
    dims = mask.dim() - 1
    if mask.numel() == 0:
        return torch.zeros(n, dtype=torch.long, device=mask.device)
    # float64 labels: exact pixel indices far beyond float32's 2^24.
    index = torch.arange(1, mask[0].numel() + 1, device=mask.device, dtype=torch.float64).view(mask.shape[1:])
    zero = torch.zeros((), device=mask.device, dtype=torch.float64)
    labels = torch.where(mask, index.expand_as(mask), zero).unsqueeze(1)
    fg = mask.unsqueeze(1)
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    while True:
        if full:
            grown = pool(labels, 3, stride=1, padding=1)
        else:
            grown = labels
            for axis in range(dims):
                kernel = tuple(3 if a == axis else 1 for a in range(dims))
                padding = tuple(1 if a == axis else 0 for a in range(dims))
                grown = torch.maximum(grown, pool(labels, kernel, stride=1, padding=padding))
        grown = torch.where(fg, grown, zero)
        flat = grown.flatten(1)
        jumped = torch.gather(flat, 1, (flat.long() - 1).clamp(min=0)).view_as(grown)
        grown = torch.where(fg, torch.maximum(grown, jumped), grown)
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels.flatten(1)
    # A component's label is its largest pixel index: count the pixels that carry their own index.
    return ((flat == index.flatten().unsqueeze(0)) & (flat > 0)).sum(1)


def betti_numbers(mask: torch.Tensor) -> torch.Tensor:
    """Betti numbers of binary masks.

    Args:
        mask: [H, W], [N, H, W] or [N, 1, H, W] (2D) — or [D, H, W] with a leading batch and channel,
            [N, 1, D, H, W] (3D); bool / integer / floating 0-1 (nonzero = foreground).

    Returns:
        long [N, 2] (β0, β1) in 2D, [N, 3] (β0, β1, β2) in 3D ([2] / [3] for a single unbatched 2D mask).
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    single = mask.dim() == 2
    if mask.dim() == 2:
        mask = mask[None]
    elif mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    elif mask.dim() == 5 and mask.shape[1] == 1:
        mask = mask[:, 0]
    elif mask.dim() != 3:
        raise ValueError(f"mask must be [H, W], [N, H, W], [N, 1, H, W] or [N, 1, D, H, W], got {tuple(mask.shape)}")
    is3d = mask.dim() == 4
    fg = mask != 0
    b0 = _components(fg, full=True)
    padded = F.pad(fg.float(), (1, 1) * (3 if is3d else 2), value=0.0) == 0  # the padded background
    holes = _components(padded, full=False) - 1
    if not is3d:
        result = torch.stack([b0, holes], 1)
    else:
        chi = _euler(fg)
        result = torch.stack([b0, b0 + holes - chi, holes], 1)
    return result[0] if single else result


def euler_characteristic(mask: torch.Tensor) -> torch.Tensor:
    """χ = β0 - β1 (+ β2) of each mask in a batch [N, H, W] or [N, D, H, W] (foreground 8/26-connected),
    counted on the closed-cell complex: vertices - edges + faces (- cubes). Returns long [N]."""
    return _euler(mask != 0)


def betti_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|β_k(pred) - β_k(target)| per image and k: long [N, 2] (2D) or [N, 3] (3D)."""
    return (betti_numbers(pred) - betti_numbers(target)).abs()


def skeleton_points(skeleton: torch.Tensor) -> torch.Tensor:
    """(endpoints, junctions) of 2D skeletons, junction-aware: long [N, 2].

    An endpoint is a skeleton pixel with exactly one 8-neighbour on the skeleton. A junction is one
    8-connected cluster of skeleton pixels with three or more skeleton neighbours: on an 8-connected
    skeleton the pixels around one branching point often all have three neighbours (and a crossing can
    keep a 2×2 block, docs/skeletonize.md), so counting such pixels counts one junction 2–3 times (seeded
    vessel-like 1024² masks: 5 217–18 788 such pixels against 2 136–7 005 clusters).

    Args:
        skeleton: [H, W], [N, H, W] or [N, 1, H, W], nonzero = skeleton.
    """
    if not isinstance(skeleton, torch.Tensor):
        raise TypeError(f"skeleton must be a torch.Tensor, got {type(skeleton).__name__}")
    if skeleton.dim() == 4 and skeleton.shape[1] == 1:
        skeleton = skeleton[:, 0]
    elif skeleton.dim() == 2:
        skeleton = skeleton[None]
    if skeleton.dim() != 3:
        raise ValueError(f"skeleton must be [H, W], [N, H, W] or [N, 1, H, W], got {tuple(skeleton.shape)}")
    on = (skeleton != 0).to(torch.float32)[:, None]
    kernel = torch.ones(1, 1, 3, 3)
    kernel[0, 0, 1, 1] = 0
    neighbours = F.conv2d(on.cpu(), kernel, padding=1)[:, 0].round().to(torch.int64)
    on = on[:, 0].cpu().bool()
    out = []
    for pixels, count in zip(on, neighbours):
        branching = (pixels & (count >= 3)).numpy().astype(np.uint8)
        junctions = cv2.connectedComponents(branching, connectivity=8)[0] - 1
        out.append((int((pixels & (count == 1)).sum()), junctions))
    return torch.tensor(out, dtype=torch.int64).reshape(len(out), 2)
