// Run-time ISA selection for the CPU kernels (host only): a loop body written once is compiled
// three times, for the baseline ISA, for AVX2 + FMA and for AVX-512, and the CPU picks at run
// time. Loops dominated by exp and division (LSTM cells, gated activations) gain about 2x from
// AVX2's vectors and 1.7x more from AVX-512's (the gate op, measured).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

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

#if defined(PF_HAVE_AVX2_INTRINSICS)
// The loops' AVX-512 build: 16 lanes, 512-bit vectors preferred (gcc's tuning may otherwise keep
// to 256 bits).
#define PF_TARGET_AVX512_LOOPS \
  __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")))
inline bool use_avx512() {
  static const bool yes = use_avx2() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return yes;
}
#else
#define PF_TARGET_AVX512_LOOPS
inline bool use_avx512() { return false; }
#endif

// The widest build of the loops below that this CPU runs: 0 the baseline, 1 AVX2 + FMA, 2 AVX-512.
// PIXELFAST_LOOP_ISA=baseline|avx2 caps it (read once; any other value: no cap), so that a test
// can run each build on one machine and compare them.
inline int loop_isa() {
  static const int isa = [] {
    const int best = use_avx512() ? 2 : use_avx2() ? 1 : 0;
    const char* cap = std::getenv("PIXELFAST_LOOP_ISA");
    if (cap == nullptr) return best;
    if (std::strcmp(cap, "baseline") == 0) return 0;
    if (std::strcmp(cap, "avx2") == 0) return best < 1 ? best : 1;
    return best;
  }();
  return isa;
}

// name(args, begin, end) runs name##_impl compiled for AVX-512 or for AVX2 + FMA (loop_isa).
#define PF_ISA_DISPATCH(name)                                                               \
  template <typename Args>                                                                  \
  PF_TARGET_AVX2 void name##_avx2(const Args& args, int64_t begin, int64_t end) {           \
    name##_impl(args, begin, end);                                                          \
  }                                                                                         \
  template <typename Args>                                                                  \
  PF_TARGET_AVX512_LOOPS void name##_avx512(const Args& args, int64_t begin, int64_t end) { \
    name##_impl(args, begin, end);                                                          \
  }                                                                                         \
  template <typename Args>                                                                  \
  void name(const Args& args, int64_t begin, int64_t end) {                                 \
    if (loop_isa() == 2) {                                                                  \
      name##_avx512(args, begin, end);                                                      \
    } else if (loop_isa() == 1) {                                                           \
      name##_avx2(args, begin, end);                                                        \
    } else {                                                                                \
      name##_impl(args, begin, end);                                                        \
    }                                                                                       \
  }

}  // namespace pixelfast
