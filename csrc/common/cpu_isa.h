// Run-time ISA selection for the CPU kernels (host only): a loop body written once is compiled
// twice, for the baseline ISA and for AVX2 + FMA, and the CPU picks at run time. Loops dominated
// by exp and division (LSTM cells, gated activations) gain about 2x from the wider vectors.
#pragma once

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pixelfast {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PF_HAVE_AVX2_INTRINSICS 1
inline bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define PF_TARGET_AVX2
inline bool use_avx2() { return false; }
#endif

#if defined(__GNUC__)
#define PF_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PF_ALWAYS_INLINE inline
#endif

// name(args, begin, end) runs name##_impl compiled for AVX2 + FMA when the CPU has them.
#define PF_ISA_DISPATCH(name)                                                     \
  template <typename Args>                                                        \
  PF_TARGET_AVX2 void name##_avx2(const Args& args, int64_t begin, int64_t end) { \
    name##_impl(args, begin, end);                                                \
  }                                                                               \
  template <typename Args>                                                        \
  void name(const Args& args, int64_t begin, int64_t end) {                       \
    if (use_avx2()) {                                                             \
      name##_avx2(args, begin, end);                                              \
    } else {                                                                      \
      name##_impl(args, begin, end);                                              \
    }                                                                             \
  }

}  // namespace pixelfast
