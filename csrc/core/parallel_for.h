// The parallel-for the torch-free CPU kernels take from their caller: the extension passes one on ATen's
// thread pool (csrc/ops/cpu/parallel.h), the C++ unit tests a serial or a std::thread one. Every CPU
// core includes this header rather than another kernel's.
#pragma once

#include <cstdint>
#include <functional>

namespace retina {

// Runs body(begin, end) over disjoint sub-ranges covering [0, n); may call it from several threads.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t, int64_t)>& body)>;

// Serial ParallelFor, for callers without a thread pool.
inline void serial_for(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
  if (n > 0) body(0, n);
}

}  // namespace retina
