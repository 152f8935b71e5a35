// retina::skeletonize on CPU: tensors to raw pointers, work split with at::parallel_for.
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "../../core/skeletonize_cpu.h"
#include "../skeletonize_args.h"
#include "parallel.h"

namespace retina {
namespace {

// Lines (rows, or (z, y) lines in 3D) per task: one line is only a few hundred nanoseconds of work.
constexpr int64_t kLinesPerTask = 32;

const ParallelFor kParallelFor = aten_parallel_for(kLinesPerTask);

at::Tensor skeletonize_cpu(const at::Tensor& mask, std::optional<int64_t> max_iter) {
  check_skeletonize_args(mask, max_iter);
  at::Tensor out = mask.clone(at::MemoryFormat::Contiguous);
  const int64_t limit = max_iter.value_or(-1);
  if (out.dim() == 4)
    skeletonize2d_cpu(out.data_ptr<uint8_t>(), out.size(0), out.size(2), out.size(3), limit, kParallelFor);
  else
    skeletonize3d_cpu(out.data_ptr<uint8_t>(), out.size(0), out.size(2), out.size(3), out.size(4), limit,
                      kParallelFor);
  return out;
}

std::tuple<at::Tensor, at::Tensor> skeleton_factors_cpu(const at::Tensor& mask, int64_t num_iter) {
  check_skeleton_factors_args(mask, num_iter);
  at::Tensor skeleton = mask.clone(at::MemoryFormat::Contiguous);
  at::Tensor halvings = at::zeros_like(skeleton);
  skeletonize2d_factors_cpu(skeleton.data_ptr<uint8_t>(), halvings.data_ptr<uint8_t>(), skeleton.size(0),
                            skeleton.size(2), skeleton.size(3), num_iter, kParallelFor);
  return {skeleton, halvings};
}

}  // namespace

TORCH_LIBRARY_IMPL(retina, CPU, m) {
  m.impl("skeletonize", &skeletonize_cpu);
  m.impl("skeleton_factors", &skeleton_factors_cpu);
}

}  // namespace retina
