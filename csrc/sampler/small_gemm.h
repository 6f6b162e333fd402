// The CPU engine's matrix products, float32: C[m, n] += A[m, k] . B[k, n] for the small m (the
// batch, or a row's positions) of one position's conv, with B packed once per engine call.
//
// BLAS, called per position, copies ("packs") B and A into its own layout at every call (in a
// profile of the reference PixelCNN, 23% of the time went to those copies, 36% to MKL's multiply
// kernel). Here B is packed once, before the raster loop, into panels of kPanel columns
// ([k][kPanel], zero past the last column), and a register-blocked kernel reads A's rows in place
// (any row stride: a row-phase conv's rows overlap) and B's panels straight through. Compiled for
// AVX-512, AVX2 + FMA and plain C++, chosen at run time by the CPU (or by sampler_gemm_kernel, for
// the tests).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/cpu_isa.h"

namespace pixelfast {
namespace sampler {

constexpr int64_t kPanel = 16;  // B's columns per panel: one AVX-512 vector, two AVX2 ones

// Panels of a [k, groups * n] row-major matrix whose column groups (a masked conv's colour groups:
// each sub-step reads one) are packed apart: group g's panel p holds its columns
// [p kPanel, (p + 1) kPanel) and starts at (g panels(n) + p) k kPanel.
inline int64_t panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

inline int64_t packed_size(int64_t k, int64_t n, int64_t groups) {
  return groups * panels(n) * k * kPanel;
}

// `value` maps each weight on its way in (the bf16 path rounds them: small_gemm_bf16.h).
template <typename Value = float (*)(float)>
inline void pack_panels(
    const float* b, int64_t k, int64_t n, int64_t groups, float* out,
    Value value = [](float x) { return x; }) {
  const int64_t ldb = groups * n;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t c0 = 0; c0 < n; c0 += kPanel) {
      for (int64_t q = 0; q < k; ++q) {
        const float* row = b + q * ldb + g * n;
        for (int64_t t = 0; t < kPanel; ++t) *out++ = c0 + t < n ? value(row[c0 + t]) : 0.0f;
      }
    }
  }
}

// kAmx: bf16 products only (small_gemm_bf16.h); float32 ones then take the widest of the others.
enum class GemmKernel : int { kAuto = 0, kGeneric = 1, kAvx2 = 2, kAvx512 = 3, kAmx = 4 };

// ---- plain C++: an MR x kPanel tile in an array the compiler keeps in vector registers

template <int MR>
PF_ALWAYS_INLINE void tile_generic(int64_t n, int64_t k, const float* a, int64_t lda,
                                   const float* b, float* c, int64_t ldc) {
  float acc[MR][kPanel] = {};
  for (int64_t q = 0; q < k; ++q) {
    for (int r = 0; r < MR; ++r) {
      const float x = a[r * lda + q];
      for (int t = 0; t < kPanel; ++t) acc[r][t] += x * b[q * kPanel + t];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int64_t t = 0; t < n; ++t) c[r * ldc + t] += acc[r][t];
}

#if defined(PF_HAVE_AVX2_INTRINSICS)
#define PF_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))

// ---- AVX2 + FMA: MR rows x one panel (two vectors); the last panel's columns past n masked

PF_TARGET_AVX2 inline __m256i lanes_below(int64_t count) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), index);
}

// C is loaded and stored whole where the panel is (masked only at a tail): the next op reads
// what this stores, and a masked store cannot forward its data to a load, which then waits.
template <int MR>
PF_TARGET_AVX2 PF_ALWAYS_INLINE void tile_avx2(int64_t n, int64_t k, const float* a, int64_t lda,
                                               const float* b, float* c, int64_t ldc) {
  const bool whole = n >= kPanel;
  const __m256i m0 = lanes_below(n), m1 = lanes_below(n - 8);
  __m256 lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) {
    lo[r] = whole ? _mm256_loadu_ps(c + r * ldc) : _mm256_maskload_ps(c + r * ldc, m0);
    hi[r] = whole ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_maskload_ps(c + r * ldc + 8, m1);
  }
  for (int64_t q = 0; q < k; ++q) {
    const __m256 b0 = _mm256_loadu_ps(b + q * kPanel), b1 = _mm256_loadu_ps(b + q * kPanel + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r * lda + q);
      lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    if (whole) {
      _mm256_storeu_ps(c + r * ldc, lo[r]);
      _mm256_storeu_ps(c + r * ldc + 8, hi[r]);
    } else {
      _mm256_maskstore_ps(c + r * ldc, m0, lo[r]);
      _mm256_maskstore_ps(c + r * ldc + 8, m1, hi[r]);
    }
  }
}

// ---- AVX-512: MR rows x NP panels (one vector each); C whole where a panel is, as above

PF_TARGET_AVX512 inline __mmask16 lanes_mask(int64_t count) {
  return count >= kPanel ? __mmask16(0xFFFF)
         : count <= 0    ? __mmask16(0)
                         : __mmask16((1u << count) - 1);
}

template <int MR, int NP>
PF_TARGET_AVX512 PF_ALWAYS_INLINE void tile_avx512(int64_t n, int64_t k, const float* a,
                                                   int64_t lda, const float* b,
                                                   int64_t panel_stride, float* c, int64_t ldc) {
  __mmask16 mask[NP];
  __m512 acc[MR][NP];
  for (int p = 0; p < NP; ++p) mask[p] = lanes_mask(n - p * kPanel);
  const bool whole = n >= NP * kPanel;
  for (int r = 0; r < MR; ++r)
    for (int p = 0; p < NP; ++p)
      acc[r][p] = whole ? _mm512_loadu_ps(c + r * ldc + p * kPanel)
                        : _mm512_maskz_loadu_ps(mask[p], c + r * ldc + p * kPanel);
  for (int64_t q = 0; q < k; ++q) {
    __m512 bq[NP];
    for (int p = 0; p < NP; ++p) bq[p] = _mm512_loadu_ps(b + p * panel_stride + q * kPanel);
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + q]);
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_fmadd_ps(x, bq[p], acc[r][p]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int p = 0; p < NP; ++p) {
      if (whole) {
        _mm512_storeu_ps(c + r * ldc + p * kPanel, acc[r][p]);
      } else {
        _mm512_mask_storeu_ps(c + r * ldc + p * kPanel, mask[p], acc[r][p]);
      }
    }
  }
}
#endif

// ---- the drivers: rows in tiles of MR (the remainder by a smaller tile), panels left to right

// Calls tile<R>() for R = rows (1 <= rows <= MR).
template <int MR, typename Tile>
PF_ALWAYS_INLINE void with_rows(int64_t rows, Tile&& tile) {
  if constexpr (MR > 1) {
    if (rows < MR) return with_rows<MR - 1>(rows, tile);
  }
  tile.template operator()<MR>();
}

// C[m, n] += A[m, k] . B[k, n]: B as panels `panel_stride` floats apart (its first k rows used).
inline void gemm_generic(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                         const float* b, int64_t panel_stride, float* c, int64_t ldc) {
  constexpr int MR = 4;
  for (int64_t c0 = 0; c0 < n; c0 += kPanel) {
    const float* panel = b + (c0 / kPanel) * panel_stride;
    for (int64_t r = 0; r < m; r += MR) {
      with_rows<MR>(std::min<int64_t>(MR, m - r), [&]<int R>() {
        tile_generic<R>(std::min(kPanel, n - c0), k, a + r * lda, lda, panel, c + r * ldc + c0,
                        ldc);
      });
    }
  }
}

#if defined(PF_HAVE_AVX2_INTRINSICS)
PF_TARGET_AVX2 inline void gemm_avx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                                     const float* b, int64_t panel_stride, float* c, int64_t ldc) {
  constexpr int MR = 6;
  for (int64_t c0 = 0; c0 < n; c0 += kPanel) {
    const float* panel = b + (c0 / kPanel) * panel_stride;
    for (int64_t r = 0; r < m; r += MR) {
      with_rows<MR>(std::min<int64_t>(MR, m - r), [&]<int R>() PF_TARGET_AVX2 {
        tile_avx2<R>(n - c0, k, a + r * lda, lda, panel, c + r * ldc + c0, ldc);
      });
    }
  }
}

// Two panels at a time, the last odd one alone; 12 rows a tile: 24 accumulators of the 32 vector
// registers, each pair of B vectors loaded once for 24 multiply-adds. (8 rows, 16 accumulators,
// was 2-7% slower on the reference PixelCNN at batch 64, processes alternating: B's panels are
// read once per tile of rows, and a position's weights come from L3.)
PF_TARGET_AVX512 inline void gemm_avx512(int64_t m, int64_t n, int64_t k, const float* a,
                                         int64_t lda, const float* b, int64_t panel_stride,
                                         float* c, int64_t ldc) {
  constexpr int MR = 12;
  for (int64_t c0 = 0; c0 < n; c0 += 2 * kPanel) {
    const float* panel = b + (c0 / kPanel) * panel_stride;
    const bool two = n - c0 > kPanel;
    for (int64_t r = 0; r < m; r += MR) {
      with_rows<MR>(std::min<int64_t>(MR, m - r), [&]<int R>() PF_TARGET_AVX512 {
        if (two) {
          tile_avx512<R, 2>(n - c0, k, a + r * lda, lda, panel, panel_stride, c + r * ldc + c0,
                            ldc);
        } else {
          tile_avx512<R, 1>(n - c0, k, a + r * lda, lda, panel, panel_stride, c + r * ldc + c0,
                            ldc);
        }
      });
    }
  }
}
#endif

inline bool cpu_supports(GemmKernel kind) {
  switch (kind) {
#if defined(PF_HAVE_AVX2_INTRINSICS)
    case GemmKernel::kAvx512:
      return __builtin_cpu_supports("avx512f") && use_avx2();
    case GemmKernel::kAvx2:
      return use_avx2();
#else
    case GemmKernel::kAvx512:
    case GemmKernel::kAvx2:
      return false;
#endif
    default:
      return true;
  }
}

// The widest kernel this CPU runs.
inline GemmKernel best_kernel() {
  if (cpu_supports(GemmKernel::kAvx512)) return GemmKernel::kAvx512;
  if (cpu_supports(GemmKernel::kAvx2)) return GemmKernel::kAvx2;
  return GemmKernel::kGeneric;
}

// C[m, n] += A[m, k] . B[k, n] by `kind` (not kAuto; one the CPU supports), B's panels
// `panel_stride` floats apart.
inline void gemm_packed(GemmKernel kind, int64_t m, int64_t n, int64_t k, const float* a,
                        int64_t lda, const float* b, int64_t panel_stride, float* c, int64_t ldc) {
#if defined(PF_HAVE_AVX2_INTRINSICS)
  if (kind == GemmKernel::kAvx512) return gemm_avx512(m, n, k, a, lda, b, panel_stride, c, ldc);
  if (kind == GemmKernel::kAvx2) return gemm_avx2(m, n, k, a, lda, b, panel_stride, c, ldc);
#endif
  gemm_generic(m, n, k, a, lda, b, panel_stride, c, ldc);
}

}  // namespace sampler
}  // namespace pixelfast
