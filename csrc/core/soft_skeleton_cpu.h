// CPU soft skeleton (docs/soft_skeleton.md, Shit et al.'s soft_skel): iterated soft erosion / opening, fused so the
// forward pass keeps three planes and the backward pass recomputes the forward from the input alone.
// Torch-free: raw pointers, work split through a caller-supplied parallel-for.
#pragma once

#include <cstdint>

#include "parallel_for.h"

namespace retina {

// `images` independent planes of depth x height x width, contiguous; dims 2 (depth == 1) or 3.
struct SoftSkeletonShape {
  int64_t images, depth, height, width;
  int dims;
};

// skel = soft_skel(x, num_iter) for every plane.
template <class T>
void soft_skeleton_forward_cpu(const T* x, T* skel, const SoftSkeletonShape& shape, int64_t num_iter,
                               const ParallelFor& parallel_for);

// grad_x = d<grad_skel, soft_skel(x)>/dx, with PyTorch's rules: a max/min pool routes a window's
// gradient to its first extreme in row-major window order, torch.min splits a tie in half, relu passes
// gradient only where its output is > 0. Recomputes the forward pass from x.
template <class T>
void soft_skeleton_backward_cpu(const T* x, const T* grad_skel, T* grad_x, const SoftSkeletonShape& shape,
                                int64_t num_iter, const ParallelFor& parallel_for);

}  // namespace retina
