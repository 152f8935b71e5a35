// The sizes and parameters of one dsconv2d call, shared by the CPU and CUDA cores and their bindings.
#pragma once

#include <cstdint>

namespace retina {

struct DSConvShape {
  int64_t batch, channels, out_channels, height, width, taps;  // taps: K, odd >= 3
  int morph;                                                  // 0: snake along rows, 1: along columns
  double extend_scope;
  // Whether float32 contractions may round their operands to TF32 (CUDA from sm_80: the tensor cores), as
  // PyTorch lets float32 convolutions do (torch.backends.cudnn.conv.fp32_precision). The CPU ignores it.
  bool allow_tf32 = false;
};

}  // namespace retina
