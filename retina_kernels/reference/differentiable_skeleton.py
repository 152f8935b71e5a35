"""Literal plain-PyTorch form of docs/differentiable_skeleton.md (the public reference's computation, with autograd): the
oracle for `retina_kernels.differentiable_skeleton`. Keeps the whole graph, so it is slow and
memory-hungry by design; it shares no code with the fused op beyond the simple-point table."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .skeletonize import _OFFSETS_2D, _SUBPASSES_2D, _neighbours_2d, simple_table_2d

EPS = 1e-8


def differentiable_skeleton(
    prob: torch.Tensor, uniform: torch.Tensor, num_iter: int = 5, beta: float = 0.33, tau: float = 1.0
) -> torch.Tensor:
    """prob, uniform: [N, C, H, W] floating. Returns the skeleton with autograd through every step."""
    logit = torch.log((prob + EPS) / (1 - prob + EPS))
    noise = torch.log(uniform) - torch.log(1 - uniform)
    soft = torch.sigmoid((logit + beta * noise) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    x = hard + (soft - soft.detach())  # straight-through: value hard, gradient soft's (exactly hard + 0)
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, w)
    table = simple_table_2d().to(x.device)
    for _ in range(num_iter):
        values = F.pad(x.detach(), (1, 1, 1, 1))
        count = sum(values[:, :, 1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] for dy, dx in _OFFSETS_2D)
        endpoint = count <= 1  # from the iteration's start, for background pixels too
        for rp, cp in _SUBPASSES_2D:
            values = F.pad(x.detach(), (1, 1, 1, 1))
            code = sum(v.long() << k for k, v in enumerate(_neighbours_2d(values, rp, cp, h, w)))
            centre = x[:, :, rp::2, cp::2]
            # Euler mode: deleting an absent pixel changes nothing, so background counts as simple.
            simple = torch.where(centre.detach() == 1, table[code], torch.ones_like(table[code]))
            d = (simple & ~endpoint[:, :, rp::2, cp::2]).to(x.dtype)
            x = x.clone()
            x[:, :, rp::2, cp::2] = torch.minimum(centre, 1 - d)  # torch splits a tie's gradient in half
    return x.reshape(n, c, h, w)
