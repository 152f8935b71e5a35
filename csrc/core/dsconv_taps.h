// Where the taps of dynamic snake convolution sample (docs/dsconv.md): one definition for the CPU core and
// the CUDA kernels, so both place every tap identically.
#pragma once

#include <cstdint>
#include <cstring>

#include "portability.h"

namespace retina {

// Geometry in the snake's frame: `along` is the deformed axis (rows for morph 0), `across` the other.
// A pixel (u, v) in that frame sits at plane index u * stride_u + v * stride_v. Bilinear sampling
// reads two lines along the deformed axis, `high_step` apart (0 when the image is one line thick).
// `u_inner`: whether u is the axis contiguous in memory (morph 1), else v is (morph 0). It is kept rather
// than read off the strides, which are both 1 in an image one column wide.
struct SnakeFrame {
  int64_t along, across, stride_u, stride_v, high_step, last_low;
  bool u_inner;
  RETINA_HD SnakeFrame(int64_t height, int64_t width, int morph)
      : along(morph == 0 ? height : width), across(morph == 0 ? width : height),
        stride_u(morph == 0 ? width : 1), stride_v(morph == 0 ? 1 : width),
        high_step(along > 1 ? stride_u : 0), last_low(along > 1 ? along - 2 : 0), u_inner(morph != 0) {}
  // The frame coordinates (u, v) of plane index p.
  RETINA_HD int64_t u_of(int64_t p) const { return u_inner ? p % stride_v : p / stride_u; }
  RETINA_HD int64_t v_of(int64_t p) const { return u_inner ? p / stride_v : p % stride_u; }
};

// One tap's sample: plane index of the lower line, the weight of the upper line (at low + high_step),
// and whether the unclamped coordinate lay inside the image (where it was clamped its gradient is 0).
// Index: int64_t, or int32_t where the caller knows a plane has fewer than 2^31 pixels (the CPU core's
// vectorised loops; both kernels' bindings check it).
template <class T, class Index = int64_t>
struct TapSample {
  Index low;
  T frac;
  bool live;
};

// Whether x is NaN, read from its bits: as a float comparison (x != x) it leads GCC to duplicate the
// clamping's branches for the NaN case (jump threading), and the loop no longer vectorises for AVX2.
template <class T>
struct FloatBits;
template <>
struct FloatBits<float> {
  using type = uint32_t;
  static constexpr type magnitude = 0x7fffffffu, infinity = 0x7f800000u;
};
template <>
struct FloatBits<double> {
  using type = uint64_t;
  static constexpr type magnitude = 0x7fffffffffffffffull, infinity = 0x7ff0000000000000ull;
};
template <class T>
RETINA_HD bool is_nan(T x) {
  typename FloatBits<T>::type bits;
  memcpy(&bits, &x, sizeof bits);
  return (bits & FloatBits<T>::magnitude) > FloatBits<T>::infinity;
}

// The sample of the tap at frame position (u, v) whose centre is `shift` lines away along the deformed
// axis (shift = scope x the accumulated displacement) and whose across position is `across` (v + k - c,
// not yet clamped). Its integer and fractional parts are taken from the shift alone, not from u + shift,
// so they do not depend on u: a tile of the image (u counted from the tile's first line) samples exactly
// where the whole image does (retina.inference's exact tiles), and lines far from 0 lose no fraction bits
// to the magnitude of u. The shift is clamped to the (exact, integer) distances to the first and last
// lines before its floor is taken, so the floor fits any Index. A NaN shift reads the first line (a valid
// index) with a NaN weight, so its sample, and every output of its pixel, is NaN.
// Written as selects, without branches, so that the CPU core's loops over pixels vectorise.
template <class T, class Index>
RETINA_HD TapSample<T, Index> tap_sample(const SnakeFrame& f, T shift, Index u, Index across) {
  const T to_first = -static_cast<T>(u), to_last = static_cast<T>(f.along - 1) - static_cast<T>(u);
  const bool live = (shift >= to_first) & (shift <= to_last);  // false for NaN (& not &&: no branch)
  const bool nan = is_nan(shift);
  T clamped = shift > to_last ? to_last : shift;
  clamped = shift >= to_first ? clamped : to_first;  // below the first line, or NaN: the first line
  Index whole = static_cast<Index>(clamped);  // truncation; the floor:
  whole -= static_cast<Index>(static_cast<T>(whole) > clamped);
  const Index lower = u + whole;
  T frac = nan ? shift : clamped - static_cast<T>(whole);
  // The last line is read as the upper line of the pair below it.
  const Index last_low = static_cast<Index>(f.last_low);
  const Index pair = lower < last_low ? lower : last_low;
  frac += static_cast<T>(lower - pair);
  const Index last_across = static_cast<Index>(f.across - 1);
  across = across < 0 ? 0 : across;
  across = across > last_across ? last_across : across;
  return {pair * static_cast<Index>(f.stride_u) + across * static_cast<Index>(f.stride_v), frac, live};
}

// visit(k, TapSample<T>) for every tap of pixel (u, v), in the reference's order: the centre tap c = K/2,
// then c+1 .. K-1, then c-1 .. 0, the displacement accumulating outwards from the centre.
// offset_at(k) returns the pixel's raw offset for tap k.
template <class T, class OffsetAt, class Visit>
RETINA_HD void for_each_tap(const SnakeFrame& f, int64_t taps, T scope, int64_t u, int64_t v, OffsetAt&& offset_at,
                            Visit&& visit) {
  const int64_t c = taps / 2;
  for (int side = 0; side < 2; ++side) {
    T displacement = T(0);
    for (int64_t t = side; t <= c; ++t) {
      const int64_t k = side == 0 ? c + t : c - t;
      if (t > 0) displacement += offset_at(k);
      visit(k, tap_sample<T, int64_t>(f, scope * displacement, u, v + k - c));
    }
  }
}

}  // namespace retina
