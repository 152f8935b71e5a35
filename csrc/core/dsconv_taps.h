// Where the taps of dynamic snake convolution sample (docs/dsconv.md): one definition for the CPU core and
// the CUDA kernels, so both place every tap identically.
#pragma once

#include <cstdint>

#include "portability.h"

namespace retina {

// Geometry in the snake's frame: `along` is the deformed axis (rows for morph 0), `across` the other.
// A pixel (u, v) in that frame sits at plane index u * stride_u + v * stride_v. Bilinear sampling
// reads two lines along the deformed axis, `high_step` apart (0 when the image is one line thick).
struct SnakeFrame {
  int64_t along, across, stride_u, stride_v, high_step, last_low;
  RETINA_HD SnakeFrame(int64_t height, int64_t width, int morph)
      : along(morph == 0 ? height : width), across(morph == 0 ? width : height),
        stride_u(morph == 0 ? width : 1), stride_v(morph == 0 ? 1 : width),
        high_step(along > 1 ? stride_u : 0), last_low(along > 1 ? along - 2 : 0) {}
  // The frame coordinates (u, v) of plane index p.
  RETINA_HD int64_t u_of(int64_t p) const { return stride_u == 1 ? p % stride_v : p / stride_u; }
  RETINA_HD int64_t v_of(int64_t p) const { return stride_u == 1 ? p / stride_v : p % stride_u; }
};

// One tap's sample: plane index of the lower line, the weight of the upper line (at low + high_step),
// and whether the unclamped coordinate lay inside the image (where it was clamped its gradient is 0).
template <class T>
struct TapSample {
  int64_t low;
  T frac;
  bool live;
};

// visit(k, TapSample<T>) for every tap of pixel (u, v), in the reference's order: the centre tap c = K/2,
// then c+1 .. K-1, then c-1 .. 0, the displacement accumulating outwards from the centre.
// offset_at(k) returns the pixel's raw offset for tap k. A NaN position reads the first line (a valid
// index) with a NaN weight, so its sample, and every output of its pixel, is NaN.
template <class T, class OffsetAt, class Visit>
RETINA_HD void for_each_tap(const SnakeFrame& f, int64_t taps, T scope, int64_t u, int64_t v, OffsetAt&& offset_at,
                            Visit&& visit) {
  const int64_t c = taps / 2;
  const T top = static_cast<T>(f.along - 1);
  for (int side = 0; side < 2; ++side) {
    T displacement = T(0);
    for (int64_t t = side; t <= c; ++t) {
      const int64_t k = side == 0 ? c + t : c - t;
      if (t > 0) displacement += offset_at(k);
      const T position = static_cast<T>(u) + scope * displacement;
      // Comparisons written so that NaN lands on 0 (no undefined float-to-int conversion).
      const T clamped = position > T(0) ? (position < top ? position : top) : T(0);
      int64_t lower = static_cast<int64_t>(clamped);  // clamped >= 0: truncation is floor
      if (lower > f.last_low) lower = f.last_low;
      int64_t across = v + k - c;
      across = across < 0 ? 0 : (across > f.across - 1 ? f.across - 1 : across);
      const T frac = position == position ? clamped - static_cast<T>(lower) : position;
      visit(k, TapSample<T>{lower * f.stride_u + across * f.stride_v, frac, position >= T(0) && position <= top});
    }
  }
}

}  // namespace retina
