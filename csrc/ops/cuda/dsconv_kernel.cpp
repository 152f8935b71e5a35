// retina::dsconv2d on CUDA: tensors to raw pointers on the current stream; tap positions and the weight
// gradient's partial sums come from torch's caching allocator. Weights are permuted here (they are small)
// into the layouts the kernels read contiguously.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/version.h>

#include <array>
#include <limits>
#include <tuple>
#include <type_traits>

#include "../../core/dsconv_cuda.h"
#include "../dsconv_args.h"

namespace retina {
namespace {

// ATen's 16-bit float types and CUDA's share a bit layout.
template <class T>
struct CudaScalar {
  using type = T;
};
template <>
struct CudaScalar<at::Half> {
  using type = __half;
};
template <>
struct CudaScalar<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <class scalar_t>
const typename CudaScalar<scalar_t>::type* device_data(const at::Tensor& t) {
  return reinterpret_cast<const typename CudaScalar<scalar_t>::type*>(t.data_ptr<scalar_t>());
}

template <class scalar_t>
at::ScalarType acc_type() {
  return std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat;
}

// Whether PyTorch lets float32 convolutions use TF32 now (torch.backends.cudnn.conv.fp32_precision; before
// torch 2.9, torch.backends.cudnn.allow_tf32): dsconv2d is a convolution and follows the same setting,
// read per call as cuDNN convolutions read it.
bool tf32_convolutions_allowed() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

DSConvShape check_cuda_args(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight, int64_t morph,
                            double extend_scope) {
  DSConvShape shape = check_dsconv_args(input, offset, weight, morph, extend_scope);
  TORCH_CHECK_VALUE(shape.batch <= kDSConvMaxBatch, "dsconv2d: on CUDA the batch must be at most ", kDSConvMaxBatch,
                    ", got ", shape.batch, " (split it)");
  shape.allow_tf32 = input.scalar_type() == at::kFloat && tf32_convolutions_allowed();
  return shape;
}

// Tap positions of every pixel (low, frac, live), [B, K, H, W] each.
template <class scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> locate(const at::Tensor& offset, const DSConvShape& shape,
                                                      cudaStream_t stream) {
  using T = typename CudaScalar<scalar_t>::type;
  using Acc = dsconv_acc_t<T>;
  at::Tensor low = at::empty(offset.sizes(), offset.options().dtype(at::kInt));
  at::Tensor frac = at::empty(offset.sizes(), offset.options().dtype(acc_type<scalar_t>()));
  at::Tensor live = at::empty(offset.sizes(), offset.options().dtype(at::kByte));
  C10_CUDA_CHECK(dsconv2d_locate_cuda<T>(device_data<scalar_t>(offset), low.data_ptr<int32_t>(), frac.data_ptr<Acc>(),
                                         live.data_ptr<uint8_t>(), shape, stream));
  return {low, frac, live};
}

at::Tensor dsconv2d_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, int64_t morph, double extend_scope) {
  const DSConvShape shape = check_cuda_args(input, offset, weight, morph, extend_scope);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), off = offset.contiguous();
  const at::Tensor b = check_dsconv_bias(bias, input, weight);
  at::Tensor out = at::empty({shape.batch, shape.out_channels, shape.height, shape.width}, x.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dsconv2d_cuda", [&] {
    using T = typename CudaScalar<scalar_t>::type;
    const auto [low, frac, live] = locate<scalar_t>(off, shape, stream);
    const at::Tensor weight_cko = weight.permute({1, 2, 0}).contiguous();
    C10_CUDA_CHECK(dsconv2d_forward_cuda<T>(
        device_data<scalar_t>(x), low.data_ptr<int32_t>(), frac.data_ptr<dsconv_acc_t<T>>(),
        device_data<scalar_t>(weight_cko), b.defined() ? device_data<scalar_t>(b) : nullptr,
        reinterpret_cast<T*>(out.data_ptr<scalar_t>()), shape, stream));
  });
  return out;
}

DSConvGrads dsconv2d_backward_cuda(const at::Tensor& grad, const at::Tensor& input,
                                   const at::Tensor& offset, const at::Tensor& weight,
                                   int64_t morph, double extend_scope,
                                   std::array<bool, 3> output_mask) {
  const DSConvShape shape = check_cuda_args(input, offset, weight, morph, extend_scope);
  check_dsconv_grad(grad, input, shape);
  const auto [want_input, want_offset, want_weight] = output_mask;
  // Atomic adds sum the input gradient in whatever order the threads arrive: under
  // torch.use_deterministic_algorithms(True) this raises (or warns, with warn_only), as torch's own
  // atomically accumulating CUDA ops do. The offset and weight gradients are summed in a fixed order.
  if (want_input) at::globalContext().alertNotDeterministic("retina::dsconv2d_backward on CUDA (input gradient)");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor g = grad.contiguous(), x = input.contiguous(), off = offset.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor grad_input, grad_offset, grad_weight;  // undefined (None) where output_mask does not ask
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dsconv2d_backward_cuda", [&] {
    using T = typename CudaScalar<scalar_t>::type;
    using Acc = dsconv_acc_t<T>;
    const auto acc_options = x.options().dtype(acc_type<scalar_t>());
    const bool sample_grads = want_input || want_offset;  // one kernel computes both
    // The input gradient is accumulated atomically, so in the accumulation type; cast at the end.
    at::Tensor grad_input_acc = want_input ? at::zeros(x.sizes(), acc_options) : at::Tensor();
    at::Tensor grad_offset_acc = sample_grads ? at::zeros(off.sizes(), acc_options) : at::Tensor();
    const int64_t splits = want_weight ? dsconv2d_weight_grad_splits(shape) : 0;
    at::Tensor partial = want_weight ? at::empty({splits, shape.channels, shape.taps, shape.out_channels}, acc_options)
                                     : at::Tensor();
    if (shape.batch * shape.height * shape.width > 0) {
      const auto [low, frac, live] = locate<scalar_t>(off, shape, stream);
      if (sample_grads) {
        const at::Tensor weight_okc = weight.permute({0, 2, 1}).contiguous();
        C10_CUDA_CHECK(dsconv2d_input_grad_cuda<T>(
            device_data<scalar_t>(g), device_data<scalar_t>(x), low.data_ptr<int32_t>(), frac.data_ptr<Acc>(),
            live.data_ptr<uint8_t>(), device_data<scalar_t>(weight_okc),
            want_input ? grad_input_acc.data_ptr<Acc>() : nullptr, grad_offset_acc.data_ptr<Acc>(), shape, stream));
      }
      if (want_weight)
        C10_CUDA_CHECK(dsconv2d_weight_grad_cuda<T>(device_data<scalar_t>(g), device_data<scalar_t>(x),
                                                    low.data_ptr<int32_t>(), frac.data_ptr<Acc>(),
                                                    partial.data_ptr<Acc>(), splits, shape, stream));
    } else if (want_weight) {
      partial.zero_();
    }
    if (want_input) grad_input = grad_input_acc.to(x.scalar_type());
    if (want_offset) grad_offset = grad_offset_acc.to(x.scalar_type());
    // [splits, C, K, O] -> [O, C, K]
    if (want_weight) grad_weight = partial.sum(0).permute({2, 0, 1}).to(x.scalar_type()).contiguous();
  });
  return dsconv_grads(grad_input, grad_offset, grad_weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(retina, CUDA, m) {
  m.impl("dsconv2d", &dsconv2d_cuda);
  m.impl("dsconv2d_backward", &dsconv2d_backward_cuda);
}

}  // namespace retina
