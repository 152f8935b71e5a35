// CUDA skeletonization by Euler-characteristic boundary peeling (docs/skeletonize.md). Torch-free: raw device
// pointers, a caller-allocated workspace and a stream, so this file builds with nvcc alone.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace retina {

// Outer iterations between two reads of the device-side "something changed" flag. Iterations past
// convergence change nothing, so checking rarely costs at most this many idle iterations and saves a
// host synchronisation on every other one.
constexpr int64_t kConvergenceCheckEvery = 4;

// Scratch bytes skeletonize2d_cuda needs for this shape.
size_t skeletonize2d_cuda_workspace_bytes(int64_t batch, int64_t height, int64_t width);

// In-place skeleton of `batch` images, `data` contiguous bytes on the device (0 background, else
// foreground; 0/1 on return). max_iter < 0: until convergence. Bit-identical to skeletonize2d_cpu.
cudaError_t skeletonize2d_cuda(uint8_t* data, int64_t batch, int64_t height, int64_t width, int64_t max_iter,
                               void* workspace, cudaStream_t stream);

// The gradient-factor pass of the differentiable skeleton, as skeletonize2d_factors_cpu: exactly
// num_iter iterations, `data` replaced by the skeleton, `halvings` (device bytes, one per pixel) filled.
size_t skeletonize2d_factors_cuda_workspace_bytes(int64_t batch, int64_t height, int64_t width, int64_t num_iter);
cudaError_t skeletonize2d_factors_cuda(uint8_t* data, uint8_t* halvings, int64_t batch, int64_t height, int64_t width,
                                       int64_t num_iter, void* workspace, cudaStream_t stream);

size_t skeletonize3d_cuda_workspace_bytes(int64_t batch, int64_t depth, int64_t height, int64_t width);

cudaError_t skeletonize3d_cuda(uint8_t* data, int64_t batch, int64_t depth, int64_t height, int64_t width,
                               int64_t max_iter, void* workspace, cudaStream_t stream);

}  // namespace retina
