// The CPU engine's bf16 matrix products (sample_cached's precision "bf16"): C[m, n] += A[m, k] .
// B[k, n] with A and B rounded to bf16 (round to nearest even) and the sums in float32. A product
// of two bf16 values is exact in float32, so every kernel computes the same sums up to their order.
//
// Two ways, chosen per weight when it is packed:
// - AMX (Intel's tile unit, Sapphire Rapids and later): B packed as bf16 pairs ("VNNI": each 32-bit
//   element holds rows 2q and 2q + 1 of one column), A rounded into a zero-padded bf16 copy, and
//   TDPBF16PS on 16 x 16 float32 tiles (16 x 16 x 32 multiply-adds an instruction: a loop of them
//   ran 3.4 TFLOP/s on one core of the project's Xeon, small_gemm.h's AVX-512 float32 kernel
//   0.12-0.17 at the engine's shapes).
// - Elsewhere (a CPU without AMX, or a weight with fewer than kVnniMinRows rows): B packed as
//   float32 panels of bf16-rounded values, A rounded into a float32 copy, and small_gemm.h's
//   kernel. Same results (except for denormals, which the AMX path flushes to zero), no faster
//   than float32.
// A weight's bf16 panels sit where its float32 panels would (panel p of column group g at
// (g panels(n) + p) k kPanel floats), so the engine's panel arithmetic is one for both.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "small_gemm.h"

// GCC 11 brought the AMX intrinsics (and 10 the AVX512-BF16 ones); older compilers build without.
#if defined(__linux__) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 11
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define PF_HAVE_AMX 1
#define PF_TARGET_AMX \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#endif

namespace pixelfast {
namespace sampler {

// float -> bf16 bits, round to nearest even; a NaN stays a (quiet) NaN.
// Without branches, so that loops of it vectorise.
inline uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t nan = (u >> 16) | 0x40u, rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

inline float from_bf16(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline float round_bf16(float x) { return from_bf16(to_bf16(x)); }

// AMX tiles take 32 bf16 rows of B per step; a weight with fewer rows than this would not fit its
// bf16 panels (rows rounded up to 32) where its float32 ones go, and is too small to matter.
constexpr int64_t kVnniMinRows = 16;
constexpr int64_t kTileK = 32;     // bf16 values of A per tile row (64 bytes)
constexpr int64_t kTileRows = 16;  // rows of A (and of C) per tile

inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// Whether this CPU has AMX-BF16 and Linux lets this process use it (asked once).
inline bool amx_usable() {
#if defined(PF_HAVE_AMX)
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool tile = d & (1u << 24), bf16 = d & (1u << 22);
    if (!tile || !bf16 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
    const bool avx512_bf16 = a & (1u << 5);  // converts A (bf16_rows_amx)
    if (!avx512_bf16 || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl"))
      return false;
    constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
    constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return yes;
#else
  return false;
#endif
}

// float32 panels (small_gemm.h's pack_panels) of B's values rounded to bf16.
inline void pack_panels_rounded(const float* b, int64_t k, int64_t n, int64_t groups, float* out) {
  pack_panels(b, k, n, groups, out, round_bf16);
}

// B's panels as bf16 pairs, in the float32 panels' places (`out` holds packed_size(k, n, groups)
// floats; needs k >= kVnniMinRows). Panel element (q, t, e) = B[2q + e][t], q < round_up(k, 32) /
// 2, zero past row k and column n, and past row live[g] of column group g where `live` is given:
// the tiles read a product's rows in blocks of 32, past the rows it uses (a centre tap's colour
// group's inputs), where a masked-out inf times A's zero padding would be NaN.
inline void pack_panels_vnni(const float* b, int64_t k, int64_t n, int64_t groups, float* out,
                             const int64_t* live = nullptr) {
  const int64_t ldb = groups * n, rows = round_up(k, kTileK);
  uint16_t* base = reinterpret_cast<uint16_t*>(out);
  const int64_t slot = 2 * k * kPanel;  // bf16 values per float32 panel
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t used = live != nullptr ? std::min(live[g], k) : k;
    for (int64_t p = 0; p < panels(n); ++p) {
      uint16_t* panel = base + (g * panels(n) + p) * slot;
      for (int64_t q = 0; q < rows; ++q) {
        for (int64_t t = 0; t < kPanel; ++t) {
          const int64_t column = p * kPanel + t;
          const bool inside = q < used && column < n;
          panel[(q / 2 * kPanel + t) * 2 + q % 2] =
              inside ? to_bf16(b[q * ldb + g * n + column]) : 0;
        }
      }
    }
  }
}

// A[m, k] (row stride lda) rounded: as float32, dense [m][k].
inline void round_rows(int64_t m, int64_t k, const float* a, int64_t lda, float* out) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t q = 0; q < k; ++q) out[r * k + q] = round_bf16(a[r * lda + q]);
}

// The bf16 values of A as the tiles take it: [round_up(m, 16)][round_up(k, 32)], zero-padded.
inline int64_t bf16_rows_size(int64_t m, int64_t k) {
  return round_up(m, kTileRows) * round_up(k, kTileK);
}

#if defined(PF_HAVE_AMX)
// The tile configuration: palette 1, tiles 0-7 all 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) {
      bytes_per_row[t] = 64;
      rows[t] = 16;
    }
  }
};

// RT x PT tiles of C (tiles 0-3: C[r][p] is tile 2r + p) over `steps` steps of 32 rows of B: A in
// tiles 4-5, B in 6-7. Writes the float32 block to `block` ([32][32]).
template <int RT, int PT>
PF_TARGET_AMX PF_ALWAYS_INLINE void amx_block(int64_t steps, const uint16_t* a, int64_t a_row,
                                              const uint16_t* b, int64_t panel_stride,
                                              float* block) {
  constexpr int kBlockBytes = 32 * sizeof(float);
  _tile_zero(0);
  if constexpr (PT > 1) _tile_zero(1);
  if constexpr (RT > 1) _tile_zero(2);
  if constexpr (RT > 1 && PT > 1) _tile_zero(3);
  const int64_t a_bytes = a_row * 2;
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, a + s * kTileK, a_bytes);
    if constexpr (RT > 1) _tile_loadd(5, a + kTileRows * a_row + s * kTileK, a_bytes);
    _tile_loadd(6, b + s * kTileK * kPanel, 64);
    if constexpr (PT > 1) _tile_loadd(7, b + panel_stride + s * kTileK * kPanel, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (PT > 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (RT > 1) _tile_dpbf16ps(2, 5, 6);
    if constexpr (RT > 1 && PT > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, block, kBlockBytes);
  if constexpr (PT > 1) _tile_stored(1, block + kPanel, kBlockBytes);
  if constexpr (RT > 1) _tile_stored(2, block + kTileRows * 32, kBlockBytes);
  if constexpr (RT > 1 && PT > 1) _tile_stored(3, block + kTileRows * 32 + kPanel, kBlockBytes);
}

// A[m, k] (row stride lda) as bf16 for the tiles (bf16_rows_size values), by AVX512-BF16's
// conversion: round to nearest even, denormals taken as zero (as the tiles take them).
PF_TARGET_AMX inline void bf16_rows_amx(int64_t m, int64_t k, const float* a, int64_t lda,
                                        uint16_t* out) {
  const int64_t kk = round_up(k, kTileK), mm = round_up(m, kTileRows);
  for (int64_t r = 0; r < mm; ++r) {
    uint16_t* row = out + r * kk;
    if (r >= m) {
      std::fill(row, row + kk, uint16_t{0});
      continue;
    }
    for (int64_t q = 0; q < kk; q += 16) {
      const int64_t left = k - q;
      const __mmask16 mask = left >= 16  ? __mmask16(0xFFFF)
                             : left <= 0 ? __mmask16(0)
                                         : __mmask16((1u << left) - 1);
      const __m512 x = _mm512_maskz_loadu_ps(mask, a + r * lda + q);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + q),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x)));
    }
  }
}

// C[m, n] += A . B: A from bf16_rows_amx (k rounded up to 32: `a_row` values a row), B's bf16
// panels `panel_stride` bf16 values apart (their first round_up(k, 32) rows read; A's zeros cancel
// the rows past k).
PF_TARGET_AMX inline void gemm_amx(int64_t m, int64_t n, int64_t k, const uint16_t* a,
                                   const uint16_t* b, int64_t panel_stride, float* c, int64_t ldc) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  const int64_t a_row = round_up(k, kTileK), steps = a_row / kTileK;
  alignas(64) float block[32 * 32];
  for (int64_t c0 = 0; c0 < n; c0 += 2 * kPanel) {
    const uint16_t* panel = b + (c0 / kPanel) * panel_stride;
    const bool two_panels = n - c0 > kPanel;
    const int64_t cols = std::min<int64_t>(2 * kPanel, n - c0);
    for (int64_t r0 = 0; r0 < m; r0 += 2 * kTileRows) {
      const uint16_t* rows = a + r0 * a_row;
      const bool two_tiles = m - r0 > kTileRows;
      if (two_tiles && two_panels) {
        amx_block<2, 2>(steps, rows, a_row, panel, panel_stride, block);
      } else if (two_tiles) {
        amx_block<2, 1>(steps, rows, a_row, panel, panel_stride, block);
      } else if (two_panels) {
        amx_block<1, 2>(steps, rows, a_row, panel, panel_stride, block);
      } else {
        amx_block<1, 1>(steps, rows, a_row, panel, panel_stride, block);
      }
      const int64_t count = std::min<int64_t>(2 * kTileRows, m - r0);
      for (int64_t r = 0; r < count; ++r) {
        float* out = c + (r0 + r) * ldc + c0;
        const float* in = block + r * 32;
        for (int64_t t = 0; t < cols; ++t) out[t] += in[t];
      }
    }
  }
  _tile_release();
}
#endif

}  // namespace sampler
}  // namespace pixelfast
