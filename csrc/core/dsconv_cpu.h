// CPU dynamic snake convolution (docs/dsconv.md), forward and backward, without the [B, C*K, H*W] map of
// samples the public code materialises: pixels are processed in small tiles whose samples are built,
// contracted and dropped (recomputed in backward). From 8 channels on, the tiles read a channels-last copy
// of the input (and the backward accumulates the input gradient channels-last): one more input's worth of
// memory in forward, two in backward. Torch-free: raw pointers, the matrix products and the
// thread pool are supplied by the caller (the extension passes ATen's BLAS-backed mm and parallel_for).
#pragma once

#include <cstdint>
#include <functional>

#include "dsconv_shape.h"
#include "parallel_for.h"

namespace retina {

// Row-major C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C, op = transpose when the flag is set
// (A is stored [k, m] with row stride lda then; likewise B). Called from several threads at once.
template <class T>
using Gemm = std::function<void(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                                int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc)>;

// out[b,o,p] = bias[o] + sum_{c,k} weight[o,c,k] * input[b,c] sampled at tap k's snake position.
// input [B,C,H,W], offset [B,K,H,W], weight [O,C,K], bias [O] or nullptr, out [B,O,H,W]; contiguous.
template <class T>
void dsconv2d_forward_cpu(const T* input, const T* offset, const T* weight, const T* bias, T* out,
                          const DSConvShape& shape, int64_t threads, const Gemm<T>& gemm,
                          const ParallelFor& parallel_for);

// Gradients of <grad_out, out> for input, offset and weight (the bias gradient is grad_out's sum), each
// overwritten; a null pointer skips that gradient and the work only it needs (without grad_weight, its
// matrix product; without grad_input and grad_offset, the samples' gradients). threads: how many workers
// may run at once (each keeps a private weight-gradient accumulator).
template <class T>
void dsconv2d_backward_cpu(const T* grad_out, const T* input, const T* offset, const T* weight, T* grad_input,
                           T* grad_offset, T* grad_weight, const DSConvShape& shape, int64_t threads,
                           const Gemm<T>& gemm, const ParallelFor& parallel_for);

}  // namespace retina
