// The core's ParallelFor on ATen's thread pool, shared by the CPU bindings.
#pragma once

#include <ATen/Parallel.h>

#include "../../core/parallel_for.h"

namespace retina {

// grain: the fewest lines (rows) worth handing to one task.
inline ParallelFor aten_parallel_for(int64_t grain) {
  return [grain](int64_t n, const std::function<void(int64_t, int64_t)>& body) { at::parallel_for(0, n, grain, body); };
}

}  // namespace retina
