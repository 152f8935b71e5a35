// Argument checks and shape mapping shared by the implementations of retina::dsconv2d.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "../core/dsconv_shape.h"

namespace retina {

inline DSConvShape check_dsconv_args(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                                     int64_t morph, double extend_scope) {
  TORCH_CHECK_VALUE(input.dim() == 4, "dsconv2d: input must be [B, C, H, W], got shape ", input.sizes());
  TORCH_CHECK_VALUE(offset.dim() == 4, "dsconv2d: offset must be [B, K, H, W], got shape ", offset.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 3, "dsconv2d: weight must be [O, C, K], got shape ", weight.sizes());
  const int64_t taps = weight.size(2);
  TORCH_CHECK_VALUE(taps >= 3 && taps % 2 == 1, "dsconv2d: K (weight.shape[2]) must be odd and >= 3, got ", taps);
  TORCH_CHECK_VALUE(offset.size(0) == input.size(0) && offset.size(1) == taps && offset.size(2) == input.size(2) &&
                        offset.size(3) == input.size(3),
                    "dsconv2d: offset must be [B, K, H, W] = [", input.size(0), ", ", taps, ", ", input.size(2), ", ",
                    input.size(3), "], got ", offset.sizes());
  TORCH_CHECK_VALUE(weight.size(1) == input.size(1), "dsconv2d: weight must have C = ", input.size(1),
                    " input channels, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(morph == 0 || morph == 1, "dsconv2d: morph must be 0 or 1, got ", morph);
  // (The Python wrapper checks this too, except while torch.compile traces it with a symbolic float.)
  TORCH_CHECK_VALUE(std::isfinite(extend_scope), "dsconv2d: extend_scope must be a finite number, got ", extend_scope);
  // Both kernels index a plane with 32-bit integers (the CPU core's loops vectorise, the CUDA kernels keep
  // their tap tables at half the size).
  TORCH_CHECK_VALUE(input.size(2) * input.size(3) <= std::numeric_limits<int32_t>::max(),
                    "dsconv2d: an image must have fewer than 2^31 pixels, got ", input.size(2), "x", input.size(3));
  TORCH_CHECK_VALUE(offset.scalar_type() == input.scalar_type() && weight.scalar_type() == input.scalar_type(),
                    "dsconv2d: input, offset and weight must share a dtype");
  TORCH_CHECK_VALUE(offset.device() == input.device() && weight.device() == input.device(),
                    "dsconv2d: input, offset and weight must be on one device");
  return DSConvShape{input.size(0), input.size(1), weight.size(0), input.size(2), input.size(3), taps,
                     static_cast<int>(morph), extend_scope};
}

// The optional bias, checked ([O], the input's dtype and device) and made contiguous; undefined if absent.
inline at::Tensor check_dsconv_bias(const std::optional<at::Tensor>& bias, const at::Tensor& input,
                                    const at::Tensor& weight) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == input.scalar_type() &&
                        bias->device() == input.device(),
                    "dsconv2d: bias must be [O] = [", weight.size(0), "] of the input's dtype and device, got ",
                    bias->sizes());
  return bias->contiguous();
}

// The backward's upstream gradient: [B, O, H, W] of the input's dtype and device.
inline void check_dsconv_grad(const at::Tensor& grad, const at::Tensor& input, const DSConvShape& shape) {
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == shape.batch && grad.size(1) == shape.out_channels &&
                        grad.size(2) == shape.height && grad.size(3) == shape.width &&
                        grad.scalar_type() == input.scalar_type() && grad.device() == input.device(),
                    "dsconv2d_backward: grad must be [B, O, H, W] of the input's dtype and device, got ", grad.sizes());
}

// dsconv2d_backward's result: (grad_input, grad_offset, grad_weight), each None where the output mask
// does not ask for it.
using DSConvGrads = std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>;

inline DSConvGrads dsconv_grads(const at::Tensor& grad_input, const at::Tensor& grad_offset,
                                const at::Tensor& grad_weight) {
  const auto maybe = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  return {maybe(grad_input), maybe(grad_offset), maybe(grad_weight)};
}

}  // namespace retina
