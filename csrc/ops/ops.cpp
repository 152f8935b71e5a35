// The schema of every retina op, declared once. Device files register implementations
// (csrc/ops/cpu, csrc/ops/cuda); Python registers fake kernels and autograd (retina_kernels/ops).
// Also the Python module retina_kernels._C, whose one function reports the CPU kernels' thread count.
#include <Python.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mutex>
#include <set>
#include <thread>

namespace {

// How many threads at::parallel_for, compiled into this library, runs a loop on now: the CPU kernels'
// parallelism. 1 where the library was built without OpenMP, whatever torch.get_num_threads() says
// (ATen's parallel_for is a header template that falls back to one thread without it).
PyObject* parallel_threads(PyObject*, PyObject*) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  const int64_t threads = at::get_num_threads();
  Py_BEGIN_ALLOW_THREADS
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    const std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  Py_END_ALLOW_THREADS
  return PyLong_FromSize_t(seen.size());
}

PyMethodDef methods[] = {
    {"parallel_threads", parallel_threads, METH_NOARGS, "Threads the compiled CPU kernels' loops run on now."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
// Importing retina_kernels._C loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(retina, m) {
  // mask: uint8 [N, 1, H, W] (8/4 connectivity) or [N, 1, D, H, W] (26/6); nonzero is foreground.
  // max_iter: None runs to convergence. Returns a new uint8 tensor of 0/1.
  m.def("skeletonize(Tensor mask, int? max_iter=None) -> Tensor");
  // The differentiable skeleton's forward (docs/differentiable_skeleton.md) on hard values: mask uint8 [N, 1, H, W];
  // exactly num_iter (0..254) outer iterations. Returns (skeleton uint8, halvings uint8): the pixel's
  // gradient factor is 2^-halvings, or 0 where halvings == 255.
  m.def("skeleton_factors(Tensor mask, int num_iter) -> (Tensor, Tensor)");
  // Soft skeleton (docs/soft_skeleton.md): x floating [B, C, H, W] or [B, C, D, H, W]; num_iter >= 0.
  // The backward recomputes the forward from x, so autograd saves only x.
  m.def("soft_skeleton(Tensor x, int num_iter) -> Tensor");
  m.def("soft_skeleton_backward(Tensor grad, Tensor x, int num_iter) -> Tensor");
  // Dynamic snake convolution (docs/dsconv.md): input [B, C, H, W], offset [B, K, H, W] (per-tap offsets of the
  // deformed axis, before the snake accumulation), weight [O, C, K], bias [O]; morph 0 bends along rows,
  // 1 along columns. Returns [B, O, H, W]. The backward returns (grad_input, grad_offset, grad_weight), each
  // only where output_mask asks for it (None otherwise), as aten::convolution_backward: autograd passes which
  // inputs need a gradient, so an image's gradient (a model's first layer) or a frozen weight's is never
  // computed.
  m.def("dsconv2d(Tensor input, Tensor offset, Tensor weight, Tensor? bias, int morph, float extend_scope) -> Tensor");
  m.def("dsconv2d_backward(Tensor grad, Tensor input, Tensor offset, Tensor weight, int morph, float extend_scope,"
        " bool[3] output_mask=[True, True, True]) -> (Tensor?, Tensor?, Tensor?)");
}
