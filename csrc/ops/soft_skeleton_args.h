// Argument checks and shape mapping shared by the implementations of retina::soft_skeleton.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "../core/soft_skeleton_cpu.h"

namespace retina {

inline SoftSkeletonShape check_soft_skeleton_args(const at::Tensor& x, int64_t num_iter) {
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()), "soft_skeleton: x must be floating, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 4 || x.dim() == 5, "soft_skeleton: x must be [B, C, H, W] or [B, C, D, H, W], got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(num_iter >= 0, "soft_skeleton: num_iter must be >= 0, got ", num_iter);
  const bool is3d = x.dim() == 5;
  return SoftSkeletonShape{x.size(0) * x.size(1), is3d ? x.size(2) : 1, x.size(-2), x.size(-1), is3d ? 3 : 2};
}

inline void check_soft_skeleton_grad(const at::Tensor& grad, const at::Tensor& x) {
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() && grad.device() == x.device(),
                    "soft_skeleton_backward: grad must match x in shape, dtype and device");
}

}  // namespace retina
