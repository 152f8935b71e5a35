// Macros that let one function body serve both the C++ (host) and CUDA (device) builds.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RETINA_HD __host__ __device__ __forceinline__
#else
#define RETINA_HD inline
#endif

// Promises the compiler that a pointer is the only way to its data (lets it vectorize gathers/selects).
#if defined(_MSC_VER)
#define RETINA_RESTRICT __restrict
#else
#define RETINA_RESTRICT __restrict__
#endif

namespace retina {

RETINA_HD int popcount32(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

}  // namespace retina
