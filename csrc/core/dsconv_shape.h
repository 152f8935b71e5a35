// The sizes and parameters of one dsconv2d call, shared by the CPU and CUDA cores and their bindings.
#pragma once

#include <cstdint>

namespace retina {

struct DSConvShape {
  int64_t batch, channels, out_channels, height, width, taps;  // taps: K, odd >= 3
  int morph;                                                  // 0: snake along rows, 1: along columns
  double extend_scope;
};

}  // namespace retina
