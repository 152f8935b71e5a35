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
// floor for float and double on host and device.
template <class T>
RETINA_HD T floor_of(T x) {
  const T t = static_cast<T>(static_cast<int64_t>(x));  // |x| is a pixel distance: far inside int64
  return t > x ? t - T(1) : t;
}

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
      // The sample lies `shift` lines from line u. Its integer and fractional parts are taken from the
      // shift alone, not from u + shift, so they do not depend on u: a tile of the image (u counted from
      // the tile's first line) samples exactly where the whole image does (retina.inference's exact tiles),
      // and lines far from 0 lose no fraction bits to the magnitude of u. Clamping to the image is decided
      // by comparing the shift with the (exact, integer) distances to its first and last lines.
      const T shift = scope * displacement;
      const T to_first = -static_cast<T>(u), to_last = top - static_cast<T>(u);
      int64_t lower = 0;
      T frac;
      const bool live = shift >= to_first && shift <= to_last;  // false for NaN
      if (live) {
        const T whole = floor_of(shift);
        lower = u + static_cast<int64_t>(whole);
        frac = shift - whole;
      } else if (shift > to_last) {
        lower = f.along - 1;
        frac = T(0);
      } else {
        frac = shift == shift ? T(0) : shift;  // below the first line; NaN reads line 0 with a NaN weight
      }
      if (lower > f.last_low) {  // the last line: read as the upper line of the pair below it
        frac += static_cast<T>(lower - f.last_low);
        lower = f.last_low;
      }
      int64_t across = v + k - c;
      across = across < 0 ? 0 : (across > f.across - 1 ? f.across - 1 : across);
      visit(k, TapSample<T>{lower * f.stride_u + across * f.stride_v, frac, live});
    }
  }
}

}  // namespace retina
