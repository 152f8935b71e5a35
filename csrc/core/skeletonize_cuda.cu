#include "skeletonize_cuda.h"

#include "simple_point.h"

namespace retina {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

int64_t blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b);
}

size_t align_up(size_t n) { return (n + 255) & ~size_t(255); }

#define RETINA_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// ---- 2D: bit-packed rows, (height + 2) rows x (words + 2) words per image, zero border -------------

struct Packed2D {
  int64_t batch, height, width, words, stride, image_words;
  explicit Packed2D(int64_t n, int64_t h, int64_t w)
      : batch(n), height(h), width(w), words((w + 63) / 64), stride(words + 2), image_words((h + 2) * (words + 2)) {}
  // Offset of word w of image row r.
  __host__ __device__ int64_t at(int64_t n, int64_t r, int64_t w) const {
    return n * image_words + (r + 1) * stride + 1 + w;
  }
};

__global__ void pack2d(const uint8_t* __restrict__ data, uint64_t* __restrict__ bits, Packed2D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.height * p.words) {
    const int64_t w = i % p.words, row = i / p.words;  // row = n * height + r
    const uint8_t* src = data + row * p.width + w * 64;
    const int64_t count = min(int64_t(64), p.width - w * 64);
    uint64_t word = 0;
    for (int64_t c = 0; c < count; ++c) word |= uint64_t(src[c] != 0) << c;
    bits[p.at(row / p.height, row % p.height, w)] = word;
  }
}

__global__ void two_neighbours2d(const uint64_t* __restrict__ bits, uint64_t* __restrict__ two, Packed2D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.height * p.words) {
    const int64_t w = i % p.words, row = i / p.words;
    const int64_t o = p.at(row / p.height, row % p.height, w);
    two[o] = simple2d::at_least_two_neighbours(bits + o - p.stride, bits + o, bits + o + p.stride);
  }
}

// Gradient-factor bookkeeping (docs/differentiable_skeleton.md): a 'deleted' plane and bit-sliced counters, planes
// `plane_words` apart, all in the Packed2D layout.
struct FactorPlanes {
  uint64_t* deleted;
  uint64_t* counters;
  int64_t plane_words;
  int num_planes;
};

// One sub-pass over the rows of one parity. Threads of neighbouring words race only on bits that this
// sub-pass never deletes (pixels of one parity are not 8-neighbours), so in-place update is exact.
template <bool kFactors>
__global__ void subpass2d(uint64_t* bits, const uint64_t* __restrict__ two, Packed2D p, int subpass, int* changed,
                          FactorPlanes factors) {
  const int64_t row_parity = simple2d::subpass_row_parity(subpass);
  const int64_t rows = (p.height - row_parity + 1) / 2;
  const uint64_t column_mask = simple2d::subpass_column_mask(subpass);
  RETINA_GRID_STRIDE(i, p.batch * rows * p.words) {
    const int64_t w = i % p.words, k = i / p.words;
    const int64_t o = p.at(k / rows, row_parity + 2 * (k % rows), w);
    const uint64_t del = simple2d::deletable(bits + o - p.stride, bits + o, bits + o + p.stride, two[o], column_mask);
    if (kFactors) {
      simple2d::increment_counters(factors.counters + o, factors.plane_words, factors.num_planes,
                                   simple2d::halved(bits[o], del, two[o], column_mask));
      factors.deleted[o] |= del;
    }
    if (del) {
      bits[o] &= ~del;
      atomicOr(changed, 1);
    }
  }
}

__global__ void unpack_halvings2d(const FactorPlanes factors, uint8_t* __restrict__ halvings, Packed2D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.height * p.width) {
    const int64_t c = i % p.width, row = i / p.width;
    const int64_t o = p.at(row / p.height, row % p.height, c >> 6);
    const int bit = int(c & 63);
    unsigned count = 0;
    for (int k = 0; k < factors.num_planes; ++k) count |= unsigned((factors.counters[k * factors.plane_words + o] >> bit) & 1u) << k;
    halvings[i] = ((factors.deleted[o] >> bit) & 1u) ? kFactorZero : uint8_t(count);
  }
}

__global__ void unpack2d(const uint64_t* __restrict__ bits, uint8_t* __restrict__ data, Packed2D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.height * p.width) {
    const int64_t c = i % p.width, row = i / p.width;
    data[i] = uint8_t((bits[p.at(row / p.height, row % p.height, c >> 6)] >> (c & 63)) & 1u);
  }
}

// ---- 3D: bytes padded by one background voxel on every side ---------------------------------------

struct Padded3D {
  int64_t batch, depth, height, width, sy, sz, volume;
  explicit Padded3D(int64_t n, int64_t d, int64_t h, int64_t w)
      : batch(n), depth(d), height(h), width(w), sy(w + 2), sz((h + 2) * (w + 2)), volume((d + 2) * (h + 2) * (w + 2)) {}
  __host__ __device__ int64_t at(int64_t n, int64_t z, int64_t y, int64_t x) const {
    return n * volume + (z + 1) * sz + (y + 1) * sy + (x + 1);
  }
  // Padded offset of the i-th voxel in unpadded row-major order.
  __host__ __device__ int64_t at_linear(int64_t i) const {
    const int64_t x = i % width, y = (i / width) % height, z = (i / (width * height)) % depth;
    return at(i / (width * height * depth), z, y, x);
  }
};

__global__ void pad3d(const uint8_t* __restrict__ data, uint8_t* __restrict__ vox, Padded3D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.depth * p.height * p.width) { vox[p.at_linear(i)] = data[i] != 0; }
}

__global__ void endpoints3d(const uint8_t* __restrict__ vox, uint8_t* __restrict__ ends, Padded3D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.depth * p.height * p.width) {
    const int64_t o = p.at_linear(i);
    ends[o] = vox[o] && simple3d::is_endpoint(simple3d::gather(vox + o, p.sy, p.sz));
  }
}

__global__ void subpass3d(uint8_t* vox, const uint8_t* __restrict__ ends, Padded3D p, int subpass, int* changed) {
  const int64_t pz = simple3d::subpass_z_parity(subpass), py = simple3d::subpass_y_parity(subpass),
                px = simple3d::subpass_x_parity(subpass);
  const int64_t planes = (p.depth - pz + 1) / 2, rows = (p.height - py + 1) / 2, cols = (p.width - px + 1) / 2;
  RETINA_GRID_STRIDE(i, p.batch * planes * rows * cols) {
    const int64_t x = px + 2 * (i % cols), y = py + 2 * ((i / cols) % rows), z = pz + 2 * ((i / (cols * rows)) % planes);
    const int64_t o = p.at(i / (cols * rows * planes), z, y, x);
    if (vox[o] && !ends[o] && simple3d::is_simple(simple3d::gather(vox + o, p.sy, p.sz))) {
      vox[o] = 0;
      atomicOr(changed, 1);
    }
  }
}

__global__ void unpad3d(const uint8_t* __restrict__ vox, uint8_t* __restrict__ data, Padded3D p) {
  RETINA_GRID_STRIDE(i, p.batch * p.depth * p.height * p.width) { data[i] = vox[p.at_linear(i)]; }
}

// Outer-iteration loop shared by 2D and 3D. `iteration(flag)` enqueues one outer iteration that sets
// *flag when it deletes anything. The host reads a flag only every kConvergenceCheckEvery iterations.
template <class Iteration>
cudaError_t run_until_converged(int64_t max_iter, int* flags, cudaStream_t stream, Iteration&& iteration,
                                bool stop_at_convergence = true) {
  for (int64_t t = 0; max_iter < 0 || t < max_iter; ++t) {
    int* flag = flags + (t % kConvergenceCheckEvery);
    cudaError_t err = cudaMemsetAsync(flag, 0, sizeof(int), stream);
    if (err != cudaSuccess) return err;
    iteration(flag);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    const bool last = max_iter >= 0 && t + 1 == max_iter;
    if (stop_at_convergence && !last && (t + 1) % kConvergenceCheckEvery == 0) {
      int host_flag = 1;
      if ((err = cudaMemcpyAsync(&host_flag, flag, sizeof(int), cudaMemcpyDeviceToHost, stream)) != cudaSuccess)
        return err;
      if ((err = cudaStreamSynchronize(stream)) != cudaSuccess) return err;
      if (!host_flag) break;
    }
  }
  return cudaSuccess;
}

int counter_planes(int64_t num_iter) {
  int planes = 0;
  while ((int64_t{1} << planes) <= num_iter) ++planes;
  return planes;
}

// Workspace: bits, two-neighbour plane, [deleted plane, counter planes,] convergence flags.
size_t planes2d_bytes(const Packed2D& p) { return align_up(sizeof(uint64_t) * size_t(p.batch * p.image_words)); }

// Shared by the binary skeleton (factors == nullptr: stops at convergence) and the factor pass (runs
// exactly max_iter iterations). `data` is replaced by the skeleton.
cudaError_t peel2d(uint8_t* data, const Packed2D& p, int64_t max_iter, void* workspace, const FactorPlanes* factors,
                   cudaStream_t stream) {
  const size_t plane_bytes = planes2d_bytes(p);
  auto* bits = static_cast<uint64_t*>(workspace);
  auto* two = reinterpret_cast<uint64_t*>(static_cast<char*>(workspace) + plane_bytes);
  auto* flags = reinterpret_cast<int*>(static_cast<char*>(workspace) + 2 * plane_bytes);
  cudaError_t err = cudaMemsetAsync(bits, 0, plane_bytes, stream);
  if (err != cudaSuccess) return err;
  const int64_t word_count = p.batch * p.height * p.words;
  pack2d<<<blocks_for(word_count), kThreads, 0, stream>>>(data, bits, p);
  const FactorPlanes none{nullptr, nullptr, 0, 0};
  // With factors every iteration changes every pixel's factor: no early stop (max_iter >= 0 then).
  err = run_until_converged(max_iter, flags, stream, [&](int* flag) {
    two_neighbours2d<<<blocks_for(word_count), kThreads, 0, stream>>>(bits, two, p);
    for (int s = 0; s < simple2d::kSubpasses; ++s) {
      const int64_t rows = (p.height - simple2d::subpass_row_parity(s) + 1) / 2;
      if (rows == 0) continue;
      const int64_t blocks = blocks_for(p.batch * rows * p.words);
      if (factors)
        subpass2d<true><<<blocks, kThreads, 0, stream>>>(bits, two, p, s, flag, *factors);
      else
        subpass2d<false><<<blocks, kThreads, 0, stream>>>(bits, two, p, s, flag, none);
    }
  }, /*stop_at_convergence=*/factors == nullptr);
  if (err != cudaSuccess) return err;
  unpack2d<<<blocks_for(p.batch * p.height * p.width), kThreads, 0, stream>>>(bits, data, p);
  return cudaGetLastError();
}

}  // namespace

size_t skeletonize2d_cuda_workspace_bytes(int64_t batch, int64_t height, int64_t width) {
  return 2 * planes2d_bytes(Packed2D(batch, height, width)) + align_up(sizeof(int) * kConvergenceCheckEvery);
}

cudaError_t skeletonize2d_cuda(uint8_t* data, int64_t batch, int64_t height, int64_t width, int64_t max_iter,
                               void* workspace, cudaStream_t stream) {
  if (batch == 0 || height == 0 || width == 0) return cudaSuccess;
  return peel2d(data, Packed2D(batch, height, width), max_iter, workspace, nullptr, stream);
}

size_t skeletonize2d_factors_cuda_workspace_bytes(int64_t batch, int64_t height, int64_t width, int64_t num_iter) {
  const size_t plane = planes2d_bytes(Packed2D(batch, height, width));
  return skeletonize2d_cuda_workspace_bytes(batch, height, width) + plane * size_t(1 + counter_planes(num_iter));
}

cudaError_t skeletonize2d_factors_cuda(uint8_t* data, uint8_t* halvings, int64_t batch, int64_t height, int64_t width,
                                       int64_t num_iter, void* workspace, cudaStream_t stream) {
  if (batch == 0 || height == 0 || width == 0) return cudaSuccess;
  const Packed2D p(batch, height, width);
  const size_t plane = planes2d_bytes(p);
  char* extra = static_cast<char*>(workspace) + skeletonize2d_cuda_workspace_bytes(batch, height, width);
  const FactorPlanes factors{reinterpret_cast<uint64_t*>(extra), reinterpret_cast<uint64_t*>(extra + plane),
                             int64_t(plane / sizeof(uint64_t)), counter_planes(num_iter)};
  cudaError_t err = cudaMemsetAsync(extra, 0, plane * size_t(1 + factors.num_planes), stream);
  if (err != cudaSuccess) return err;
  if ((err = peel2d(data, p, num_iter, workspace, &factors, stream)) != cudaSuccess) return err;
  unpack_halvings2d<<<blocks_for(batch * height * width), kThreads, 0, stream>>>(factors, halvings, p);
  return cudaGetLastError();
}

size_t skeletonize3d_cuda_workspace_bytes(int64_t batch, int64_t depth, int64_t height, int64_t width) {
  const Padded3D p(batch, depth, height, width);
  return 2 * align_up(size_t(batch * p.volume)) + align_up(sizeof(int) * kConvergenceCheckEvery);
}

cudaError_t skeletonize3d_cuda(uint8_t* data, int64_t batch, int64_t depth, int64_t height, int64_t width,
                               int64_t max_iter, void* workspace, cudaStream_t stream) {
  if (batch == 0 || depth == 0 || height == 0 || width == 0) return cudaSuccess;
  const Padded3D p(batch, depth, height, width);
  const size_t volume_bytes = align_up(size_t(batch * p.volume));
  auto* vox = static_cast<uint8_t*>(workspace);
  auto* ends = vox + volume_bytes;
  auto* flags = reinterpret_cast<int*>(ends + volume_bytes);

  cudaError_t err = cudaMemsetAsync(vox, 0, volume_bytes, stream);
  if (err != cudaSuccess) return err;
  const int64_t voxels = batch * depth * height * width;
  pad3d<<<blocks_for(voxels), kThreads, 0, stream>>>(data, vox, p);
  err = run_until_converged(max_iter, flags, stream, [&](int* flag) {
    endpoints3d<<<blocks_for(voxels), kThreads, 0, stream>>>(vox, ends, p);
    for (int s = 0; s < simple3d::kSubpasses; ++s) {
      const int64_t candidates = batch * ((depth - simple3d::subpass_z_parity(s) + 1) / 2) *
                                 ((height - simple3d::subpass_y_parity(s) + 1) / 2) *
                                 ((width - simple3d::subpass_x_parity(s) + 1) / 2);
      if (candidates > 0) subpass3d<<<blocks_for(candidates), kThreads, 0, stream>>>(vox, ends, p, s, flag);
    }
  });
  if (err != cudaSuccess) return err;
  unpad3d<<<blocks_for(voxels), kThreads, 0, stream>>>(vox, data, p);
  return cudaGetLastError();
}

}  // namespace retina
