// The thread-block bodies of the CUDA dynamic snake convolution (docs/dsconv.md). Each is written once against
// a small `Block` interface — thread(), index(axis), sync(), atomic_add(ptr, value) — so the same code runs
// as CUDA kernels (dsconv_cuda.cu, where Block is the hardware block) and on the CPU with one std::thread
// per CUDA thread and a barrier (csrc/tests/test_dsconv_tiles.cpp), which is how CI checks the kernels'
// indexing, staging and synchronisation against the CPU core without a GPU.
//
// All three passes are implicit matrix products whose operand of samples is built in shared memory, one
// chunk of the reduction at a time, and never stored in global memory:
//   forward       out[o, p]        = Σ_r weight[r, o] · S[r, p]        (rows o, columns p, reduce r)
//   input grad    G[r, p]          = Σ_o weight[o, r] · grad_out[o, p] (rows c of one tap, columns p, reduce o),
//                 scattered to the two input lines each sample read, and reduced with their difference
//                 into the position gradient, then the offset gradient (sums outwards from the centre)
//   weight grad   grad_w[r, o]     = Σ_n S[r, n] · grad_out[o, n]      (rows r, columns o, reduce pixels n)
// where r = c * K + k runs over (channel, tap) pairs, channel-major — the K taps of one channel read
// neighbouring lines of one plane, so consecutive rows reuse what the L1 cache holds — and S[r, p] is
// channel c sampled at tap k of pixel p. (The input gradient loops over taps, then channels.) Tap positions
// (`low`, `frac`, `live`, [B, K, H·W]) are computed once per call by `locate_pixel`: C times less data
// than the samples would be.
//
// How a staged chunk is multiplied is the `Math` parameter of every block body: `SimtMath` (each thread
// owns TM x TN results in registers; float64 and float32) or `TensorMath<Mma>` (each warp owns 16 x 16
// fragments on the tensor cores; float16 and bfloat16; Mma is nvcuda::wmma in dsconv_cuda.cu and an
// emulation in the CPU test). Either way the finished tile goes through shared memory, from which the
// epilogues write coalesced rows.
#pragma once

#include <cstdint>
#include <type_traits>

#include "dsconv_taps.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define RETINA_TILE __device__ __forceinline__
#define RETINA_UNROLL _Pragma("unroll")
#else
#define RETINA_TILE inline
#define RETINA_UNROLL
#endif

namespace retina {
namespace dsconv_tiles {

constexpr int kThreads = 256;  // a 16 x 16 grid of threads (staging: TM weights, TN samples each)
constexpr int kGrid = 16;
constexpr int kChunk = 16;  // reduction depth staged in shared memory per step
// Shared rows are padded by 8 elements: rows stay 16-byte aligned and every 16-row block of a row-major
// operand starts 32-byte aligned, which tensor-core fragment loads require (8 16-bit or 4 32-bit elements).
constexpr int kPad = 8;
constexpr int kWarpSize = 32, kFragment = 16;  // tensor-core fragments are 16 x 16 (x 8 or 16 deep)

// A block computes a kRows x kCols tile; shared operands are [kChunk][kRows + pad] and [kChunk][kCols + pad].
template <int TM, int TN>
struct Tile {
  static constexpr int kRows = kGrid * TM, kCols = kGrid * TN;
  static constexpr int kLdA = kRows + kPad, kLdB = kCols + kPad;
  static constexpr int kSharedA = kChunk * kLdA, kSharedB = kChunk * kLdB;
  static constexpr int kLdT = kCols + kPad, kSharedTile = kRows * kLdT;  // a finished tile, [kRows][kLdT]
  static_assert(kThreads % kCols == 0, "a thread stages whole columns");
  static constexpr int kThreadsPerCol = kThreads / kCols;  // thread t has column t % kCols, as do t ± kCols
  static_assert(kChunk * kCols == kThreads * TN && kChunk * kRows == kThreads * TM, "TN samples, TM weights each");
};

// How many kGrid-wide slices of channels one block covers: the channel rows of a pixel tile (output
// channels in the forward, input channels in the input gradient) or the output-channel columns of a
// weight-gradient tile. 1, 2 or 4: the fewest that cover `extent`, at most 4 (64 channels); wider
// extents take several tiles (channel_tiles), each gathering its own copy of the bilinear samples. One
// 128-wide tile (8 slices) for 65-128 channels gathered each sample once, but measured on an H200 it lost
// where it mattered: S3-OCTA's 144->72 layer at 304² 9.98 vs 8.59 ms forward + backward, 72->72 at 152²
// 1.84 vs 1.21, its training step 4-6% slower at batch 4 (benchmarks/RESULTS.md, 2026-11-26; not
// profiled: it launches half the blocks, and a thread's 8 x 2 results reuse each sample less than 4 x 4
// do). Halving the gathers did not pay there, which points at the products (and what they ask of
// registers and shared memory), not the gathers, as what bounds these kernels at those widths.
constexpr int tile_slices(int64_t extent) { return extent <= kGrid ? 1 : (extent <= 2 * kGrid ? 2 : 4); }

// How `extent` channels are covered in the gradients: `count` tiles of `slices` slices from channel 0
// (the last may be partial), then, where `rest_slices` > 0, one narrower tile of the channels left over
// (at most 32). 64-wide tiles alone would compute 128 rows for S3-OCTA's 72 channels and 192 for its 144,
// and 256 for its 216; with rest tiles, 80, 144 and 224. A rest tile gathers the samples a 64-wide one
// would but multiplies a quarter or half as many. Measured on the H200 (S3-OCTA's 1x304² step, 8262364
// vs 27916c1): the weight gradient's kernels 8.66 vs 9.48 ms a step, the input gradient's 7.53 vs 7.87;
// the forward's lost (with_forward_tile), and it keeps whole tiles. Extents without a rest launch what
// they did before.
struct ChannelTiles {
  int slices;
  int64_t count;
  int rest_slices;  // 0: no rest tile
};
constexpr int64_t kWideTile = 4 * kGrid;
// Tiles of one width alone: the narrowest that covers `extent`, or as many 64-wide ones as it takes.
constexpr ChannelTiles whole_tiles(int64_t extent) {
  return {tile_slices(extent), extent <= 0 ? 0 : (extent + kWideTile - 1) / kWideTile, 0};
}
constexpr ChannelTiles channel_tiles(int64_t extent) {
  const int64_t rest = extent % kWideTile;
  if (extent <= kWideTile || rest == 0 || rest > 2 * kGrid) return whole_tiles(extent);
  return {4, extent / kWideTile, tile_slices(rest)};
}
// The first channel of channel_tiles(extent)'s rest tile, where it has one. The kernels of rest tiles
// compute it from the extent (a template flag rather than an argument: the 64-wide kernels sit at the
// register limit, and with one more 64-bit argument nvcc spilled the float forward's gathered samples
// to local memory inside its main loop, when the forward had rest tiles).
RETINA_HD constexpr int64_t rest_tile_first(int64_t extent) { return extent - extent % kWideTile; }

// The Tile<TM, TN> of each choice, a thread holding TM x TN <= 16 results. Pixel tiles (channels x
// pixels): 16 x 128, 32 x 128, 64 x 64; the input gradient's rest tiles share the 64-pixel width of its
// 64 x 64 tiles: 16 x 64, 32 x 64. Weight tiles ((channel, tap) rows x output channels): 64 x 16,
// 64 x 32, 64 x 64.
constexpr int pixel_tile_tm(int slices) { return slices; }
constexpr int pixel_tile_tn(int slices) { return slices <= 2 ? 8 : 4; }
constexpr int weight_tile_tm(int) { return 4; }
constexpr int weight_tile_tn(int slices) { return slices; }

// ---- what the launcher runs (dsconv_cuda.cu; the CPU test runs the same) -----------------------------

template <int N>
using Int = std::integral_constant<int, N>;

// The forward's one launch for `out_channels`: launch(Int<TM>{}, Int<TN>{}, output-channel tiles), whole
// tiles only. With a rest tile the forward lost on the H200 (S3-OCTA's 1x304² step, its forward kernels
// 7.48 vs 6.17 ms a step, while the weight and input gradients' gained: 8.66 vs 9.48 and 7.53 vs 7.87;
// benchmarks/RESULTS.md, 2026-11-26, 8262364 vs 27916c1): its two launches took 4.19 and 3.29 ms, so a
// 16-wide rest launch cost at least 79% of a 64-wide one; the forward's time follows its gathers, which
// a rest tile repeats, more than its products, which it saves.
template <class Launch>
void with_forward_tile(int64_t out_channels, Launch&& launch) {
  const ChannelTiles tiles = whole_tiles(out_channels);
  switch (tiles.slices) {
    case 1: launch(Int<pixel_tile_tm(1)>{}, Int<pixel_tile_tn(1)>{}, tiles.count); break;
    case 2: launch(Int<pixel_tile_tm(2)>{}, Int<pixel_tile_tn(2)>{}, tiles.count); break;
    default: launch(Int<pixel_tile_tm(4)>{}, Int<pixel_tile_tn(4)>{}, tiles.count);
  }
}

// The weight gradient's launches for `out_channels` (its tiles' columns): launch(Int<TM>{}, Int<TN>{},
// std::bool_constant<REST>{}, column tiles) for its whole tiles from column 0, then, as channel_tiles
// says, for its rest tile (on the same stream).
template <class Launch>
void for_each_weight_grad_launch(int64_t out_channels, Launch&& launch) {
  const ChannelTiles tiles = channel_tiles(out_channels);
  auto run = [&](auto slices, auto rest, int64_t count) {
    constexpr int s = decltype(slices)::value;
    launch(Int<weight_tile_tm(s)>{}, Int<weight_tile_tn(s)>{}, rest, count);
  };
  switch (tiles.slices) {
    case 1: run(Int<1>{}, std::false_type{}, tiles.count); break;
    case 2: run(Int<2>{}, std::false_type{}, tiles.count); break;
    default: run(Int<4>{}, std::false_type{}, tiles.count);
  }
  if (tiles.rest_slices == 1) run(Int<1>{}, std::true_type{}, int64_t(1));
  if (tiles.rest_slices == 2) run(Int<2>{}, std::true_type{}, int64_t(1));
}

// The input gradient's one launch for `channels` (all its channel tiles in each block): launch(Int<TM>{},
// Int<TN>{}, Int<REST_TM>{}). Only 64-wide tiles leave a rest; its tile has their 64-pixel width.
template <class Launch>
void with_input_grad_tile(int64_t channels, Launch&& launch) {
  const ChannelTiles tiles = channel_tiles(channels);
  constexpr int kWideTM = pixel_tile_tm(4), kWideTN = pixel_tile_tn(4);
  switch (tiles.slices) {
    case 1: launch(Int<pixel_tile_tm(1)>{}, Int<pixel_tile_tn(1)>{}, Int<0>{}); break;
    case 2: launch(Int<pixel_tile_tm(2)>{}, Int<pixel_tile_tn(2)>{}, Int<0>{}); break;
    default:
      switch (tiles.rest_slices) {
        case 0: launch(Int<kWideTM>{}, Int<kWideTN>{}, Int<0>{}); break;
        case 1: launch(Int<kWideTM>{}, Int<kWideTN>{}, Int<1>{}); break;
        default: launch(Int<kWideTM>{}, Int<kWideTN>{}, Int<2>{});
      }
  }
}

// Loads and stores in the accumulation type: float for float/half/bfloat16, double for double.
RETINA_TILE float to_acc(float v) { return v; }
RETINA_TILE double to_acc(double v) { return v; }
template <class T, class Acc>
RETINA_TILE T from_acc(Acc v) {
  return static_cast<T>(v);
}
#if defined(__CUDACC__)
RETINA_TILE float to_acc(__half v) { return __half2float(v); }
RETINA_TILE float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
RETINA_TILE __half from_acc<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
RETINA_TILE __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
#endif

// Tap positions of every pixel: [B, K, H·W] each.
template <class Acc>
struct TapPlanes {
  const int32_t* low;   // plane index of the lower line
  const Acc* frac;      // weight of the upper line, at low + high_step
  const uint8_t* live;  // 1 where the deformed coordinate was inside the image
};

// The (channel, tap) pair of a row r = channel * K + tap of the reduction, moved forward without dividing
// (a few steps per row tile).
struct RowCursor {
  int64_t channel, tap;
  RETINA_TILE RowCursor(int64_t row, int64_t taps) : channel(row / taps), tap(row % taps) {}
  RETINA_TILE void advance(int64_t rows, int64_t taps) {
    tap += rows;
    while (tap >= taps) {
      tap -= taps;
      ++channel;
    }
  }
};

// Channel `plane` sampled at (low, frac).
template <class T, class Acc>
RETINA_TILE Acc lerp_sample(const T* plane, int32_t low, int64_t high_step, Acc frac) {
  const Acc a = to_acc(plane[low]);
  return a + frac * (to_acc(plane[low + high_step]) - a);
}

// ---- the products: result[r][c] = Σ over chunks of Σ_kk a[kk][r] · b[kk][c], the operands staged as
// a [kChunk][kLdA] and b [kChunk][kLdB] ------------------------------------------------------------------

// Thread (tr, tc) of the 16 x 16 grid owns rows tr*TM .. and columns tc*TN .. in registers.
template <class Acc, int TM, int TN>
struct SimtProduct {
  using S = Tile<TM, TN>;
  Acc acc[TM][TN] = {};

  RETINA_TILE void multiply(const Acc* a, const Acc* b, int t) {
    const int tr = t / kGrid, tc = t % kGrid;
    RETINA_UNROLL
    for (int kk = 0; kk < kChunk; ++kk) {
      Acc ra[TM], rb[TN];
      RETINA_UNROLL
      for (int i = 0; i < TM; ++i) ra[i] = a[kk * S::kLdA + tr * TM + i];
      RETINA_UNROLL
      for (int j = 0; j < TN; ++j) rb[j] = b[kk * S::kLdB + tc * TN + j];
      RETINA_UNROLL
      for (int i = 0; i < TM; ++i) {
        RETINA_UNROLL
        for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
      }
    }
  }
  // The results into tile [kRows][kLdT]; the caller syncs before reading it.
  RETINA_TILE void finish(Acc* tile, int t) const {
    const int tr = t / kGrid, tc = t % kGrid;
    RETINA_UNROLL
    for (int i = 0; i < TM; ++i) {
      RETINA_UNROLL
      for (int j = 0; j < TN; ++j) tile[(tr * TM + i) * S::kLdT + tc * TN + j] = acc[i][j];
    }
  }
};

// Warp w owns kPerWarp consecutive 16 x 16 fragments of one fragment row (so one A fragment serves them
// all). Mma: Stage (operand type in shared memory), kK (fragment depth), fragment types A (16 x kK,
// column-major: element (m, k) at p[k * ld + m]), B (kK x 16, row-major), Acc (float), and warp-wide
// zero / load_a / load_b / mma / store (row-major float), each given the thread's lane.
template <class Mma, int TM, int TN>
struct TensorProduct {
  using S = Tile<TM, TN>;
  static constexpr int kFragCols = S::kCols / kFragment, kFrags = (S::kRows / kFragment) * kFragCols;
  static constexpr int kWarps = kThreads / kWarpSize, kPerWarp = (kFrags + kWarps - 1) / kWarps;
  static_assert(S::kRows % kFragment == 0 && S::kCols % kFragment == 0 && kChunk % Mma::kK == 0, "whole fragments");
  static_assert(kFragCols % kPerWarp == 0, "a warp's fragments lie in one fragment row");
  typename Mma::Acc acc[kPerWarp];

  RETINA_TILE TensorProduct() {
    RETINA_UNROLL
    for (int i = 0; i < kPerWarp; ++i) Mma::zero(acc[i]);
  }
  RETINA_TILE void multiply(const typename Mma::Stage* a, const typename Mma::Stage* b, int t) {
    const int first = (t / kWarpSize) * kPerWarp, lane = t % kWarpSize;
    if (first >= kFrags) return;  // the same for the whole warp, as the warp-wide calls require
    const int fr = first / kFragCols, fc = first % kFragCols;
    RETINA_UNROLL
    for (int kk = 0; kk < kChunk; kk += Mma::kK) {
      typename Mma::A fa;
      Mma::load_a(fa, a + kk * S::kLdA + fr * kFragment, S::kLdA, lane);
      RETINA_UNROLL
      for (int i = 0; i < kPerWarp; ++i) {
        typename Mma::B fb;
        Mma::load_b(fb, b + kk * S::kLdB + (fc + i) * kFragment, S::kLdB, lane);
        Mma::mma(acc[i], fa, fb, lane);
      }
    }
  }
  RETINA_TILE void finish(float* tile, int t) const {
    const int first = (t / kWarpSize) * kPerWarp, lane = t % kWarpSize;
    if (first >= kFrags) return;
    const int fr = first / kFragCols, fc = first % kFragCols;
    RETINA_UNROLL
    for (int i = 0; i < kPerWarp; ++i)
      Mma::store(tile + fr * kFragment * S::kLdT + (fc + i) * kFragment, acc[i], S::kLdT, lane);
  }
};

// Math: what a staged operand element is (Stage), what results are (Result) and the per-thread product.
template <class Acc>
struct SimtMath {
  using Stage = Acc;
  using Result = Acc;
  template <int TM, int TN>
  using Product = SimtProduct<Acc, TM, TN>;
  RETINA_TILE static Stage stage(Acc v) { return v; }
};

template <class Mma>
struct TensorMath {
  using Stage = typename Mma::Stage;
  using Result = float;
  template <int TM, int TN>
  using Product = TensorProduct<Mma, TM, TN>;
  RETINA_TILE static Stage stage(float v) { return Mma::stage(v); }
};

// A block's shared memory: the two staged operands, and over them, once the products are done, the
// finished tile [kRows][kLdT]. `bytes` is what the kernel declares (32-byte aligned).
template <class Math, int TM, int TN>
struct SharedTile {
  using S = Tile<TM, TN>;
  using Stage = typename Math::Stage;
  using Result = typename Math::Result;
  static constexpr int kOperandBytes = (S::kSharedA + S::kSharedB) * int(sizeof(Stage));
  static constexpr int kTileBytes = S::kSharedTile * int(sizeof(Result));
  static constexpr int bytes = kOperandBytes > kTileBytes ? kOperandBytes : kTileBytes;
  // Fragment loads and stores need 32-byte aligned starts and 16-byte multiples as row strides.
  static_assert(S::kLdA * sizeof(Stage) % 16 == 0 && S::kLdB * sizeof(Stage) % 16 == 0, "operand rows");
  static_assert(S::kSharedA * sizeof(Stage) % 32 == 0, "the second operand starts 32-byte aligned");
  static_assert(8 * S::kLdA * sizeof(Stage) % 32 == 0 && 8 * S::kLdB * sizeof(Stage) % 32 == 0, "8-deep steps");
  static_assert(S::kLdT * sizeof(Result) % 16 == 0 && kFragment * S::kLdT * sizeof(Result) % 32 == 0, "tile");

  Stage* a;
  Stage* b;
  Result* tile;
  RETINA_TILE explicit SharedTile(unsigned char* shared)
      : a(reinterpret_cast<Stage*>(shared)), b(a + S::kSharedA), tile(reinterpret_cast<Result*>(shared)) {}
};

// ---- tap positions: one thread per pixel ------------------------------------------------------------

template <class T, class Acc>
struct LocateArgs {
  const T* offset;  // [B, K, H, W]
  int32_t* low;
  Acc* frac;
  uint8_t* live;  // [B, K, H·W] each
  int64_t batch, height, width, taps;
  int morph;
  Acc scope;
};

// Tap positions of pixel n of the flattened [B, H·W].
template <class T, class Acc>
RETINA_TILE void locate_pixel(const LocateArgs<T, Acc>& a, int64_t n) {
  const int64_t pixels = a.height * a.width, b = n / pixels, p = n % pixels;
  const SnakeFrame f(a.height, a.width, a.morph);
  const T* offset = a.offset + b * a.taps * pixels + p;
  const int64_t base = b * a.taps * pixels + p;
  for_each_tap(
      f, a.taps, a.scope, f.u_of(p), f.v_of(p), [&](int64_t k) { return to_acc(offset[k * pixels]); },
      [&](int64_t k, const TapSample<Acc>& tap) {
        a.low[base + k * pixels] = static_cast<int32_t>(tap.low);
        a.frac[base + k * pixels] = tap.frac;
        a.live[base + k * pixels] = tap.live ? 1 : 0;
      });
}

// ---- forward ----------------------------------------------------------------------------------------

template <class T, class Acc>
struct ForwardArgs {
  const T* input;  // [B, C, H·W]
  TapPlanes<Acc> taps;
  const T* weight;  // [C, K, O]: weight[o, c, k] at (c * K + k) * O + o
  const T* bias;    // [O] or nullptr
  T* out;           // [B, O, H·W]
  int64_t channels, out_channels, num_taps, pixels, high_step;
};

// Block (index(0), index(1), index(2)) = (pixel tile, output-channel tile, image); `shared`: SharedTile bytes.
template <class Math, class T, class Acc, int TM, int TN, class Block>
RETINA_TILE void forward_tile(const ForwardArgs<T, Acc>& a, unsigned char* shared, const Block& blk) {
  using S = Tile<TM, TN>;
  const SharedTile<Math, TM, TN> sh(shared);
  const int t = blk.thread();
  const int64_t C = a.channels, O = a.out_channels, HW = a.pixels, rows = C * a.num_taps;
  const int64_t p0 = blk.index(0) * S::kCols, o0 = blk.index(1) * S::kRows, b = blk.index(2);
  const T* x = a.input + b * C * HW;
  const int32_t* low = a.taps.low + b * a.num_taps * HW;
  const Acc* frac = a.taps.frac + b * a.num_taps * HW;

  // Each thread builds the samples of one pixel, rows first, first + step, ... of every chunk (TN of
  // them), tracking their (channel, tap) incrementally (no 64-bit division per sample), and TM weights.
  // The next chunk is gathered into registers while this one is multiplied, so the gathers' latency
  // overlaps the arithmetic of the same warps.
  constexpr int step = S::kThreadsPerCol;
  const int first = t / S::kCols, q = t % S::kCols;
  const int64_t p = p0 + q;
  RowCursor chunk_row(first, a.num_taps);  // (channel, tap) of row r0 + first
  // Weights: thread t stages output channel o0 + w_col of chunk rows w_row, w_row + w_step, ... (a tile
  // has at most kThreads rows, a power of two times kGrid, so the split is exact).
  constexpr int w_step = kThreads / S::kRows;
  static_assert(kThreads % S::kRows == 0 && w_step * TM == kChunk, "TM weights per thread, one column");
  const int w_row = t / S::kRows, w_col = t % S::kRows;
  const bool w_in = o0 + w_col < O;
  const T* w_first = a.weight + int64_t(w_row) * O + o0 + w_col;  // row r0 + w_row is r0 * O further
  Acc next_s[TN], next_w[TM];
  auto gather = [&](int64_t r0) {
    RowCursor row = chunk_row;
    RETINA_UNROLL
    for (int i = 0; i < TN; ++i, row.advance(step, a.num_taps)) {
      next_s[i] = Acc(0);
      if (p < HW && r0 + first + step * i < rows) {
        const int64_t at = row.tap * HW + p;
        next_s[i] = lerp_sample(x + row.channel * HW, low[at], a.high_step, frac[at]);
      }
    }
    const T* w = w_first + r0 * O;
    RETINA_UNROLL
    for (int i = 0; i < TM; ++i)
      next_w[i] = w_in && r0 + w_row + w_step * i < rows ? to_acc(w[int64_t(w_step) * i * O]) : Acc(0);
  };

  typename Math::template Product<TM, TN> product;
  gather(0);
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    RETINA_UNROLL
    for (int i = 0; i < TN; ++i) sh.b[(first + step * i) * S::kLdB + q] = Math::stage(next_s[i]);
    RETINA_UNROLL
    for (int i = 0; i < TM; ++i) sh.a[(w_row + w_step * i) * S::kLdA + w_col] = Math::stage(next_w[i]);
    blk.sync();
    chunk_row.advance(kChunk, a.num_taps);
    if (r0 + kChunk < rows) gather(r0 + kChunk);
    product.multiply(sh.a, sh.b, t);
    blk.sync();
  }
  product.finish(sh.tile, t);
  blk.sync();
  // Thread (first, q) writes pixel p of output channels first, first + step, ...: a warp writes a run of
  // consecutive pixels.
  if (p < HW) {
    for (int m = first; m < S::kRows && o0 + m < O; m += step) {
      const int64_t o = o0 + m;
      const Acc add = a.bias ? to_acc(a.bias[o]) : Acc(0);
      a.out[(b * O + o) * HW + p] = from_acc<T>(Acc(sh.tile[m * S::kLdT + q]) + add);
    }
  }
}

// ---- input and offset gradients ---------------------------------------------------------------------

template <class T, class Acc>
struct InputGradArgs {
  const T* grad_out;  // [B, O, H·W]
  const T* input;     // [B, C, H·W]
  TapPlanes<Acc> taps;
  const T* weight;   // [O, K, C]: weight[o, c, k] at (o * K + k) * C + c
  Acc* grad_input;   // [B, C, H·W], zeroed by the caller, accumulated atomically; null: not wanted
  Acc* grad_offset;  // [B, K, H·W], overwritten
  int64_t channels, out_channels, num_taps, pixels, high_step;
  Acc scope;
};

// One channel tile of the input gradient at tap k, for the block's pixels p0 .. p0 + kCols: G for channels
// c0 .. c0 + kRows, scattered to grad_input; the thread's share of the position gradient (its pixel,
// its channels) is added to grad_position. `shared`: SharedTile<Math, TM, TN> bytes.
template <class Math, class T, class Acc, int TM, int TN, class Block>
RETINA_TILE void input_grad_channel_tile(const InputGradArgs<T, Acc>& a, unsigned char* shared, int64_t b, int64_t k,
                                         int64_t p0, int64_t c0, int32_t tap_low, Acc tap_frac, Acc& grad_position,
                                         const Block& blk) {
  using S = Tile<TM, TN>;
  const SharedTile<Math, TM, TN> sh(shared);
  const int t = blk.thread();
  const int64_t C = a.channels, O = a.out_channels, K = a.num_taps, HW = a.pixels;
  const T* g = a.grad_out + b * O * HW;
  // In the scatter each thread owns one pixel and every kThreadsPerCol-th channel of the tile:
  // consecutive threads, consecutive pixels, so a warp's atomic adds and reads fall on nearby addresses.
  const int q = t % S::kCols, first = t / S::kCols;
  const int64_t p = p0 + q;

  typename Math::template Product<TM, TN> product;
  for (int64_t o0 = 0; o0 < O; o0 += kChunk) {
    for (int e = t; e < kChunk * S::kRows; e += kThreads) {
      const int kk = e / S::kRows, m = e % S::kRows;
      const int64_t o = o0 + kk, c = c0 + m;
      sh.a[kk * S::kLdA + m] = Math::stage(o < O && c < C ? to_acc(a.weight[(o * K + k) * C + c]) : Acc(0));
    }
    for (int e = t; e < kChunk * S::kCols; e += kThreads) {
      const int kk = e / S::kCols, j = e % S::kCols;
      const int64_t o = o0 + kk, pj = p0 + j;
      sh.b[kk * S::kLdB + j] = Math::stage(o < O && pj < HW ? to_acc(g[o * HW + pj]) : Acc(0));
    }
    blk.sync();
    product.multiply(sh.a, sh.b, t);
    blk.sync();
  }
  // tile[m][j]: the gradient of channel c0 + m's sample at tap k of pixel p0 + j.
  product.finish(sh.tile, t);
  blk.sync();
  // Split each sample's gradient between the two lines it interpolated; times their difference, it is
  // the gradient of the sample position.
  if (p < HW) {
    const T* x = a.input + b * C * HW;
    for (int m = first; m < S::kRows && c0 + m < C; m += S::kThreadsPerCol) {
      const int64_t c = c0 + m;
      const Acc v = sh.tile[m * S::kLdT + q];
      if (a.grad_input) {  // (the same for the whole grid: no divergence)
        const Acc upper = v * tap_frac;
        Acc* grad_plane = a.grad_input + (b * C + c) * HW;
        blk.atomic_add(grad_plane + tap_low, v - upper);
        blk.atomic_add(grad_plane + tap_low + a.high_step, upper);
      }
      const T* plane = x + c * HW;
      grad_position += v * (to_acc(plane[tap_low + a.high_step]) - to_acc(plane[tap_low]));
    }
  }
  blk.sync();  // the tile is the operands' memory: read before the next channel tile is staged
}

// The shared memory of an input-gradient block whose channel tiles are Tile<TM, TN> and, for the channels
// left over, Tile<REST_TM, TN> (REST_TM 0: none); see input_grad_tile.
template <class Math, int TM, int TN, int REST_TM>
struct InputGradShared {
  static constexpr int kRestTM = REST_TM > 0 ? REST_TM : TM;
  static constexpr int a = SharedTile<Math, TM, TN>::bytes, b = SharedTile<Math, kRestTM, TN>::bytes;
  static constexpr int bytes = a > b ? a : b;
};

// Block (index(0), index(1)) = (pixel tile, image); shared memory: `shared` (InputGradShared bytes: the
// staged operands, then the finished tile for the scatter), `partial` (kThreads position-gradient
// partials) and `running` (kCols running sums). The channels are covered as channel_tiles(C) says: tiles
// of TM slices from channel 0, then, with REST_TM > 0, one tile of REST_TM slices for the channels left
// over after the whole TM tiles (at most REST_TM * kGrid of them). Taps run outermost, from the ends of the
// snake towards its centre (K-1 .. c, then 0 .. c-1), so the offset gradient — the position gradient
// summed outwards from the centre — is a running sum finished tap by tap, with no [K, pixels] buffer.
template <class Math, class T, class Acc, int TM, int TN, int REST_TM, class Block>
RETINA_TILE void input_grad_tile(const InputGradArgs<T, Acc>& a, unsigned char* shared, Acc* partial, Acc* running,
                                 const Block& blk) {
  using S = Tile<TM, TN>;
  static_assert(REST_TM == 0 || Tile<REST_TM, TN>::kCols == S::kCols, "one pixel tile for every channel tile");
  static_assert(REST_TM == 0 || S::kRows == kWideTile, "only 64-wide tiles leave a rest (channel_tiles)");
  const int t = blk.thread();
  const int64_t p0 = blk.index(0) * S::kCols, b = blk.index(1);
  const int64_t C = a.channels, K = a.num_taps, HW = a.pixels, centre = K / 2;
  const int64_t tap_base = b * K * HW;
  const int64_t p = p0 + t % S::kCols;
  const int64_t whole_end = REST_TM > 0 ? rest_tile_first(C) : C;  // channels in tiles of TM slices

  for (int64_t n = 0; n < K; ++n) {
    const int64_t k = n <= centre ? K - 1 - n : n - centre - 1;
    if ((n == 0 || n == centre + 1) && t < S::kCols) running[t] = Acc(0);  // a new side of the snake
    const int32_t tap_low = p < HW ? a.taps.low[tap_base + k * HW + p] : 0;
    const Acc tap_frac = p < HW ? a.taps.frac[tap_base + k * HW + p] : Acc(0);
    Acc grad_position = Acc(0);
    for (int64_t c0 = 0; c0 < whole_end; c0 += S::kRows)
      input_grad_channel_tile<Math, T, Acc, TM, TN>(a, shared, b, k, p0, c0, tap_low, tap_frac, grad_position, blk);
    if constexpr (REST_TM > 0) {
      if (whole_end < C)
        input_grad_channel_tile<Math, T, Acc, REST_TM, TN>(a, shared, b, k, p0, whole_end, tap_low, tap_frac,
                                                            grad_position, blk);
    }
    // Sum the position gradient over the threads that share a pixel, then extend the running sum.
    partial[t] = grad_position;
    blk.sync();
    if (t < S::kCols && p0 + t < HW) {
      const int64_t pt = p0 + t;
      Acc total = Acc(0);
      for (int group = 0; group < S::kThreadsPerCol; ++group) total += partial[group * S::kCols + t];
      if (k != centre && a.taps.live[tap_base + k * HW + pt]) running[t] += a.scope * total;
      a.grad_offset[tap_base + k * HW + pt] = k == centre ? Acc(0) : running[t];
    }
    blk.sync();
  }
}

// ---- weight gradient --------------------------------------------------------------------------------

template <class T, class Acc>
struct WeightGradArgs {
  const T* grad_out;  // [B, O, H·W]
  const T* input;     // [B, C, H·W]
  TapPlanes<Acc> taps;
  Acc* partial;  // [splits, C, K, O]: this split's sum for weight[o, c, k] at ((split * C + c) * K + k) * O + o
  int64_t batch, channels, out_channels, num_taps, pixels, high_step, splits;
};

// Block (index(0), index(1), index(2)) = ((channel, tap) row tile, output-channel tile, split). Split s sums
// the pixel chunks s, s + splits, ... of the flattened [B, H·W]; every (row, o) of its tile is written.
// REST: the block is channel_tiles(O)'s rest tile (index(1) is 0), whose columns start at rest_tile_first(O).
template <class Math, class T, class Acc, int TM, int TN, bool REST, class Block>
RETINA_TILE void weight_grad_tile(const WeightGradArgs<T, Acc>& a, unsigned char* shared, const Block& blk) {
  using S = Tile<TM, TN>;
  const SharedTile<Math, TM, TN> sh(shared);
  const int t = blk.thread();
  const int64_t C = a.channels, O = a.out_channels, K = a.num_taps, HW = a.pixels;
  const int64_t r0 = blk.index(0) * S::kRows, o0 = REST ? rest_tile_first(O) : blk.index(1) * S::kCols;
  const int64_t split = blk.index(2);
  const int64_t rows = C * K, total = a.batch * HW;

  // The rows this thread stages are the same in every chunk: find their (channel, tap) once.
  constexpr int kLanes = kThreads / kChunk, kSampleRows = S::kRows / kLanes;
  static_assert(S::kRows % kLanes == 0 && S::kCols == kLanes * TN, "rows and columns split evenly over a pixel's threads");
  const int kk = t % kChunk;
  int64_t row_tap[kSampleRows], row_channel[kSampleRows];
  bool row_in[kSampleRows];
  RETINA_UNROLL
  for (int i = 0; i < kSampleRows; ++i) {
    const int64_t r = r0 + t / kChunk + kLanes * i;
    row_in[i] = r < rows;
    row_channel[i] = row_in[i] ? r / K : 0;
    row_tap[i] = row_in[i] ? r % K : 0;
  }

  // Thread t stages pixel n0 + t % kChunk (consecutive threads, consecutive pixels: coalesced gathers) for
  // the rows and output channels t / kChunk + kLanes * i; one division per chunk finds its image. The
  // next chunk is gathered into registers while this one is multiplied.
  Acc next_s[kSampleRows], next_g[TN];
  auto gather = [&](int64_t n0) {
    const int64_t n = n0 + kk;
    const bool pixel_in = n < total;
    const int64_t b = pixel_in ? n / HW : 0, p = n - b * HW;
    RETINA_UNROLL
    for (int i = 0; i < kSampleRows; ++i) {
      next_s[i] = Acc(0);
      if (pixel_in && row_in[i]) {
        const int64_t at = (b * K + row_tap[i]) * HW + p;
        next_s[i] = lerp_sample(a.input + (b * C + row_channel[i]) * HW, a.taps.low[at], a.high_step, a.taps.frac[at]);
      }
    }
    RETINA_UNROLL
    for (int i = 0; i < TN; ++i) {
      const int64_t o = o0 + t / kChunk + kLanes * i;
      next_g[i] = pixel_in && o < O ? to_acc(a.grad_out[(b * O + o) * HW + p]) : Acc(0);
    }
  };

  typename Math::template Product<TM, TN> product;
  const int64_t stride = a.splits * kChunk;
  if (split * kChunk < total) gather(split * kChunk);
  for (int64_t n0 = split * kChunk; n0 < total; n0 += stride) {
    RETINA_UNROLL
    for (int i = 0; i < kSampleRows; ++i) sh.a[kk * S::kLdA + t / kChunk + kLanes * i] = Math::stage(next_s[i]);
    RETINA_UNROLL
    for (int i = 0; i < TN; ++i) sh.b[kk * S::kLdB + t / kChunk + kLanes * i] = Math::stage(next_g[i]);
    blk.sync();
    if (n0 + stride < total) gather(n0 + stride);
    product.multiply(sh.a, sh.b, t);
    blk.sync();
  }
  product.finish(sh.tile, t);
  blk.sync();
  // Thread t writes output channel o0 + t % kCols of rows t / kCols, + kThreadsPerCol, ...: consecutive
  // threads, consecutive addresses.
  const int col = t % S::kCols;
  if (o0 + col < O) {
    for (int m = t / S::kCols; m < S::kRows && r0 + m < rows; m += S::kThreadsPerCol)
      a.partial[(split * rows + r0 + m) * O + o0 + col] = sh.tile[m * S::kLdT + col];
  }
}

}  // namespace dsconv_tiles
}  // namespace retina
