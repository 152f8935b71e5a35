// CUDA dynamic snake convolution (docs/dsconv.md), forward and backward. Torch-free: raw device pointers and a
// stream, so this file builds with nvcc alone; the caller allocates every buffer (sizes below).
//
// Layouts: input [B, C, H, W]; offset [B, K, H, W]; out and grad_out [B, O, H, W]; tap positions `low`
// (int32), `frac` (Acc), `live` (uint8), [B, K, H·W] each, filled by dsconv2d_locate_cuda. The weight is
// passed pre-permuted: [C, K, O] to the forward, [O, K, C] to the input gradient. Acc is float for
// float/half/bfloat16 (float32 accumulation) and double for double.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dsconv_shape.h"

namespace retina {

template <class T>
struct DSConvAcc {
  using type = float;
};
template <>
struct DSConvAcc<double> {
  using type = double;
};
template <class T>
using dsconv_acc_t = typename DSConvAcc<T>::type;

// Grid dimensions y and z are limited to 65535: the batch must not exceed this.
constexpr int64_t kDSConvMaxBatch = 65535;

template <class T>
cudaError_t dsconv2d_locate_cuda(const T* offset, int32_t* low, dsconv_acc_t<T>* frac, uint8_t* live,
                                 const DSConvShape& shape, cudaStream_t stream);

template <class T>
cudaError_t dsconv2d_forward_cuda(const T* input, const int32_t* low, const dsconv_acc_t<T>* frac,
                                  const T* weight_cko, const T* bias, T* out, const DSConvShape& shape,
                                  cudaStream_t stream);

// grad_input [B, C, H·W] must be zeroed (null: not computed, no atomics); grad_offset [B, K, H·W] is overwritten.
template <class T>
cudaError_t dsconv2d_input_grad_cuda(const T* grad_out, const T* input, const int32_t* low,
                                     const dsconv_acc_t<T>* frac, const uint8_t* live, const T* weight_okc,
                                     dsconv_acc_t<T>* grad_input, dsconv_acc_t<T>* grad_offset,
                                     const DSConvShape& shape, cudaStream_t stream);

// How many partial sums the weight gradient is split into (enough blocks to fill the GPU).
int64_t dsconv2d_weight_grad_splits(const DSConvShape& shape);

// partial [splits, C, K, O]; their sum over splits is the weight gradient, permuted.
template <class T>
cudaError_t dsconv2d_weight_grad_cuda(const T* grad_out, const T* input, const int32_t* low,
                                      const dsconv_acc_t<T>* frac, dsconv_acc_t<T>* partial, int64_t splits,
                                      const DSConvShape& shape, cudaStream_t stream);

}  // namespace retina
