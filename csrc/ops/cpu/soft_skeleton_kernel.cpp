// retina::soft_skeleton on CPU: tensors to raw pointers, work split with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../../core/soft_skeleton_cpu.h"
#include "../soft_skeleton_args.h"
#include "parallel.h"

namespace retina {
namespace {

// Rows per task: a row is a few microseconds of work at most.
constexpr int64_t kRowsPerTask = 16;

const ParallelFor kParallelFor = aten_parallel_for(kRowsPerTask);

at::Tensor soft_skeleton_cpu_impl(const at::Tensor& x, int64_t num_iter) {
  const SoftSkeletonShape shape = check_soft_skeleton_args(x, num_iter);
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                    "soft_skeleton: on the CPU x must be float32 or float64, got ", x.scalar_type());
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "soft_skeleton_cpu", [&] {
    soft_skeleton_forward_cpu<scalar_t>(input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), shape, num_iter,
                                        kParallelFor);
  });
  return out;
}

at::Tensor soft_skeleton_backward_cpu_impl(const at::Tensor& grad, const at::Tensor& x, int64_t num_iter) {
  const SoftSkeletonShape shape = check_soft_skeleton_args(x, num_iter);
  check_soft_skeleton_grad(grad, x);
  const at::Tensor input = x.contiguous(), grad_out = grad.contiguous();
  at::Tensor grad_x = at::empty_like(input, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "soft_skeleton_backward_cpu", [&] {
    soft_skeleton_backward_cpu<scalar_t>(input.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                                         grad_x.data_ptr<scalar_t>(), shape, num_iter, kParallelFor);
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(retina, CPU, m) {
  m.impl("soft_skeleton", &soft_skeleton_cpu_impl);
  m.impl("soft_skeleton_backward", &soft_skeleton_backward_cpu_impl);
}

}  // namespace retina
