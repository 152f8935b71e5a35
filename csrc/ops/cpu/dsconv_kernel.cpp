// retina::dsconv2d on CPU: tensors to raw pointers; ATen supplies the BLAS-backed matrix products and the
// thread pool.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <tuple>

#include "../../core/dsconv_cpu.h"
#include "../dsconv_args.h"

namespace retina {
namespace {

// One worker per thread: each gets whole strips, so the grain is one.
void parallel_workers(int64_t n, const std::function<void(int64_t, int64_t)>& body) { at::parallel_for(0, n, 1, body); }

template <class T>
Gemm<T> aten_gemm() {
  return [](bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
            int64_t ldb, T beta, T* c, int64_t ldc) {
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    // Row-major views; a transposed operand is the stored matrix read with swapped strides.
    const at::Tensor A = trans_a ? at::from_blob(const_cast<T*>(a), {m, k}, {1, lda}, options)
                                 : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, options);
    const at::Tensor B = trans_b ? at::from_blob(const_cast<T*>(b), {k, n}, {1, ldb}, options)
                                 : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, options);
    at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, options);
    C.addmm_(A, B, beta, alpha);
  };
}

at::Tensor dsconv2d_cpu_impl(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t morph, double extend_scope) {
  const DSConvShape shape = check_dsconv_args(input, offset, weight, morph, extend_scope);
  TORCH_CHECK_VALUE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                    "dsconv2d: on the CPU tensors must be float32 or float64, got ", input.scalar_type());
  const at::Tensor x = input.contiguous(), off = offset.contiguous(), w = weight.contiguous();
  const at::Tensor b = check_dsconv_bias(bias, input, weight);
  at::Tensor out = at::empty({shape.batch, shape.out_channels, shape.height, shape.width}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsconv2d_cpu", [&] {
    dsconv2d_forward_cpu<scalar_t>(x.data_ptr<scalar_t>(), off.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                   b.defined() ? b.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), shape,
                                   at::get_num_threads(), aten_gemm<scalar_t>(), parallel_workers);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dsconv2d_backward_cpu_impl(const at::Tensor& grad, const at::Tensor& input,
                                                                         const at::Tensor& offset, const at::Tensor& weight,
                                                                         int64_t morph, double extend_scope) {
  const DSConvShape shape = check_dsconv_args(input, offset, weight, morph, extend_scope);
  check_dsconv_grad(grad, input, shape);
  const at::Tensor g = grad.contiguous(), x = input.contiguous(), off = offset.contiguous(), w = weight.contiguous();
  at::Tensor grad_input = at::empty_like(x), grad_offset = at::empty_like(off), grad_weight = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsconv2d_backward_cpu", [&] {
    dsconv2d_backward_cpu<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), off.data_ptr<scalar_t>(),
                                    w.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
                                    grad_offset.data_ptr<scalar_t>(), grad_weight.data_ptr<scalar_t>(), shape,
                                    at::get_num_threads(), aten_gemm<scalar_t>(), parallel_workers);
  });
  return {grad_input, grad_offset, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(retina, CPU, m) {
  m.impl("dsconv2d", &dsconv2d_cpu_impl);
  m.impl("dsconv2d_backward", &dsconv2d_backward_cpu_impl);
}

}  // namespace retina
