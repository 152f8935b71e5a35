// retina::dsconv2d on CPU: tensors to raw pointers; ATen supplies the BLAS-backed matrix products and the
// thread pool.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <tuple>
#include <type_traits>

#include "../../core/dsconv_cpu.h"
#include "../dsconv_args.h"

namespace retina {
namespace {

// One worker per thread: each gets whole strips, so the grain is one.
void parallel_workers(int64_t n, const std::function<void(int64_t, int64_t)>& body) { at::parallel_for(0, n, 1, body); }

template <class T>
void aten_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
               const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  // Row-major views; a transposed operand is the stored matrix read with swapped strides.
  const at::Tensor A = trans_a ? at::from_blob(const_cast<T*>(a), {m, k}, {1, lda}, options)
                               : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor B = trans_b ? at::from_blob(const_cast<T*>(b), {k, n}, {1, ldb}, options)
                               : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, options);
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, options);
  C.addmm_(A, B, beta, alpha);
}

// The BLAS that torch itself links (MKL or OpenBLAS export the Fortran sgemm_/dgemm_), called directly:
// the tiles' products are small (a 3->72 layer: 72x33x256), and building three tensors and dispatching
// addmm_ for each cost a tenth of that layer's time. Weak symbols: where torch's BLAS is not visible they
// are null, and so is a BLAS whose answer to a known product is wrong (an ILP64 build under the same
// name, say); ATen's addmm_ serves then.
#if defined(__ELF__)
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}
template <class T>
using FortranGemm = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                             const int*, const T*, const int*, const T*, T*, const int*);
template <class T>
FortranGemm<T> fortran_gemm() {
  if constexpr (std::is_same_v<T, float>) return sgemm_;
  else return dgemm_;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major matrix read
// column-major is its transpose: so B goes first, each with its own flag.
template <class T>
void fortran_row_major(FortranGemm<T> f, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                       const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LA = static_cast<int>(ldb), LB = static_cast<int>(lda), LC = static_cast<int>(ldc);
  f(&ta, &tb, &M, &N, &K, &alpha, b, &LA, a, &LB, &beta, c, &LC);
}

// Whether the BLAS computes a known 2x3 (x) 3x2 product with both transpose flags right.
template <class T>
bool fortran_gemm_works(FortranGemm<T> f) {
  const T a[6] = {1, 2, 3, 4, 5, 6};       // [2, 3] row-major
  const T b[6] = {7, 8, 9, 10, 11, 12};    // [3, 2] row-major
  const T expected[4] = {58, 64, 139, 154};
  T c[4] = {0, 0, 0, 0};
  fortran_row_major<T>(f, false, false, 2, 2, 3, T(1), a, 3, b, 2, T(0), c, 2);
  T ct[4] = {0, 0, 0, 0};  // the same product from the stored transposes
  const T at[6] = {1, 4, 2, 5, 3, 6}, bt[6] = {7, 9, 11, 8, 10, 12};
  fortran_row_major<T>(f, true, true, 2, 2, 3, T(1), at, 2, bt, 3, T(0), ct, 2);
  for (int i = 0; i < 4; ++i)
    if (c[i] != expected[i] || ct[i] != expected[i]) return false;
  return true;
}
#endif

template <class T>
Gemm<T> cpu_gemm() {
#if defined(__ELF__)
  static const FortranGemm<T> blas = [] {
    const FortranGemm<T> f = fortran_gemm<T>();
    return f != nullptr && fortran_gemm_works<T>(f) ? f : nullptr;
  }();
  // (Sizes beyond int range go to ATen, which splits them.)
  if (blas != nullptr)
    return [](bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
      constexpr int64_t limit = std::numeric_limits<int>::max();
      if (std::max({m, n, k, lda, ldb, ldc}) > limit)
        aten_gemm<T>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      else
        fortran_row_major<T>(blas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    };
#endif
  return aten_gemm<T>;
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
                                   at::get_num_threads(), cpu_gemm<scalar_t>(), parallel_workers);
  });
  return out;
}

DSConvGrads dsconv2d_backward_cpu_impl(const at::Tensor& grad, const at::Tensor& input,
                                        const at::Tensor& offset, const at::Tensor& weight,
                                        int64_t morph, double extend_scope,
                                        std::array<bool, 3> output_mask) {
  const DSConvShape shape = check_dsconv_args(input, offset, weight, morph, extend_scope);
  check_dsconv_grad(grad, input, shape);
  const at::Tensor g = grad.contiguous(), x = input.contiguous(), off = offset.contiguous(), w = weight.contiguous();
  // Undefined (None in Python) where output_mask does not ask for the gradient.
  const auto wanted = [](bool want, const at::Tensor& like) { return want ? at::empty_like(like) : at::Tensor(); };
  at::Tensor grad_input = wanted(output_mask[0], x), grad_offset = wanted(output_mask[1], off),
             grad_weight = wanted(output_mask[2], w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsconv2d_backward_cpu", [&] {
    const auto data = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    dsconv2d_backward_cpu<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), off.data_ptr<scalar_t>(),
                                    w.data_ptr<scalar_t>(), data(grad_input), data(grad_offset), data(grad_weight),
                                    shape, at::get_num_threads(), cpu_gemm<scalar_t>(), parallel_workers);
  });
  return dsconv_grads(grad_input, grad_offset, grad_weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(retina, CPU, m) {
  m.impl("dsconv2d", &dsconv2d_cpu_impl);
  m.impl("dsconv2d_backward", &dsconv2d_backward_cpu_impl);
}

}  // namespace retina
