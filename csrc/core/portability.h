// Macros that let one function body serve both the C++ (host) and CUDA (device) builds.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RETINA_HD __host__ __device__ __forceinline__
#else
#define RETINA_HD inline
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
