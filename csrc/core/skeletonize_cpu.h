// CPU skeletonization by Euler-characteristic boundary peeling (docs/skeletonize.md). Torch-free: raw pointers
// in, work split through a caller-supplied parallel-for (the extension passes at::parallel_for, the C++
// unit tests a serial loop).
#pragma once

#include <cstdint>

#include "parallel_for.h"
#include "simple_point.h"  // kFactorZero, kMaxFactorIterations

namespace retina {

// Skeletonizes `batch` images of height x width in place. `data` is contiguous, row-major, one byte per
// pixel, 0 background and anything else foreground; on return it holds 0/1. `max_iter` < 0 runs to
// convergence, otherwise at most max_iter outer iterations. Returns the outer iterations run.
int64_t skeletonize2d_cpu(uint8_t* data, int64_t batch, int64_t height, int64_t width,
                          int64_t max_iter, const ParallelFor& parallel_for);

// Gradient-factor exponents of docs/differentiable_skeleton.md (the differentiable skeleton's Jacobian is diagonal): runs
// exactly num_iter (0..kMaxFactorIterations) outer iterations of the 2D schedule on `data` in place, and
// writes for every pixel halvings[i] = k if its factor is 2^-k, or kFactorZero if it is 0 (deleted).
void skeletonize2d_factors_cpu(uint8_t* data, uint8_t* halvings, int64_t batch, int64_t height, int64_t width,
                               int64_t num_iter, const ParallelFor& parallel_for);

// The same for `batch` volumes of depth x height x width, (26, 6) connectivity, 8 sub-passes.
int64_t skeletonize3d_cpu(uint8_t* data, int64_t batch, int64_t depth, int64_t height, int64_t width,
                          int64_t max_iter, const ParallelFor& parallel_for);

}  // namespace retina
