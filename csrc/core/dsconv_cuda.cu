// CUDA dynamic snake convolution: the kernels wrap the block bodies of dsconv_cuda_tiles.h (tested on the
// CPU in csrc/tests/test_dsconv_tiles.cpp); this file supplies the tensor-core product (nvcuda::wmma, for
// float16 and bfloat16) and chooses products, tile shapes and grids.
#include <mma.h>

#include <atomic>
#include <cstdlib>
#include <type_traits>

#include "dsconv_cuda.h"
#include "dsconv_cuda_tiles.h"

namespace retina {
namespace {

using namespace dsconv_tiles;
namespace wmma = nvcuda::wmma;

// The hardware block behind the tiles' Block interface.
struct DeviceBlock {
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ int64_t index(int axis) const { return axis == 0 ? blockIdx.x : (axis == 1 ? blockIdx.y : blockIdx.z); }
  __device__ void sync() const { __syncthreads(); }
  template <class A>
  __device__ void atomic_add(A* at, A value) const {
    atomicAdd(at, value);
  }
};

template <class T, class Acc>
__global__ void __launch_bounds__(256) locate_kernel(LocateArgs<T, Acc> a) {
  const int64_t total = a.batch * a.height * a.width;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < total; n += int64_t(gridDim.x) * blockDim.x)
    locate_pixel(a, n);
}

// nvcuda::wmma behind TensorProduct's Mma interface for the 16-bit types, 16 x 16 x 16 fragments
// accumulating in float32 (fragment layouts are the hardware's business: only shared-memory layouts,
// which the CPU test checks, are ours).
template <class T>
struct Wmma {
  using Stage = T;
  static constexpr int kK = 16;
  using A = wmma::fragment<wmma::matrix_a, kFragment, kFragment, kK, T, wmma::col_major>;
  using B = wmma::fragment<wmma::matrix_b, kFragment, kFragment, kK, T, wmma::row_major>;
  using Acc = wmma::fragment<wmma::accumulator, kFragment, kFragment, kK, float>;
  __device__ static Stage stage(float v) { return from_acc<Stage>(v); }
  __device__ static void zero(Acc& c) { wmma::fill_fragment(c, 0.0f); }
  __device__ static void load_a(A& f, const Stage* p, int ld, int) { wmma::load_matrix_sync(f, p, ld); }
  __device__ static void load_b(B& f, const Stage* p, int ld, int) { wmma::load_matrix_sync(f, p, ld); }
  __device__ static void mma(Acc& c, const A& a, const B& b, int) { wmma::mma_sync(c, a, b, c); }
  __device__ static void store(float* p, const Acc& c, int ld, int) { wmma::store_matrix_sync(p, c, ld, wmma::mem_row_major); }
};

// float32 on the tensor cores as TF32 (where PyTorch lets float32 convolutions use it): operands rounded to
// TF32 (10 mantissa bits) once, as they are staged, then 16 x 16 x 8 fragments accumulating in float32.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
// (Compiling device code for an older GPU, where TF32 fragments do not exist: a stand-in with the same
// interface, so the kernels that name it still compile; they trap there, compiled_for_this_arch below.)
struct WmmaTf32 {
  using Stage = float;
  struct A {};
  struct B {};
  struct Acc {};
  // (templates, declared only: nothing calls them on these GPUs)
  template <class... Args>
  __device__ static Stage stage(Args...);
  template <class... Args>
  __device__ static void zero(Args&&...);
  template <class... Args>
  __device__ static void load_a(Args&&...);
  template <class... Args>
  __device__ static void load_b(Args&&...);
  template <class... Args>
  __device__ static void mma(Args&&...);
  template <class... Args>
  __device__ static void store(Args&&...);
};
#else
struct WmmaTf32 {
  using Stage = float;
  static constexpr int kK = 8;
  using A = wmma::fragment<wmma::matrix_a, kFragment, kFragment, kK, wmma::precision::tf32, wmma::col_major>;
  using B = wmma::fragment<wmma::matrix_b, kFragment, kFragment, kK, wmma::precision::tf32, wmma::row_major>;
  using Acc = wmma::fragment<wmma::accumulator, kFragment, kFragment, kK, float>;
  __device__ static Stage stage(float v) { return wmma::__float_to_tf32(v); }
  __device__ static void zero(Acc& c) { wmma::fill_fragment(c, 0.0f); }
  __device__ static void load_a(A& f, const Stage* p, int ld, int) { wmma::load_matrix_sync(f, p, ld); }
  __device__ static void load_b(B& f, const Stage* p, int ld, int) { wmma::load_matrix_sync(f, p, ld); }
  __device__ static void mma(Acc& c, const A& a, const B& b, int) { wmma::mma_sync(c, a, b, c); }
  __device__ static void store(float* p, const Acc& c, int ld, int) { wmma::store_matrix_sync(p, c, ld, wmma::mem_row_major); }
};
#endif

// bfloat16 and TF32 tensor-core fragments exist from sm_80 (Ampere) on. A build for Turing (sm_75: T4,
// RTX 20xx, the GPUs many users train on) compiles those kernels as a trap; there bfloat16 runs on the
// CUDA cores (samples staged and summed in float32, the accumulation the tensor cores use too) and float32
// stays exact float32 on the CUDA cores.
template <class Math>
__device__ constexpr bool compiled_for_this_arch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  return !std::is_same_v<Math, TensorMath<Wmma<__nv_bfloat16>>> && !std::is_same_v<Math, TensorMath<WmmaTf32>>;
#else
  return true;
#endif
}

__global__ void arch_probe_kernel() {}

// Whether this module's code on the current device is sm_80 or newer: the PTX architecture its kernels
// were compiled as (75 for Turing code even where a newer GPU JIT-compiles it).
bool probe_sm80_tensor_cores() {
  cudaFuncAttributes attributes{};
  return cudaFuncGetAttributes(&attributes, arch_probe_kernel) == cudaSuccess && attributes.ptxVersion >= 80;
}

// probe_sm80_tensor_cores, asked once per device. RETINA_DSCONV_BF16_CUDA_CORES=1 (read once) forces
// the Turing path (bfloat16 on the CUDA cores, no TF32), so a newer GPU can test it.
bool sm80_tensor_cores() {
  static const bool forced_off = [] {
    const char* v = std::getenv("RETINA_DSCONV_BF16_CUDA_CORES");
    return v != nullptr && v[0] == '1';
  }();
  if (forced_off) return false;
  constexpr int kDevices = 64;
  static std::atomic<int8_t> known[kDevices] = {};  // 0 not asked yet, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return probe_sm80_tensor_cores();
  int8_t answer = known[device].load(std::memory_order_relaxed);
  if (answer == 0) {
    answer = probe_sm80_tensor_cores() ? 2 : 1;
    known[device].store(answer, std::memory_order_relaxed);
  }
  return answer == 2;
}

// The products each element type runs on: float64 on the CUDA cores; float32 as TF32 on the tensor
// cores where the call allows it (PyTorch's default for convolutions), else exact float32 on the CUDA
// cores; the 16-bit types on the tensor cores (bfloat16 before sm_80 on the CUDA cores). (float32 once ran
// as 3xTF32 on the tensor cores: 1.3x slower than the CUDA cores on the H100 and less accurate than the
// CPU kernel, benchmarks/RESULTS.md, 2026-11-23; plain TF32 is one product instead of three.)
template <class T, class Launch>
void with_math(const DSConvShape& s, Launch&& launch) {
  if constexpr (std::is_same_v<T, double>) {
    launch(SimtMath<T>{});
  } else if constexpr (std::is_same_v<T, float>) {
    if (s.allow_tf32 && sm80_tensor_cores())
      launch(TensorMath<WmmaTf32>{});
    else
      launch(SimtMath<T>{});
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (sm80_tensor_cores())
      launch(TensorMath<Wmma<T>>{});
    else
      launch(SimtMath<float>{});
  } else {
    launch(TensorMath<Wmma<T>>{});
  }
}

// Four blocks per SM: left to itself nvcc gives these kernels 67-79 registers, three blocks (37.5%
// occupancy), too few warps to hide the gathers' latency; at 64 registers the H100 ran the 1×64×304²
// forward in 360 µs instead of 410 (ncu, 2026-11-23).
constexpr int kBlocksPerSM = 4;

template <class Math, class T, class Acc, int TM, int TN>
__global__ void __launch_bounds__(kThreads, kBlocksPerSM) forward_kernel(ForwardArgs<T, Acc> a) {
  if constexpr (compiled_for_this_arch<Math>()) {
    __shared__ __align__(32) unsigned char shared[SharedTile<Math, TM, TN>::bytes];
    forward_tile<Math, T, Acc, TM, TN>(a, shared, DeviceBlock{});
  } else {
    __trap();
  }
}

template <class Math, class T, class Acc, int TM, int TN, int REST_TM>
__global__ void __launch_bounds__(kThreads, kBlocksPerSM) input_grad_kernel(InputGradArgs<T, Acc> a) {
  if constexpr (compiled_for_this_arch<Math>()) {
    __shared__ __align__(32) unsigned char shared[InputGradShared<Math, TM, TN, REST_TM>::bytes];
    __shared__ Acc partial[kThreads];
    __shared__ Acc running[Tile<TM, TN>::kCols];
    input_grad_tile<Math, T, Acc, TM, TN, REST_TM>(a, shared, partial, running, DeviceBlock{});
  } else {
    __trap();
  }
}

template <class Math, class T, class Acc, int TM, int TN, bool REST>
__global__ void __launch_bounds__(kThreads, kBlocksPerSM) weight_grad_kernel(WeightGradArgs<T, Acc> a) {
  if constexpr (compiled_for_this_arch<Math>()) {
    __shared__ __align__(32) unsigned char shared[SharedTile<Math, TM, TN>::bytes];
    weight_grad_tile<Math, T, Acc, TM, TN, REST>(a, shared, DeviceBlock{});
  } else {
    __trap();
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks the weight gradient aims for: a few waves of a large GPU.
constexpr int64_t kWeightGradBlocks = 512;
// A split sums at least this many pixel chunks (fewer, and the partial sums cost more than they save).
constexpr int64_t kMinChunksPerSplit = 8;

}  // namespace

int64_t dsconv2d_weight_grad_splits(const DSConvShape& s) {
  const ChannelTiles columns = channel_tiles(s.out_channels);
  const int64_t tiles = ceil_div(s.channels * s.taps, kGrid * weight_tile_tm(columns.slices)) *
                        (columns.count + (columns.rest_slices > 0 ? 1 : 0));
  const int64_t chunks = ceil_div(s.batch * s.height * s.width, kChunk);
  int64_t splits = ceil_div(kWeightGradBlocks, tiles > 0 ? tiles : 1);
  if (splits > chunks / kMinChunksPerSplit) splits = chunks / kMinChunksPerSplit;
  if (splits > kDSConvMaxBatch) splits = kDSConvMaxBatch;
  return splits < 1 ? 1 : splits;
}

template <class T>
cudaError_t dsconv2d_locate_cuda(const T* offset, int32_t* low, dsconv_acc_t<T>* frac, uint8_t* live,
                                 const DSConvShape& s, cudaStream_t stream) {
  using Acc = dsconv_acc_t<T>;
  const int64_t total = s.batch * s.height * s.width;
  if (total == 0) return cudaSuccess;
  const LocateArgs<T, Acc> a{offset, low, frac, live, s.batch, s.height, s.width, s.taps, s.morph,
                             static_cast<Acc>(s.extend_scope)};
  const int64_t blocks = ceil_div(total, 256);
  locate_kernel<T, Acc><<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), 256, 0, stream>>>(a);
  return cudaGetLastError();
}

template <class T>
cudaError_t dsconv2d_forward_cuda(const T* input, const int32_t* low, const dsconv_acc_t<T>* frac,
                                  const T* weight_cko, const T* bias, T* out, const DSConvShape& s,
                                  cudaStream_t stream) {
  using Acc = dsconv_acc_t<T>;
  const int64_t pixels = s.height * s.width;
  if (s.batch * pixels * s.out_channels == 0) return cudaSuccess;
  if (s.batch > kDSConvMaxBatch) return cudaErrorInvalidValue;
  const ForwardArgs<T, Acc> a{input, {low, frac, nullptr}, weight_cko, bias, out, s.channels, s.out_channels, s.taps,
                              pixels, SnakeFrame(s.height, s.width, s.morph).high_step};
  with_math<T>(s, [&](auto math) {
    with_forward_tile(s.out_channels, [&](auto tm, auto tn, int64_t tiles) {
      using S = Tile<decltype(tm)::value, decltype(tn)::value>;
      const dim3 grid(static_cast<unsigned>(ceil_div(pixels, S::kCols)), static_cast<unsigned>(tiles),
                      static_cast<unsigned>(s.batch));
      forward_kernel<decltype(math), T, Acc, decltype(tm)::value, decltype(tn)::value>
          <<<grid, kThreads, 0, stream>>>(a);
    });
  });
  return cudaGetLastError();
}

template <class T>
cudaError_t dsconv2d_input_grad_cuda(const T* grad_out, const T* input, const int32_t* low,
                                     const dsconv_acc_t<T>* frac, const uint8_t* live, const T* weight_okc,
                                     dsconv_acc_t<T>* grad_input, dsconv_acc_t<T>* grad_offset, const DSConvShape& s,
                                     cudaStream_t stream) {
  using Acc = dsconv_acc_t<T>;
  const int64_t pixels = s.height * s.width;
  if (s.batch * pixels == 0) return cudaSuccess;
  if (s.batch > kDSConvMaxBatch) return cudaErrorInvalidValue;
  const InputGradArgs<T, Acc> a{grad_out,    input,        {low, frac, live}, weight_okc, grad_input,
                                grad_offset, s.channels,   s.out_channels,    s.taps,     pixels,
                                SnakeFrame(s.height, s.width, s.morph).high_step, static_cast<Acc>(s.extend_scope)};
  with_math<T>(s, [&](auto math) {
    with_input_grad_tile(s.channels, [&](auto tm, auto tn, auto rest_tm) {
      using S = Tile<decltype(tm)::value, decltype(tn)::value>;
      const dim3 grid(static_cast<unsigned>(ceil_div(pixels, S::kCols)), static_cast<unsigned>(s.batch));
      input_grad_kernel<decltype(math), T, Acc, decltype(tm)::value, decltype(tn)::value, decltype(rest_tm)::value>
          <<<grid, kThreads, 0, stream>>>(a);
    });
  });
  return cudaGetLastError();
}

template <class T>
cudaError_t dsconv2d_weight_grad_cuda(const T* grad_out, const T* input, const int32_t* low,
                                      const dsconv_acc_t<T>* frac, dsconv_acc_t<T>* partial, int64_t splits,
                                      const DSConvShape& s, cudaStream_t stream) {
  using Acc = dsconv_acc_t<T>;
  const int64_t pixels = s.height * s.width, rows = s.channels * s.taps;
  if (rows * s.out_channels == 0) return cudaSuccess;
  if (splits < 1 || splits > kDSConvMaxBatch) return cudaErrorInvalidValue;
  const WeightGradArgs<T, Acc> a{grad_out, input,  {low, frac, nullptr}, partial, s.batch,
                                 s.channels, s.out_channels, s.taps, pixels, SnakeFrame(s.height, s.width, s.morph).high_step,
                                 splits};
  cudaError_t error = cudaSuccess;
  with_math<T>(s, [&](auto math) {
    for_each_weight_grad_launch(s.out_channels, [&](auto tm, auto tn, auto rest, int64_t tiles) {
      using S = Tile<decltype(tm)::value, decltype(tn)::value>;
      const dim3 grid(static_cast<unsigned>(ceil_div(rows, S::kRows)), static_cast<unsigned>(tiles),
                      static_cast<unsigned>(splits));
      weight_grad_kernel<decltype(math), T, Acc, decltype(tm)::value, decltype(tn)::value, decltype(rest)::value>
          <<<grid, kThreads, 0, stream>>>(a);
      if (error == cudaSuccess) error = cudaGetLastError();
    });
  });
  return error;
}

#define RETINA_DSCONV_INSTANTIATE(T)                                                                            \
  template cudaError_t dsconv2d_locate_cuda<T>(const T*, int32_t*, dsconv_acc_t<T>*, uint8_t*, const DSConvShape&, \
                                               cudaStream_t);                                                    \
  template cudaError_t dsconv2d_forward_cuda<T>(const T*, const int32_t*, const dsconv_acc_t<T>*, const T*,       \
                                                const T*, T*, const DSConvShape&, cudaStream_t);                 \
  template cudaError_t dsconv2d_input_grad_cuda<T>(const T*, const T*, const int32_t*, const dsconv_acc_t<T>*,    \
                                                   const uint8_t*, const T*, dsconv_acc_t<T>*, dsconv_acc_t<T>*, \
                                                   const DSConvShape&, cudaStream_t);                            \
  template cudaError_t dsconv2d_weight_grad_cuda<T>(const T*, const T*, const int32_t*, const dsconv_acc_t<T>*,   \
                                                    dsconv_acc_t<T>*, int64_t, const DSConvShape&, cudaStream_t);

RETINA_DSCONV_INSTANTIATE(float)
RETINA_DSCONV_INSTANTIATE(double)
RETINA_DSCONV_INSTANTIATE(__half)
RETINA_DSCONV_INSTANTIATE(__nv_bfloat16)

}  // namespace retina
