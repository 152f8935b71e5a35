"""Triton implementation of retina::soft_skeleton and its backward (docs/soft_skeleton.md), the op's CUDA kernel.

The arithmetic is the C++ CPU kernel's (csrc/core/soft_skeleton_cpu.cpp), rule for rule, so CPU and GPU
agree to rounding: min/max pools ignore the outside, a max-pool routes a window's gradient to its first
arg-max in row-major window order, each axis min-pool to its first arg-min, torch.min splits ties in half.

Layout: every (sample, channel) is an independent D x H x W plane (D == 1 in 2D), contiguous. One
program handles BLOCK voxels of one plane; neighbours are read straight from global memory (they are
L1/L2 hits), with coordinates checked so nothing leaks across rows, planes or images.

Forward: num_iter + 1 launches of one fused step (erode, open, accumulate), ping-ponging two buffers.
Backward: recompute and keep x_0..x_{num_iter+1} and the running skeletons (2 * num_iter + 2 planes,
freed on return; autograd itself keeps only x), then per iteration, in reverse, three gathers: through
the skeleton update, through the dilation, through the erosion. Half inputs are computed in float32.

These functions take any tensors Triton can address: CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1 (how CI tests this file on a machine without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 512
NUM_WARPS = 4
NO_CODE = tl.constexpr(255)  # code read outside the plane: matches no window position


@triton.jit
def _inside(z, y, x, D, H, W):
    return (z >= 0) & (z < D) & (y >= 0) & (y < H) & (x >= 0) & (x < W)


@triton.jit
def _load(base, idx, z, y, x, dz: tl.constexpr, dy: tl.constexpr, dx: tl.constexpr, D, H, W, live, other):
    """base[(z+dz, y+dy, x+dx)] where that is inside the plane (and the lane live), else `other`."""
    ok = live & _inside(z + dz, y + dy, x + dx, D, H, W)
    return tl.load(base + idx + (dz * H * W + dy * W + dx), mask=ok, other=other)


@triton.jit
def _axis_min(base, idx, z, y, x, dz: tl.constexpr, dy: tl.constexpr, dx: tl.constexpr,
              az: tl.constexpr, ay: tl.constexpr, ax: tl.constexpr, D, H, W, live, inf):
    """(min, first arg-min 0/1/2) of the 3-wide min-pool along the unit step (az, ay, ax), centred at
    (z+dz, y+dy, x+dx); the outside reads +inf (it never counts)."""
    lo = _load(base, idx, z, y, x, dz - az, dy - ay, dx - ax, D, H, W, live, inf)
    mid = _load(base, idx, z, y, x, dz, dy, dx, D, H, W, live, inf)
    hi = _load(base, idx, z, y, x, dz + az, dy + ay, dx + ax, D, H, W, live, inf)
    mid_lower = mid < lo
    best = tl.where(mid_lower, mid, lo)
    code = tl.where(mid_lower, 1, 0)
    hi_lower = hi < best
    return tl.where(hi_lower, hi, best), tl.where(hi_lower, 2, code)


@triton.jit
def _axis_mins(base, idx, z, y, x, dz: tl.constexpr, dy: tl.constexpr, dx: tl.constexpr, D, H, W, live, inf,
               DZ: tl.constexpr):
    """The erosion's axis pools at (z+dz, y+dy, x+dx) in the reference's order, (min, code) each:
    3D (z, y, x); 2D (y, x) and a third copy of x's, so callers need no second signature."""
    if DZ == 1:
        m0, c0 = _axis_min(base, idx, z, y, x, dz, dy, dx, 1, 0, 0, D, H, W, live, inf)
        m1, c1 = _axis_min(base, idx, z, y, x, dz, dy, dx, 0, 1, 0, D, H, W, live, inf)
        m2, c2 = _axis_min(base, idx, z, y, x, dz, dy, dx, 0, 0, 1, D, H, W, live, inf)
    else:
        m0, c0 = _axis_min(base, idx, z, y, x, dz, dy, dx, 0, 1, 0, D, H, W, live, inf)
        m1, c1 = _axis_min(base, idx, z, y, x, dz, dy, dx, 0, 0, 1, D, H, W, live, inf)
        m2 = m1
        c2 = c1
    return m0, c0, m1, c1, m2, c2


@triton.jit
def _coords(D, H, W, BLOCK: tl.constexpr):
    """(plane offset, index within the plane, z, y, x, live) of this program's lanes: program p handles
    block p % blocks of plane p // blocks (one grid axis, so any number of planes fits)."""
    n = D * H * W
    blocks = tl.cdiv(n, BLOCK)
    pid = tl.program_id(0)
    plane = (pid // blocks).to(tl.int64) * n
    idx = (pid % blocks) * BLOCK + tl.arange(0, BLOCK)
    live = idx < n
    x = idx % W
    y = (idx // W) % H
    z = idx // (W * H)
    return plane, idx, z, y, x, live


@triton.jit
def _forward_step(x_ptr, next_ptr, skel_in_ptr, skel_out_ptr, D, H, W,
                  FIRST: tl.constexpr, STORE_NEXT: tl.constexpr, DZ: tl.constexpr, BLOCK: tl.constexpr):
    """One iteration: x_{j+1} = erode(x_j), delta = relu(x_j - dilate(x_{j+1})), skel update.
    DZ: 1 in 3D, 0 in 2D (the depth radius of the windows)."""
    plane, idx, z, y, x, live = _coords(D, H, W, BLOCK)
    base = x_ptr + plane
    centre = tl.load(base + idx, mask=live, other=0.0)
    inf = tl.zeros([BLOCK], centre.dtype) + float("inf")
    opened = -inf
    eroded_here = inf
    for dz in tl.static_range(-DZ, DZ + 1):
        for dy in tl.static_range(-1, 2):
            for dx in tl.static_range(-1, 2):
                m0, _c0, m1, _c1, m2, _c2 = _axis_mins(base, idx, z, y, x, dz, dy, dx, D, H, W, live, inf, DZ)
                e = tl.minimum(tl.minimum(m0, m1), m2)
                e = tl.where(_inside(z + dz, y + dy, x + dx, D, H, W), e, -inf)
                opened = tl.maximum(opened, e)
                if dz * 9 + dy * 3 + dx == 0:
                    eroded_here = e
    opened = tl.where(live, opened, 0.0)  # lanes past the plane read nothing: keep them finite
    delta = tl.maximum(centre - opened, 0.0)
    if FIRST:
        skel = delta
    else:
        s = tl.load(skel_in_ptr + plane + idx, mask=live, other=0.0)
        skel = s + tl.maximum(delta - s * delta, 0.0)
    tl.store(skel_out_ptr + plane + idx, skel, mask=live)
    if STORE_NEXT:
        tl.store(next_ptr + plane + idx, eroded_here, mask=live)


@triton.jit
def _backward_skeleton(xj_ptr, xn_ptr, skel_before_ptr, grad_running_ptr, code_ptr, grad_open_ptr, grad_cur_ptr,
                       D, H, W, HAS_BEFORE: tl.constexpr, DZ: tl.constexpr, BLOCK: tl.constexpr):
    """open_j = dilate(x_{j+1}) with its first arg-max (row-major window position); then the gradient
    through skel_j = s + relu(delta - s * delta) (skel_0 = delta), delta = relu(x_j - open_j): to x_j
    (grad_cur), to open_j (grad_open), to the skeleton before iteration j (grad_running, in place)."""
    plane, idx, z, y, x, live = _coords(D, H, W, BLOCK)
    xj = tl.load(xj_ptr + plane + idx, mask=live, other=0.0)
    neg_inf = tl.zeros([BLOCK], xj.dtype) - float("inf")
    best = neg_inf
    code = tl.zeros([BLOCK], tl.int32)
    for dz in tl.static_range(-DZ, DZ + 1):
        for dy in tl.static_range(-1, 2):
            for dx in tl.static_range(-1, 2):
                v = _load(xn_ptr + plane, idx, z, y, x, dz, dy, dx, D, H, W, live, neg_inf)
                better = v > best
                code = tl.where(better, (dz + DZ) * 9 + (dy + 1) * 3 + (dx + 1), code)
                best = tl.where(better, v, best)
    best = tl.where(live, best, 0.0)  # lanes past the plane read nothing: keep them finite
    v = xj - best
    delta = tl.maximum(v, 0.0)
    g = tl.load(grad_running_ptr + plane + idx, mask=live, other=0.0)
    grad_delta = g
    if HAS_BEFORE:
        s = tl.load(skel_before_ptr + plane + idx, mask=live, other=0.0)
        u = delta - s * delta
        grad_u = tl.where(u > 0, g, 0.0)
        grad_delta = grad_u - grad_u * s
        tl.store(grad_running_ptr + plane + idx, g - grad_u * delta, mask=live)
    grad_v = tl.where(v > 0, grad_delta, 0.0)
    tl.store(grad_cur_ptr + plane + idx, grad_v, mask=live)
    tl.store(grad_open_ptr + plane + idx, -grad_v, mask=live)
    tl.store(code_ptr + plane + idx, code.to(tl.uint8), mask=live)


@triton.jit
def _backward_dilate(code_ptr, grad_open_ptr, grad_next_ptr, D, H, W, DZ: tl.constexpr, BLOCK: tl.constexpr):
    """grad_next[o] += the open-gradients of the windows whose arg-max o is, summed in increasing window
    position (the order of the reference's scatter-add)."""
    plane, idx, z, y, x, live = _coords(D, H, W, BLOCK)
    total = tl.load(grad_next_ptr + plane + idx, mask=live, other=0.0)
    zero = tl.zeros([BLOCK], total.dtype)
    for dz in tl.static_range(-DZ, DZ + 1):
        for dy in tl.static_range(-1, 2):
            for dx in tl.static_range(-1, 2):
                # The window centred at o + (dz, dy, dx) has o at its position k; offsets run up, so k runs down.
                k = (DZ - dz) * 9 + (1 - dy) * 3 + (1 - dx)
                c = _load(code_ptr + plane, idx, z, y, x, dz, dy, dx, D, H, W, live, NO_CODE)
                g = _load(grad_open_ptr + plane, idx, z, y, x, dz, dy, dx, D, H, W, live, zero)
                total += tl.where(c == k, g, 0.0)
    tl.store(grad_next_ptr + plane + idx, total, mask=live)


@triton.jit
def _min_share(a, b):
    """Share of a torch.min(a, b) gradient that goes to a: 1 if a < b, 1/2 on a tie, else 0."""
    return tl.where(a < b, 1.0, tl.where(a == b, 0.5, 0.0))


@triton.jit
def _pool_share(xj_base, gn_base, idx, z, y, x, dz: tl.constexpr, dy: tl.constexpr, dx: tl.constexpr,
                AXIS: tl.constexpr, D, H, W, live, inf, zero, DZ: tl.constexpr):
    """(first arg-min code, gradient) of axis pool AXIS (reference order) of the erosion centred at
    (z+dz, y+dy, x+dx). The erosion is min(...min(m_0, m_1)..., m_last): its gradient is split by
    torch.min's tie shares from the outside in."""
    m0, c0, m1, c1, m2, c2 = _axis_mins(xj_base, idx, z, y, x, dz, dy, dx, D, H, W, live, inf, DZ)
    grad = _load(gn_base, idx, z, y, x, dz, dy, dx, D, H, W, live, zero)
    m01 = tl.minimum(m0, m1)
    if DZ == 1:
        if AXIS == 2:
            share = grad * _min_share(m2, m01)
        else:
            grad = grad * _min_share(m01, m2)
    if AXIS == 1:
        share = grad * _min_share(m1, m0)
    if AXIS == 0:
        share = grad * _min_share(m0, m1)
    code = c0
    if AXIS == 1:
        code = c1
    if AXIS == 2:
        code = c2
    return code, share


@triton.jit
def _axis_gather(xj_base, gn_base, idx, z, y, x, AXIS: tl.constexpr, az: tl.constexpr, ay: tl.constexpr,
                 ax: tl.constexpr, D, H, W, live, inf, zero, DZ: tl.constexpr):
    """What o receives from axis pool AXIS (unit step (az, ay, ax)): the shares of the pools centred at
    o - d * step, d = 1, 0, -1 (increasing position), whose first arg-min o is (code d + 1)."""
    pooled = zero
    for i in tl.static_range(3):
        d = 1 - i
        code, share = _pool_share(xj_base, gn_base, idx, z, y, x, -d * az, -d * ay, -d * ax, AXIS, D, H, W, live,
                                  inf, zero, DZ)
        centre_ok = _inside(z - d * az, y - d * ay, x - d * ax, D, H, W)
        pooled += tl.where(centre_ok & (code == d + 1), share, 0.0)
    return pooled


@triton.jit
def _backward_erode(xj_ptr, grad_next_ptr, grad_cur_ptr, grad_out_ptr, D, H, W, DZ: tl.constexpr,
                    BLOCK: tl.constexpr):
    """grad_out = grad_cur + the erosion's backward of grad_next (= d/dx_{j+1}): d/dx_j."""
    plane, idx, z, y, x, live = _coords(D, H, W, BLOCK)
    total = tl.load(grad_cur_ptr + plane + idx, mask=live, other=0.0)
    zero = tl.zeros([BLOCK], total.dtype)
    inf = zero + float("inf")
    xj = xj_ptr + plane
    gn = grad_next_ptr + plane
    if DZ == 1:
        total += _axis_gather(xj, gn, idx, z, y, x, 0, 1, 0, 0, D, H, W, live, inf, zero, DZ)
        total += _axis_gather(xj, gn, idx, z, y, x, 1, 0, 1, 0, D, H, W, live, inf, zero, DZ)
        total += _axis_gather(xj, gn, idx, z, y, x, 2, 0, 0, 1, D, H, W, live, inf, zero, DZ)
    else:
        total += _axis_gather(xj, gn, idx, z, y, x, 0, 0, 1, 0, D, H, W, live, inf, zero, DZ)
        total += _axis_gather(xj, gn, idx, z, y, x, 1, 0, 0, 1, D, H, W, live, inf, zero, DZ)
    tl.store(grad_out_ptr + plane + idx, total, mask=live)


def _planes(t: torch.Tensor) -> tuple[int, int, int, int]:
    """(planes, D, H, W) of a [B, C, H, W] or [B, C, D, H, W] tensor."""
    depth = t.shape[2] if t.dim() == 5 else 1
    return t.shape[0] * t.shape[1], depth, t.shape[-2], t.shape[-1]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(kernel, t: torch.Tensor, *args, **constexprs):
    planes, depth, height, width = _planes(t)
    grid = (planes * triton.cdiv(depth * height * width, BLOCK),)
    kernel[grid](*args, depth, height, width, DZ=int(t.dim() == 5), BLOCK=BLOCK, num_warps=NUM_WARPS, **constexprs)


def _forward_steps(x: torch.Tensor, num_iter: int, keep: bool):
    """Runs the num_iter + 1 iterations on x (contiguous, compute dtype). Returns the skeleton, and when
    `keep` the erosions x_0..x_{num_iter+1} and the skeletons after iterations 0..num_iter-1."""
    erosions, skeletons = [x], []
    current, spare = x, None
    skel = torch.empty_like(x)
    for j in range(num_iter + 1):
        last = j == num_iter
        store_next = keep or not last
        nxt = torch.empty_like(x) if keep or spare is None else spare
        # Kept skeletons are read again in backward, so keep mode never updates one in place.
        skel_out = torch.empty_like(x) if keep or j == 0 else skel
        _launch(_forward_step, x, current, nxt, skel, skel_out, FIRST=j == 0, STORE_NEXT=store_next)
        if keep:
            erosions.append(nxt)
            if not last:
                skeletons.append(skel_out)
        skel = skel_out
        spare = current if current is not x else None
        current = nxt
    return skel, erosions, skeletons


def soft_skeleton_forward(x: torch.Tensor, num_iter: int) -> torch.Tensor:
    """soft_skel(x, num_iter) for [B, C, H, W] / [B, C, D, H, W] floating x (arguments already checked)."""
    work = x.contiguous().to(_compute_dtype(x.dtype))
    if work.numel() == 0:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    skel, _, _ = _forward_steps(work, num_iter, keep=False)
    return skel.to(x.dtype)


def soft_skeleton_backward(grad: torch.Tensor, x: torch.Tensor, num_iter: int) -> torch.Tensor:
    """d<grad, soft_skel(x, num_iter)>/dx, recomputing the forward from x."""
    dtype = _compute_dtype(x.dtype)
    work = x.contiguous().to(dtype)
    if work.numel() == 0:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    _, erosions, skeletons = _forward_steps(work, num_iter, keep=True)
    grad_running = grad.contiguous().to(dtype, copy=True)
    code = torch.empty(work.shape, dtype=torch.uint8, device=work.device)
    grad_open, grad_cur = torch.empty_like(work), torch.empty_like(work)
    grad_next, grad_out = torch.zeros_like(work), torch.empty_like(work)
    for j in range(num_iter, -1, -1):
        before = skeletons[j - 1] if j > 0 else grad_running  # unused when j == 0
        _launch(_backward_skeleton, work, erosions[j], erosions[j + 1], before, grad_running, code, grad_open,
                grad_cur, HAS_BEFORE=j > 0)
        _launch(_backward_dilate, work, code, grad_open, grad_next)
        _launch(_backward_erode, work, erosions[j], grad_next, grad_cur, grad_out)
        erosions[j + 1] = None  # done with it: free as we go
        grad_next, grad_out = grad_out, grad_next
    return grad_next.to(x.dtype)
