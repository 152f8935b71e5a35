// retina::skeletonize on CUDA: tensors to raw pointers on the current stream; scratch from torch's
// caching allocator.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../core/skeletonize_cuda.h"
#include "../skeletonize_args.h"

namespace retina {
namespace {

at::Tensor skeletonize_cuda(const at::Tensor& mask, std::optional<int64_t> max_iter) {
  check_skeletonize_args(mask, max_iter);
  const c10::cuda::CUDAGuard guard(mask.device());
  at::Tensor out = mask.clone(at::MemoryFormat::Contiguous);
  const int64_t limit = max_iter.value_or(-1);
  const bool is2d = out.dim() == 4;
  const size_t bytes = is2d ? skeletonize2d_cuda_workspace_bytes(out.size(0), out.size(2), out.size(3))
                            : skeletonize3d_cuda_workspace_bytes(out.size(0), out.size(2), out.size(3), out.size(4));
  at::Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, out.options().dtype(at::kByte));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cudaError_t err =
      is2d ? skeletonize2d_cuda(out.data_ptr<uint8_t>(), out.size(0), out.size(2), out.size(3), limit,
                                workspace.data_ptr(), stream)
           : skeletonize3d_cuda(out.data_ptr<uint8_t>(), out.size(0), out.size(2), out.size(3), out.size(4), limit,
                                workspace.data_ptr(), stream);
  C10_CUDA_CHECK(err);
  return out;
}

std::tuple<at::Tensor, at::Tensor> skeleton_factors_cuda(const at::Tensor& mask, int64_t num_iter) {
  check_skeleton_factors_args(mask, num_iter);
  const c10::cuda::CUDAGuard guard(mask.device());
  at::Tensor skeleton = mask.clone(at::MemoryFormat::Contiguous);
  at::Tensor halvings = at::empty_like(skeleton);
  const int64_t n = skeleton.size(0), h = skeleton.size(2), w = skeleton.size(3);
  at::Tensor workspace = at::empty({static_cast<int64_t>(skeletonize2d_factors_cuda_workspace_bytes(n, h, w, num_iter))},
                                   skeleton.options());
  C10_CUDA_CHECK(skeletonize2d_factors_cuda(skeleton.data_ptr<uint8_t>(), halvings.data_ptr<uint8_t>(), n, h, w,
                                            num_iter, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return {skeleton, halvings};
}

}  // namespace

TORCH_LIBRARY_IMPL(retina, CUDA, m) {
  m.impl("skeletonize", &skeletonize_cuda);
  m.impl("skeleton_factors", &skeleton_factors_cuda);
}

}  // namespace retina
