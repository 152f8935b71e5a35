#include "dsconv_cpu.h"

#include <algorithm>
#include <cstring>
#include <memory>
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

// Backward units: whole strips (every `step`-th from `first`), times channel groups of `group` channels.
std::vector<Unit> backward_units(const DSConvShape& s, const SnakeFrame& f, const Tiling& t, int64_t first,
                                 int64_t step, int64_t group) {
  std::vector<Unit> list;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t strip = first; strip < t.strips_per_image; strip += step)
      for (int64_t c0 = 0; c0 < s.channels; c0 += group)
        list.push_back({b, strip, 0, f.along, c0, std::min(c0 + group, s.channels)});
  return list;
}

// A tile: the pixels (u, v), u in [u0, u1), v in [v0, v1), numbered q = 0 .. P-1 in memory order, as
// `runs` runs of `run_length` consecutive plane indices, run r starting at plane index first + r * stride.
// Loops over a run read offsets and write outputs contiguously (and vectorise), for either morph.
struct Tile {
  int64_t runs, run_length, first, stride;
  Tile(const SnakeFrame& f, int64_t u0, int64_t u1, int64_t v0, int64_t v1)
      : runs(f.u_inner ? v1 - v0 : u1 - u0), run_length(f.u_inner ? u1 - u0 : v1 - v0),
        first(u0 * f.stride_u + v0 * f.stride_v), stride(f.u_inner ? f.stride_v : f.stride_u) {}
  int64_t size() const { return runs * run_length; }
  int64_t run_start(int64_t r) const { return first + r * stride; }
};

// gather_tile: dst[q] = src[plane index of q] for the P pixels of a tile (a row of a [*, P] tile operand
// from a [*, H*W] plane); scatter_tile, the way back: dst[plane index of q] = src[q] + add.
template <class T>
RETINA_CPU_CLONES void gather_tile(const Tile& tile, const T* RETINA_RESTRICT src, T* RETINA_RESTRICT dst) {
  // Runs are short (16 pixels): copied in fixed-size blocks, which compile to vector moves, where a plain
  // loop becomes a call to memmove per run (that took 7% of a 3->72 layer's backward).
  constexpr int64_t block = 16;
  for (int64_t r = 0; r < tile.runs; ++r) {
    const T* in = src + tile.run_start(r);
    T* o = dst + r * tile.run_length;
    int64_t i = 0;
    for (; i + block <= tile.run_length; i += block) std::memcpy(o + i, in + i, block * sizeof(T));
    for (; i < tile.run_length; ++i) o[i] = in[i];
  }
}
template <class T>
RETINA_CPU_CLONES void scatter_tile(const Tile& tile, const T* RETINA_RESTRICT src, T add, T* RETINA_RESTRICT dst) {
  for (int64_t r = 0; r < tile.runs; ++r) {
    const T* in = src + r * tile.run_length;
    T* o = dst + tile.run_start(r);
    for (int64_t i = 0; i < tile.run_length; ++i) o[i] = in[i] + add;
  }
}

// Where the K taps of each pixel of a tile sample: the plane index of the lower line (the upper one is
// high_step further), the weight of the upper line, and whether the deformed coordinate was inside the
// image (else its gradient is 0), [K, P] each. 32-bit indices (a plane has fewer than 2^31 pixels, which
// the bindings check) so that the loops over pixels vectorise.
template <class T>
struct TapPositions {
  std::vector<int32_t> low;
  std::vector<T> frac;
  std::vector<uint8_t> live;
  std::vector<int32_t> u, v;    // frame coordinates of tile pixel q
  std::vector<T> displacement;  // per pixel, while the taps are placed
  explicit TapPositions(int64_t taps, int64_t max_tile)
      : low(taps * max_tile), frac(taps * max_tile), live(taps * max_tile), u(max_tile), v(max_tile),
        displacement(max_tile) {}
};

// Places the K taps of every pixel of `tile` (its first pixel at frame position (u0, v0)) of image b:
// tap by tap, outwards from the centre, over all the tile's pixels at once.
template <class T>
RETINA_CPU_CLONES void locate(const T* offset_b, const DSConvShape& s, const SnakeFrame& frame, const Tile& tile,
                              int64_t u0, int64_t v0, TapPositions<T>& pos) {
  const SnakeFrame f = frame;  // a local copy: the byte-sized stores below cannot alias it
  const int64_t plane = s.height * s.width, P = tile.size(), L = tile.run_length, c = s.taps / 2;
  int32_t* RETINA_RESTRICT u = pos.u.data();
  int32_t* RETINA_RESTRICT v = pos.v.data();
  for (int64_t r = 0; r < tile.runs; ++r)
    for (int64_t i = 0; i < L; ++i) {
      u[r * L + i] = static_cast<int32_t>(f.u_inner ? u0 + i : u0 + r);
      v[r * L + i] = static_cast<int32_t>(f.u_inner ? v0 + r : v0 + i);
    }
  const T scope = static_cast<T>(s.extend_scope);
  T* RETINA_RESTRICT displacement = pos.displacement.data();
  for (int side = 0; side < 2; ++side) {
    std::fill(displacement, displacement + P, T(0));
    for (int64_t t = side; t <= c; ++t) {
      const int64_t k = side == 0 ? c + t : c - t;
      if (t > 0)
        for (int64_t r = 0; r < tile.runs; ++r) {
          const T* RETINA_RESTRICT offset = offset_b + k * plane + tile.run_start(r);
          T* RETINA_RESTRICT d = displacement + r * L;
          for (int64_t i = 0; i < L; ++i) d[i] += offset[i];
        }
      int32_t* RETINA_RESTRICT low = pos.low.data() + k * P;
      T* RETINA_RESTRICT frac = pos.frac.data() + k * P;
      uint8_t* RETINA_RESTRICT live = pos.live.data() + k * P;
      const int32_t dk = static_cast<int32_t>(k - c);
      for (int64_t q = 0; q < P; ++q) {
        const TapSample<T, int32_t> tap = tap_sample<T, int32_t>(f, scope * displacement[q], u[q], v[q] + dk);
        low[q] = tap.low;
        frac[q] = tap.frac;
        live[q] = tap.live;
      }
    }
  }
}

// A tile's samples form the [C*K, P] or [P, C*K] operand of its contraction, in one of two layouts chosen
// per call (SampleLayout):
//  - channels-first, samples[((ch - c0)*K + k)*P + q], read from the input as it is ([C, H*W] planes): the
//    loops run over a tile's pixels, with a gather per sample and a scalar scatter in backward;
//  - channels-last, samples[(q*K + k)*G + ch - c0] (G = c1 - c0), read from a channels-last copy of the
//    input ([H*W, C]): the channels of one sample are contiguous, so the gather, the input gradient's
//    scatter and the position gradient's sum over channels are loops over channels, which vectorise without
//    conflicts (two samples may read one line, two channels of one sample never do). From 8 channels on
//    (a vector's worth) this is faster: forward + backward -30% at 216->72, -15% at 8->16; at 3 channels
//    the per-sample loop overhead made it 60% slower (3->72).
// In both, the sum into an input-gradient element runs over (k, q) in the same order.
struct SampleLayout {
  bool channels_last;
  explicit SampleLayout(const DSConvShape& s) : channels_last(s.channels >= 8) {}
};

// The samples of channels [c0, c1) at the tile's taps (pos), in `layout`, from image b's input (channels-
// last under that layout). With `diffs`, also the difference of the two lines read (the sample's derivative
// in its position), for the backward.
template <class T>
RETINA_CPU_CLONES void gather_samples(SampleLayout layout, const T* input_b, const DSConvShape& s, int64_t high_step,
                                      int64_t P, const TapPositions<T>& pos, int64_t c0, int64_t c1,
                                      T* RETINA_RESTRICT samples, T* RETINA_RESTRICT diffs = nullptr) {
  const int64_t K = s.taps, C = s.channels, G = c1 - c0, plane = s.height * s.width;
  if (layout.channels_last) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t q = 0; q < P; ++q) {
        const T* RETINA_RESTRICT a = input_b + int64_t(pos.low[k * P + q]) * C + c0;
        const T* RETINA_RESTRICT b = a + high_step * C;
        const T f = pos.frac[k * P + q];
        T* RETINA_RESTRICT out = samples + (q * K + k) * G;
        if (diffs) {
          T* RETINA_RESTRICT d = diffs + (q * K + k) * G;
          for (int64_t ch = 0; ch < G; ++ch) {
            d[ch] = b[ch] - a[ch];
            out[ch] = a[ch] + f * (b[ch] - a[ch]);
          }
        } else {
          for (int64_t ch = 0; ch < G; ++ch) out[ch] = a[ch] + f * (b[ch] - a[ch]);
        }
      }
    return;
  }
  for (int64_t ch = c0; ch < c1; ++ch) {
    const T* RETINA_RESTRICT x = input_b + ch * plane;
    const T* RETINA_RESTRICT x_high = x + high_step;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = ((ch - c0) * K + k) * P;
      T* RETINA_RESTRICT out = samples + row;
      const int32_t* RETINA_RESTRICT low = pos.low.data() + k * P;
      const T* RETINA_RESTRICT frac = pos.frac.data() + k * P;
      if (diffs) {
        T* RETINA_RESTRICT d = diffs + row;
        for (int64_t q = 0; q < P; ++q) {
          const T a = x[low[q]], b = x_high[low[q]];
          d[q] = b - a;
          out[q] = a + frac[q] * (b - a);
        }
      } else {
        for (int64_t q = 0; q < P; ++q) {
          const T a = x[low[q]];
          out[q] = a + frac[q] * (x_high[low[q]] - a);
        }
      }
    }
  }
}

// sum_i a[i] * b[i] in 8 interleaved partial sums added pairwise at the end: a fixed order that every
// instruction set computes to the same bits, and that vectorises (a running sum would not).
template <class T>
inline T dot(const T* RETINA_RESTRICT a, const T* RETINA_RESTRICT b, int64_t n) {
  T part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += a[i + l] * b[i + l];
  for (int l = 0; i < n; ++i, ++l) part[l] += a[i] * b[i];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// The backward of gather_samples for channels [c0, c1): each sample's gradient (grad_samples, laid out as
// the samples) scattered to the two lines it read, into image b's input gradient grad_input_b (laid out as
// the input); and the gradient of each tap's position, summed over the channels, into grad_position [K, P]:
// a sample's derivative in its position is the difference of its two lines (diffs). Either destination
// may be null (not wanted; diffs may be null without grad_position).
template <class T>
RETINA_CPU_CLONES void scatter_sample_grads(SampleLayout layout, const T* grad_samples, const T* diffs,
                                            const TapPositions<T>& pos, const DSConvShape& s, int64_t high_step,
                                            int64_t P, int64_t c0, int64_t c1, T* grad_input_b,
                                            T* RETINA_RESTRICT grad_position) {
  const int64_t K = s.taps, C = s.channels, G = c1 - c0, plane = s.height * s.width;
  if (layout.channels_last) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t q = 0; q < P; ++q) {
        const T* RETINA_RESTRICT g = grad_samples + (q * K + k) * G;
        if (grad_position) grad_position[k * P + q] = dot(g, diffs + (q * K + k) * G, G);
        if (!grad_input_b) continue;
        T* RETINA_RESTRICT low = grad_input_b + int64_t(pos.low[k * P + q]) * C + c0;
        T* RETINA_RESTRICT high = low + high_step * C;  // (another line: none of its channels is in `low`)
        const T f = pos.frac[k * P + q];
        for (int64_t ch = 0; ch < G; ++ch) {
          low[ch] += g[ch] - g[ch] * f;
          high[ch] += g[ch] * f;
        }
      }
    return;
  }
  if (grad_position) std::fill(grad_position, grad_position + K * P, T(0));
  for (int64_t ch = c0; ch < c1; ++ch) {
    T* gx = grad_input_b ? grad_input_b + ch * plane : nullptr;
    T* gx_high = grad_input_b ? gx + high_step : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = ((ch - c0) * K + k) * P;
      const T* RETINA_RESTRICT g = grad_samples + row;
      if (grad_position) {
        const T* RETINA_RESTRICT d = diffs + row;
        T* RETINA_RESTRICT gp = grad_position + k * P;
        for (int64_t q = 0; q < P; ++q) gp[q] += g[q] * d[q];
      }
      if (!grad_input_b) continue;
      const int32_t* low = pos.low.data() + k * P;
      const T* frac = pos.frac.data() + k * P;
      for (int64_t q = 0; q < P; ++q) {  // (stays scalar: two samples may read one line)
        gx[low[q]] += g[q] - g[q] * frac[q];
        gx_high[low[q]] += g[q] * frac[q];
      }
    }
  }
}

// dst[b, p, c] = src[b, c, p] (to channels-last) or, with `back`, dst[b, c, p] = src[b, p, c]; in chunks of
// pixels over the threads.
template <class T>
void transpose_channels(const T* src, T* dst, int64_t B, int64_t C, int64_t plane, bool back,
                        const ParallelFor& parallel_for) {
  constexpr int64_t chunk = 64;
  const int64_t chunks = (plane + chunk - 1) / chunk;
  parallel_for(B * chunks, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / chunks, p0 = (n % chunks) * chunk, p1 = std::min(plane, p0 + chunk);
      const T* sb = src + b * C * plane;
      T* db = dst + b * C * plane;
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t p = p0; p < p1; ++p) {
          if (back) db[ch * plane + p] = sb[p * C + ch];
          else db[p * C + ch] = sb[ch * plane + p];
        }
    }
  });
}

// The weight [O, C, K] with the columns of each channel group [c0, c1) (groups of `group` channels) in the
// samples' order: column c0*K + k*(c1 - c0) + ch - c0 (the group's block of columns is where it was).
// With `back`, the other way (for the weight gradient).
template <class T>
void permute_weight(const T* src, T* dst, int64_t O, int64_t C, int64_t K, int64_t group, bool back) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c0 = 0; c0 < C; c0 += group) {
      const int64_t G = std::min(group, C - c0);
      for (int64_t ch = c0; ch < c0 + G; ++ch)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t natural = (o * C + ch) * K + k, grouped = o * C * K + c0 * K + k * G + (ch - c0);
          if (back) dst[natural] = src[grouped];
          else dst[grouped] = src[natural];
        }
    }
}

// values[i] = live[i] ? scope * values[i] : 0: a clamped coordinate passes no gradient to its position.
template <class T>
RETINA_CPU_CLONES void mask_dead_taps(const uint8_t* RETINA_RESTRICT live, T scope, int64_t n,
                                      T* RETINA_RESTRICT values) {
  for (int64_t i = 0; i < n; ++i) values[i] = live[i] ? scope * values[i] : T(0);
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

// The input and the weight as the contractions read them under `layout`: as given (channels-first); or the
// input channels-last [B, H*W, C] and the weight's columns in the samples' order, for channel groups of
// `group` channels (channels-last).
template <class T>
struct ContractionOperands {
  const T* input;
  const T* weight;
  // (not zeroed first, as a vector would be: the transpose and the permutation write every element)
  std::unique_ptr<T[]> input_cl, weight_cl;
  ContractionOperands(SampleLayout layout, const T* input_, const T* weight_, const DSConvShape& s, int64_t group,
                      const ParallelFor& parallel_for)
      : input(input_), weight(weight_) {
    if (!layout.channels_last) return;
    const int64_t plane = s.height * s.width;
    input_cl.reset(new T[s.batch * s.channels * plane]);
    weight_cl.reset(new T[s.out_channels * s.channels * s.taps]);
    transpose_channels(input_, input_cl.get(), s.batch, s.channels, plane, false, parallel_for);
    permute_weight(weight_, weight_cl.get(), s.out_channels, s.channels, s.taps, group, false);
    input = input_cl.get();
    weight = weight_cl.get();
  }
};

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
  const SampleLayout layout(s);
  const ContractionOperands<T> operands(layout, input, weight, s, s.channels, parallel_for);
  std::vector<TapPositions<T>> positions(workers, TapPositions<T>(s.taps, t.max_tile));
  std::vector<std::vector<T>> samples(workers, std::vector<T>(CK * t.max_tile)), result(workers, std::vector<T>(O * t.max_tile));
  auto tile = [&](int64_t w, int64_t b, int64_t, int64_t, int64_t u0, int64_t u1, int64_t v0, int64_t v1) {
    TapPositions<T>& pos = positions[w];
    const Tile px(f, u0, u1, v0, v1);
    const int64_t P = px.size();
    locate(offset + b * s.taps * plane, s, f, px, u0, v0, pos);
    gather_samples(layout, operands.input + b * s.channels * plane, s, f.high_step, P, pos, 0, s.channels,
                   samples[w].data());
    T* r = result[w].data();
    // out [O, P] = weight [O, C*K] x samples ([C*K, P], or [P, C*K] channels-last)
    const bool cl = layout.channels_last;
    gemm(false, cl, O, P, CK, T(1), operands.weight, CK, samples[w].data(), cl ? CK : P, T(0), r, P);
    T* out_b = out + b * O * plane;
    for (int64_t o = 0; o < O; ++o) scatter_tile(px, r + o * P, bias ? bias[o] : T(0), out_b + o * plane);
  };
  for_each_tile(f, t, list, workers, parallel_for, tile);
}

template <class T>
void dsconv2d_backward_cpu(const T* grad_out, const T* input, const T* offset, const T* weight, T* grad_input,
                           T* grad_offset, T* grad_weight, const DSConvShape& s, int64_t threads, const Gemm<T>& gemm,
                           const ParallelFor& parallel_for) {
  const int64_t plane = s.height * s.width, K = s.taps, c = K / 2, CK = s.channels * K, O = s.out_channels;
  // (the centre tap's offset gradient stays 0 below: no offset moves that tap)
  if (grad_offset) std::fill(grad_offset, grad_offset + s.batch * K * plane, T(0));
  // The samples' gradients (weight^T x grad_out) serve the input and the offset gradients only.
  const bool sample_grads = grad_input || grad_offset;
  if (s.batch * plane * O == 0 || !(sample_grads || grad_weight)) {
    if (grad_input) std::fill(grad_input, grad_input + s.batch * s.channels * plane, T(0));
    if (grad_weight) std::fill(grad_weight, grad_weight + O * CK, T(0));
    return;
  }
  const SnakeFrame f(s.height, s.width, s.morph);
  const Tiling t(s, f);
  // Strips of one parity at a time (see Tiling), with or without the input gradient: the same units in
  // the same order, so each gradient is the same to the bit whichever others are asked for.
  const int64_t passes = 2;
  // Channel groups: enough units per pass to keep every thread busy.
  const int64_t strip_units = s.batch * ((t.strips_per_image + passes - 1) / passes);
  const int64_t groups_wanted = std::clamp<int64_t>((threads + strip_units - 1) / strip_units, 1,
                                                     std::max<int64_t>(s.channels, 1));
  const int64_t group = std::max<int64_t>(1, (s.channels + groups_wanted - 1) / groups_wanted);  // channels each
  const int64_t groups = std::max<int64_t>(1, (s.channels + group - 1) / group);
  std::vector<std::vector<Unit>> phases;
  for (int64_t first = 0; first < passes; ++first) phases.push_back(backward_units(s, f, t, first, passes, group));
  size_t most_units = 0;
  for (const auto& list : phases) most_units = std::max(most_units, list.size());
  const int64_t workers = worker_count(threads, most_units);
  // Rows of the [C*K, P] operands (columns of [P, C*K] channels-last) a unit handles; buffers that an
  // unwanted gradient alone needs stay empty.
  const int64_t group_rows = group * K, tile_rows = group_rows * t.max_tile;
  const bool samples_needed = grad_weight || grad_offset;  // (the input gradient needs positions only)
  const SampleLayout layout(s);
  const bool cl = layout.channels_last;
  const ContractionOperands<T> operands(layout, input, weight, s, group, parallel_for);
  // The input gradient, summed from zero as the input is laid out (channels-last: in its own buffer, turned
  // back into grad_input at the end); the weight gradient is written whole at the end.
  std::vector<T> grad_input_cl(grad_input && cl ? s.batch * s.channels * plane : 0, T(0));
  if (grad_input && !cl) std::fill(grad_input, grad_input + s.batch * s.channels * plane, T(0));
  T* grad_input_acc = cl ? grad_input_cl.data() : grad_input;
  std::vector<TapPositions<T>> positions(workers, TapPositions<T>(K, t.max_tile));
  std::vector<std::vector<T>> samples(workers, std::vector<T>(samples_needed ? tile_rows : 0));
  std::vector<std::vector<T>> grad_samples(workers, std::vector<T>(sample_grads ? tile_rows : 0));
  std::vector<std::vector<T>> diffs(workers, std::vector<T>(grad_offset ? tile_rows : 0));
  std::vector<std::vector<T>> grad_tile(workers, std::vector<T>(O * t.max_tile));
  std::vector<std::vector<T>> tile_grad_position(workers, std::vector<T>(grad_offset ? K * t.max_tile : 0));
  // Weight-gradient sums, [O, C*K] each with the columns in the samples' order: one per worker, added in
  // worker order at the end.
  std::vector<std::vector<T>> weight_acc(grad_weight ? workers : 0, std::vector<T>(O * CK, T(0)));
  // scope * d<grad_out, out>/d position of each tap, summed over one channel group: [groups, B, K, H*W].
  std::vector<T> grad_position(grad_offset ? groups * s.batch * K * plane : 0, T(0));
  const T scope = static_cast<T>(s.extend_scope);

  auto tile = [&](int64_t w, int64_t b, int64_t c0, int64_t c1, int64_t u0, int64_t u1, int64_t v0, int64_t v1) {
    const int64_t rows = (c1 - c0) * K;
    TapPositions<T>& pos = positions[w];
    const Tile px(f, u0, u1, v0, v1);
    const int64_t P = px.size();
    locate(offset + b * K * plane, s, f, px, u0, v0, pos);
    const T* x_b = operands.input + b * s.channels * plane;
    T* gathered = grad_tile[w].data();
    const T* g_b = grad_out + b * O * plane;
    for (int64_t o = 0; o < O; ++o) gather_tile(px, g_b + o * plane, gathered + o * P);
    T* line_diffs = grad_offset ? diffs[w].data() : nullptr;
    if (samples_needed)
      gather_samples(layout, x_b, s, f.high_step, P, pos, c0, c1, samples[w].data(), line_diffs);
    // Weight gradient: grad_out_tile [O, P] x samples^T ([rows, P], or [P, rows] channels-last), into this
    // worker's accumulator.
    if (grad_weight)
      gemm(false, !cl, O, rows, P, T(1), gathered, P, samples[w].data(), cl ? rows : P, T(1),
           weight_acc[w].data() + c0 * K, CK);
    if (!sample_grads) return;
    // Sample gradients, laid out as the samples: weight^T [rows, O] x grad_out_tile [O, P], or its transpose.
    T* gs = grad_samples[w].data();
    const T* weight_group = operands.weight + c0 * K;
    if (cl)
      gemm(true, false, P, rows, O, T(1), gathered, P, weight_group, CK, T(0), gs, rows);
    else
      gemm(true, false, rows, P, O, T(1), weight_group, CK, gathered, P, T(0), gs, P);
    // Position gradient [K, P] (a sample's derivative in its position is the difference of its two lines)
    // and input gradient (each sample's gradient scattered to the two lines it read).
    T* gpos = grad_offset ? tile_grad_position[w].data() : nullptr;
    scatter_sample_grads(layout, gs, line_diffs, pos, s, f.high_step, P, c0, c1,
                         grad_input ? grad_input_acc + b * s.channels * plane : nullptr, gpos);
    if (!grad_offset) return;
    // This unit alone owns these pixels' entries of its channel group.
    T* group_gpos = grad_position.data() + ((c0 / group) * s.batch + b) * K * plane;
    mask_dead_taps(pos.live.data(), scope, K * P, gpos);
    for (int64_t k = 0; k < K; ++k) scatter_tile(px, gpos + k * P, T(0), group_gpos + k * plane);
  };
  for (const auto& list : phases) for_each_tile(f, t, list, workers, parallel_for, tile);
  if (grad_input && cl) transpose_channels(grad_input_cl.data(), grad_input, s.batch, s.channels, plane, true,
                                           parallel_for);
  if (grad_weight) {
    for (size_t w = 1; w < weight_acc.size(); ++w)
      for (int64_t i = 0; i < O * CK; ++i) weight_acc[0][i] += weight_acc[w][i];
    if (cl)
      permute_weight(weight_acc[0].data(), grad_weight, O, s.channels, K, group, true);
    else
      std::copy(weight_acc[0].begin(), weight_acc[0].end(), grad_weight);
  }
  if (!grad_offset) return;

  // Offset gradient: d position_k / d delta_m = scope for the taps k at or beyond m (outwards from c),
  // summed over the channel groups; in chunks of pixels (every thread busy even for one image).
  constexpr int64_t chunk = 1024;
  const int64_t chunks = (plane + chunk - 1) / chunk;
  parallel_for(s.batch * chunks, [&](int64_t begin, int64_t end) {
    std::vector<T> suffix(chunk);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / chunks, p0 = (n % chunks) * chunk, count = std::min(chunk, plane - p0);
      T* go_b = grad_offset + b * K * plane + p0;
      for (int side = 0; side < 2; ++side) {
        std::fill(suffix.begin(), suffix.begin() + count, T(0));
        for (int64_t t2 = c; t2 >= 1; --t2) {
          const int64_t k = side == 0 ? c + t2 : c - t2;
          T* RETINA_RESTRICT sum = suffix.data();
          for (int64_t g = 0; g < groups; ++g) {
            const T* RETINA_RESTRICT part = grad_position.data() + ((g * s.batch + b) * K + k) * plane + p0;
            for (int64_t i = 0; i < count; ++i) sum[i] += part[i];
          }
          std::copy(sum, sum + count, go_b + k * plane);
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
