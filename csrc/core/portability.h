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

// The CPU core's loops over pixels, compiled twice, for AVX2 and for the baseline ISA, the copy chosen when
// the library loads (GCC function multiversioning; x86-64 ELF only). AVX2 without FMA: the same IEEE
// operations, twice as wide, so both copies give bitwise the same results. Not under ThreadSanitizer, whose
// runtime is not up yet when the loader runs the copies' resolvers (the test crashed at startup).
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && \
    !defined(__SANITIZE_THREAD__)
#define RETINA_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RETINA_CPU_CLONES
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
