#include "dsconv_cpu.h"

#include <algorithm>
#include <vector>

#include "dsconv_taps.h"

namespace retina {
namespace {

// Work is cut into strips of `strip` consecutive `across` positions (all `along` positions), and strips
// into tiles of a few `along` lines. Tap k of a pixel reads across positions v + k - c only, so a strip's
// input-gradient writes stay within c of it: strips of one parity never touch each other when the
// strip width is at least K - 1, and backward runs the even strips, then the odd ones, without locks.
// Along the deformed axis a sample may land anywhere, so a strip's tiles stay in one backward unit; when
// one parity has fewer strips than threads, the backward also splits the channels into groups (their
// input-gradient planes are disjoint) and sums the groups' position gradients at the end.
struct Tiling {
  int64_t strip, strips_per_image, lines_per_tile, max_tile;
  Tiling(const DSConvShape& s, const SnakeFrame& f) {
    strip = std::min<int64_t>(f.across, std::max<int64_t>(16, s.taps - 1));
    strips_per_image = (f.across + strip - 1) / strip;
    lines_per_tile = std::max<int64_t>(1, 256 / strip);  // ~256 pixels: the tile's samples stay in cache
    // The workers' buffers are [C*K or O, max_tile]: sized for the largest tile this image has, not for
    // 256 pixels, or a U-Net's deepest levels (a few pixels, hundreds of channels) spend their time
    // zeroing megabytes (a 2x2 128->128 layer's forward + backward took 3.4 ms on one thread, now 1.0).
    max_tile = strip * std::min(lines_per_tile, f.along);
  }
};

// A unit of work, done by one worker: the tiles of image b, strip `strip`, lines [u0, u1), channels [c0, c1).
struct Unit {
  int64_t b, strip, u0, u1, c0, c1;
};

// Forward units: one per tile (outputs of different tiles are disjoint).
std::vector<Unit> forward_units(const DSConvShape& s, const SnakeFrame& f, const Tiling& t) {
  std::vector<Unit> list;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t strip = 0; strip < t.strips_per_image; ++strip)
      for (int64_t u0 = 0; u0 < f.along; u0 += t.lines_per_tile)
        list.push_back({b, strip, u0, std::min(u0 + t.lines_per_tile, f.along), 0, s.channels});
  return list;
}

// Backward units of one strip parity: whole strips, times channel groups of `group` channels.
std::vector<Unit> backward_units(const DSConvShape& s, const SnakeFrame& f, const Tiling& t, int parity, int64_t group) {
  std::vector<Unit> list;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t strip = parity; strip < t.strips_per_image; strip += 2)
      for (int64_t c0 = 0; c0 < s.channels; c0 += group)
        list.push_back({b, strip, 0, f.along, c0, std::min(c0 + group, s.channels)});
  return list;
}

// Where the K taps of each pixel of a tile sample: low/high plane indices, the weight of high, and
// whether the deformed coordinate was inside the image (else its gradient is 0). [K, P] each.
template <class T>
struct TapPositions {
  std::vector<int64_t> low, high;
  std::vector<T> frac;
  std::vector<uint8_t> live;
  std::vector<int64_t> pixel;  // plane index of tile pixel q
  int64_t count = 0;           // P
  explicit TapPositions(int64_t taps, int64_t max_tile)
      : low(taps * max_tile), high(taps * max_tile), frac(taps * max_tile), live(taps * max_tile), pixel(max_tile) {}
};

// Fills `pos` for the pixels (u, v), u in [u0, u1), v in [v0, v1) of image b.
template <class T>
void locate(const T* offset_b, const DSConvShape& s, const SnakeFrame& f, int64_t u0, int64_t u1, int64_t v0,
            int64_t v1, TapPositions<T>& pos) {
  const int64_t plane = s.height * s.width, width = v1 - v0;
  const int64_t P = (u1 - u0) * width;
  pos.count = P;
  for (int64_t q = 0; q < P; ++q) {
    const int64_t u = u0 + q / width, v = v0 + q % width, p = u * f.stride_u + v * f.stride_v;
    pos.pixel[q] = p;
    for_each_tap(
        f, s.taps, static_cast<T>(s.extend_scope), u, v, [&](int64_t k) { return offset_b[k * plane + p]; },
        [&](int64_t k, const TapSample<T>& tap) {
          const int64_t i = k * P + q;
          pos.low[i] = tap.low;
          pos.high[i] = tap.low + f.high_step;
          pos.frac[i] = tap.frac;
          pos.live[i] = tap.live;
        });
  }
}

// samples[((c - c0)*K + k) * P + q] = input_b[c] at tap k of pixel q, c in [c0, c1): rows c0*K .. c1*K of
// the [C*K, P] operand of the contraction.
template <class T>
void gather_samples(const T* input_b, const DSConvShape& s, const TapPositions<T>& pos, int64_t c0, int64_t c1,
                    T* samples) {
  const int64_t K = s.taps, P = pos.count, plane = s.height * s.width;
  for (int64_t ch = c0; ch < c1; ++ch) {
    const T* x = input_b + ch * plane;
    for (int64_t k = 0; k < K; ++k) {
      T* row = samples + ((ch - c0) * K + k) * P;
      const int64_t* low = pos.low.data() + k * P;
      const int64_t* high = pos.high.data() + k * P;
      const T* frac = pos.frac.data() + k * P;
      for (int64_t q = 0; q < P; ++q) {
        const T a = x[low[q]];
        row[q] = a + frac[q] * (x[high[q]] - a);
      }
    }
  }
}

// body(worker, b, c0, c1, u0, u1, v0, v1) for every tile of the given units; units are dealt round-robin
// to `workers` workers (the worker index selects private buffers and accumulators). The unit's fields
// are passed by value: a reference into the list made the backward tile 25% slower (GCC 12).
template <class Body>
void for_each_tile(const SnakeFrame& f, const Tiling& t, const std::vector<Unit>& list, int64_t workers,
                   const ParallelFor& parallel_for, Body&& body) {
  parallel_for(workers, [&](int64_t begin, int64_t end) {
    for (int64_t worker = begin; worker < end; ++worker)
      for (size_t n = static_cast<size_t>(worker); n < list.size(); n += static_cast<size_t>(workers)) {
        const Unit& unit = list[n];
        const int64_t v0 = unit.strip * t.strip, v1 = std::min(v0 + t.strip, f.across);
        for (int64_t u0 = unit.u0; u0 < unit.u1; u0 += t.lines_per_tile)
          body(worker, unit.b, unit.c0, unit.c1, u0, std::min(u0 + t.lines_per_tile, unit.u1), v0, v1);
      }
  });
}

int64_t worker_count(int64_t threads, size_t units) {
  return std::max<int64_t>(1, std::min<int64_t>(threads, static_cast<int64_t>(units)));
}

}  // namespace

template <class T>
void dsconv2d_forward_cpu(const T* input, const T* offset, const T* weight, const T* bias, T* out,
                          const DSConvShape& s, int64_t threads, const Gemm<T>& gemm, const ParallelFor& parallel_for) {
  const int64_t plane = s.height * s.width, CK = s.channels * s.taps, O = s.out_channels;
  if (s.batch * plane * O == 0) return;
  const SnakeFrame f(s.height, s.width, s.morph);
  const Tiling t(s, f);
  const auto list = forward_units(s, f, t);
  const int64_t workers = worker_count(threads, list.size());
  std::vector<TapPositions<T>> positions(workers, TapPositions<T>(s.taps, t.max_tile));
  std::vector<std::vector<T>> samples(workers, std::vector<T>(CK * t.max_tile)), result(workers, std::vector<T>(O * t.max_tile));
  auto tile = [&](int64_t w, int64_t b, int64_t, int64_t, int64_t u0, int64_t u1, int64_t v0, int64_t v1) {
    TapPositions<T>& pos = positions[w];
    locate(offset + b * s.taps * plane, s, f, u0, u1, v0, v1, pos);
    const int64_t P = pos.count;
    gather_samples(input + b * s.channels * plane, s, pos, 0, s.channels, samples[w].data());
    T* r = result[w].data();
    gemm(false, false, O, P, CK, T(1), weight, CK, samples[w].data(), P, T(0), r, P);
    T* out_b = out + b * O * plane;
    for (int64_t o = 0; o < O; ++o) {
      const T add = bias ? bias[o] : T(0);
      for (int64_t q = 0; q < P; ++q) out_b[o * plane + pos.pixel[q]] = r[o * P + q] + add;
    }
  };
  for_each_tile(f, t, list, workers, parallel_for, tile);
}

template <class T>
void dsconv2d_backward_cpu(const T* grad_out, const T* input, const T* offset, const T* weight, T* grad_input,
                           T* grad_offset, T* grad_weight, const DSConvShape& s, int64_t threads, const Gemm<T>& gemm,
                           const ParallelFor& parallel_for) {
  const int64_t plane = s.height * s.width, K = s.taps, c = K / 2, CK = s.channels * K, O = s.out_channels;
  std::fill(grad_input, grad_input + s.batch * s.channels * plane, T(0));
  std::fill(grad_offset, grad_offset + s.batch * K * plane, T(0));
  std::fill(grad_weight, grad_weight + O * CK, T(0));
  if (s.batch * plane * O == 0) return;
  const SnakeFrame f(s.height, s.width, s.morph);
  const Tiling t(s, f);
  // Channel groups: enough units per strip parity to keep every thread busy.
  const int64_t strip_units = s.batch * ((t.strips_per_image + 1) / 2);
  const int64_t groups_wanted = std::clamp<int64_t>((threads + strip_units - 1) / strip_units, 1,
                                                     std::max<int64_t>(s.channels, 1));
  const int64_t group = std::max<int64_t>(1, (s.channels + groups_wanted - 1) / groups_wanted);  // channels each
  const int64_t groups = std::max<int64_t>(1, (s.channels + group - 1) / group);
  const std::vector<Unit> phases[2] = {backward_units(s, f, t, 0, group), backward_units(s, f, t, 1, group)};
  const int64_t workers = worker_count(threads, std::max(phases[0].size(), phases[1].size()));
  const int64_t group_rows = group * K;  // rows of the [C*K, P] operands a unit handles
  std::vector<TapPositions<T>> positions(workers, TapPositions<T>(K, t.max_tile));
  std::vector<std::vector<T>> samples(workers, std::vector<T>(group_rows * t.max_tile));
  std::vector<std::vector<T>> grad_samples(workers, std::vector<T>(group_rows * t.max_tile));
  std::vector<std::vector<T>> grad_tile(workers, std::vector<T>(O * t.max_tile));
  std::vector<std::vector<T>> tile_grad_position(workers, std::vector<T>(K * t.max_tile));
  // Weight-gradient sums, [O, C*K] each: worker 0 adds into grad_weight itself (zeroed above), the others
  // into their own, added at the end (0 + sum is exact: the result is the same as with a private sum).
  std::vector<std::vector<T>> weight_acc(workers - 1, std::vector<T>(O * CK, T(0)));
  auto weight_sum = [&](int64_t w) { return w == 0 ? grad_weight : weight_acc[w - 1].data(); };
  // scope * d<grad_out, out>/d position of each tap, summed over one channel group: [groups, B, K, H*W].
  std::vector<T> grad_position(groups * s.batch * K * plane, T(0));
  const T scope = static_cast<T>(s.extend_scope);

  auto tile = [&](int64_t w, int64_t b, int64_t c0, int64_t c1, int64_t u0, int64_t u1, int64_t v0, int64_t v1) {
    const int64_t rows = (c1 - c0) * K;
    TapPositions<T>& pos = positions[w];
    locate(offset + b * K * plane, s, f, u0, u1, v0, v1, pos);
    const int64_t P = pos.count;
    const T* x_b = input + b * s.channels * plane;
    T* gathered = grad_tile[w].data();
    const T* g_b = grad_out + b * O * plane;
    for (int64_t o = 0; o < O; ++o)
      for (int64_t q = 0; q < P; ++q) gathered[o * P + q] = g_b[o * plane + pos.pixel[q]];
    // Weight gradient: grad_out_tile [O, P] x samples^T [P, rows], into this worker's accumulator.
    gather_samples(x_b, s, pos, c0, c1, samples[w].data());
    gemm(false, true, O, rows, P, T(1), gathered, P, samples[w].data(), P, T(1), weight_sum(w) + c0 * K, CK);
    // Sample gradient: weight^T [rows, O] x grad_out_tile [O, P].
    T* gs = grad_samples[w].data();
    gemm(true, false, rows, P, O, T(1), weight + c0 * K, CK, gathered, P, T(0), gs, P);
    // Input gradient (scatter to the two lines each sample read) and position gradient, [K, P].
    T* gpos = tile_grad_position[w].data();
    std::fill(gpos, gpos + K * P, T(0));
    T* gx_b = grad_input + b * s.channels * plane;
    for (int64_t ch = c0; ch < c1; ++ch) {
      const T* x = x_b + ch * plane;
      T* gx = gx_b + ch * plane;
      for (int64_t k = 0; k < K; ++k) {
        const T* g = gs + ((ch - c0) * K + k) * P;
        const int64_t* low = pos.low.data() + k * P;
        const int64_t* high = pos.high.data() + k * P;
        const T* frac = pos.frac.data() + k * P;
        T* gp = gpos + k * P;
        for (int64_t q = 0; q < P; ++q) {
          gx[low[q]] += g[q] - g[q] * frac[q];
          gx[high[q]] += g[q] * frac[q];
          gp[q] += g[q] * (x[high[q]] - x[low[q]]);
        }
      }
    }
    // This unit alone owns these pixels' entries of its channel group.
    T* group_gpos = grad_position.data() + ((c0 / group) * s.batch + b) * K * plane;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t q = 0; q < P; ++q)
        group_gpos[k * plane + pos.pixel[q]] = pos.live[k * P + q] ? scope * gpos[k * P + q] : T(0);
  };
  for (const auto& list : phases) for_each_tile(f, t, list, workers, parallel_for, tile);
  for (const auto& acc : weight_acc)
    for (int64_t i = 0; i < O * CK; ++i) grad_weight[i] += acc[i];

  // Offset gradient: d position_k / d delta_m = scope for the taps k at or beyond m (outwards from c),
  // summed over the channel groups.
  parallel_for(s.batch, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      T* go_b = grad_offset + b * K * plane;
      for (int64_t p = 0; p < plane; ++p)
        for (int side = 0; side < 2; ++side) {
          T suffix = T(0);
          for (int64_t t2 = c; t2 >= 1; --t2) {
            const int64_t k = side == 0 ? c + t2 : c - t2;
            for (int64_t g = 0; g < groups; ++g) suffix += grad_position[((g * s.batch + b) * K + k) * plane + p];
            go_b[k * plane + p] = suffix;
          }
        }
    }
  });
}

template void dsconv2d_forward_cpu<float>(const float*, const float*, const float*, const float*, float*,
                                          const DSConvShape&, int64_t, const Gemm<float>&, const ParallelFor&);
template void dsconv2d_forward_cpu<double>(const double*, const double*, const double*, const double*, double*,
                                           const DSConvShape&, int64_t, const Gemm<double>&, const ParallelFor&);
template void dsconv2d_backward_cpu<float>(const float*, const float*, const float*, const float*, float*, float*,
                                           float*, const DSConvShape&, int64_t, const Gemm<float>&, const ParallelFor&);
template void dsconv2d_backward_cpu<double>(const double*, const double*, const double*, const double*, double*,
                                            double*, double*, const DSConvShape&, int64_t, const Gemm<double>&,
                                            const ParallelFor&);

}  // namespace retina
