// Argument checks shared by the CPU and CUDA implementations of retina::skeletonize.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "../core/simple_point.h"  // kMaxFactorIterations

namespace retina {

inline void check_skeletonize_args(const at::Tensor& mask, std::optional<int64_t> max_iter) {
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kByte, "skeletonize: mask must be uint8, got ", mask.scalar_type());
  TORCH_CHECK_VALUE(mask.dim() == 4 || mask.dim() == 5,
                    "skeletonize: mask must be [N, 1, H, W] or [N, 1, D, H, W], got shape ", mask.sizes());
  TORCH_CHECK_VALUE(mask.size(1) == 1, "skeletonize: mask must have 1 channel, got ", mask.size(1));
  TORCH_CHECK_VALUE(!max_iter.has_value() || *max_iter >= 0, "skeletonize: max_iter must be >= 0 or None, got ",
                    max_iter.value_or(0));
}

inline void check_skeleton_factors_args(const at::Tensor& mask, int64_t num_iter) {
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kByte, "skeleton_factors: mask must be uint8, got ", mask.scalar_type());
  TORCH_CHECK_VALUE(mask.dim() == 4 && mask.size(1) == 1, "skeleton_factors: mask must be [N, 1, H, W], got shape ",
                    mask.sizes());
  TORCH_CHECK_VALUE(num_iter >= 0 && num_iter <= kMaxFactorIterations, "skeleton_factors: num_iter must be in [0, ",
                    kMaxFactorIterations, "], got ", num_iter);
}

}  // namespace retina
