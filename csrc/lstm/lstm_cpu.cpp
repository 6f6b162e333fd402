// The CPU kernels of the LSTM scans (lstm_op.h) and the CPU registration of the ops.
//
// The cell loops vectorise only if gcc may if-convert the float comparisons of cell.h's sigmoid
// and tanh (a comparison could raise an FP exception flag that nobody reads); torch itself is
// built with -fno-trapping-math too. Set for the whole file so that inlining across ATen's
// parallel_for is not blocked by differing options.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/cpu_isa.h"
#include "cell.h"
#include "lstm_backend.h"
#include "lstm_op.h"
#include "lstm_params.h"
#include "scan_step.h"

namespace pixelfast {
namespace lstm {

// ---------------------------------------------------------------------------- CPU kernels
//
// Each kernel runs at::parallel_for over the independent pixels of one step; a range of pixels is
// processed by a "chunk" function compiled twice, for the baseline ISA and for AVX2 + FMA (picked
// at run time): the cell loops are dominated by exp and division and gain 2x from wider vectors.

namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

// Consecutive pixels of an anti-diagonal lie a row (or an image) apart in memory, beyond the
// hardware prefetcher: fetch a few ahead (a Row LSTM step's pixels are adjacent, and the prefetch
// costs it next to nothing).
constexpr int64_t kPrefetchAhead = 2;

template <typename T>
PF_ALWAYS_INLINE void prefetch_strip(const T* p, int64_t n) {
#if defined(__GNUC__)
  for (int64_t k = 0; k < n; k += 64 / static_cast<int64_t>(sizeof(T))) __builtin_prefetch(p + k);
#endif
}

// Pixels per parallel_for task: enough cells to pay for a task.
int64_t grain(int64_t cells_per_item) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cells_per_item));
}

// ---- cell loops over one pixel's channels (contiguous, channels-last), the inner loop over a
// colour group's m channels so that it vectorises: each gate's m values are contiguous.

// Operands that a template flag says are absent (c_prev) are never read.
template <typename T, bool kHasCPrev>
PF_ALWAYS_INLINE void cell_forward_strip(int64_t n, const T* __restrict__ g_i,
                                         const T* __restrict__ g_f, const T* __restrict__ g_o,
                                         const T* __restrict__ g_g, const T* __restrict__ p_i,
                                         const T* __restrict__ p_f, const T* __restrict__ p_o,
                                         const T* __restrict__ p_g, const T* __restrict__ c_prev,
                                         T* __restrict__ o_i, T* __restrict__ o_f,
                                         T* __restrict__ o_o, T* __restrict__ o_g,
                                         T* __restrict__ c, T* __restrict__ h) {
  for (int64_t j = 0; j < n; ++j) {
    cell_forward(g_i[j] + p_i[j], g_f[j] + p_f[j], g_o[j] + p_o[j], g_g[j] + p_g[j],
                 kHasCPrev ? c_prev[j] : T(0), &o_i[j], &o_f[j], &o_o[j], &o_g[j], &c[j], &h[j]);
  }
}

template <typename T, bool kHasCPrev>
PF_ALWAYS_INLINE void cell_backward_strip(int64_t n, const T* __restrict__ a_i,
                                          const T* __restrict__ a_f, const T* __restrict__ a_o,
                                          const T* __restrict__ a_g, const T* __restrict__ c,
                                          const T* __restrict__ c_prev, const T* __restrict__ dh,
                                          const T* __restrict__ dc_in, T* __restrict__ dc_out,
                                          T* __restrict__ d_i, T* __restrict__ d_f,
                                          T* __restrict__ d_o, T* __restrict__ d_g) {
  for (int64_t j = 0; j < n; ++j) {
    cell_backward(a_i[j], a_f[j], a_o[j], a_g[j], c[j], kHasCPrev ? c_prev[j] : T(0), dh[j],
                  dc_in[j], &d_i[j], &d_f[j], &d_o[j], &d_g[j], &dc_out[j]);
  }
}

// pre: the state-to-state product plus the bias.
template <typename T, bool kHasCPrev>
PF_ALWAYS_INLINE void cell_forward_pixel(const T* __restrict__ gin, const T* __restrict__ pre,
                                         const T* __restrict__ c_prev, T* __restrict__ act,
                                         T* __restrict__ c, T* __restrict__ h, int64_t hidden,
                                         int64_t groups) {
  const int64_t m = hidden / groups;
  const T* cp = kHasCPrev ? c_prev : c;  // never read when absent
  for (int64_t grp = 0; grp < groups; ++grp) {
    const int64_t gb = grp * 4 * m;  // this group's gate block
    const int64_t hb = grp * m;      // and its hidden channels
    cell_forward_strip<T, kHasCPrev>(m, gin + gb, gin + gb + m, gin + gb + 2 * m, gin + gb + 3 * m,
                                     pre + gb, pre + gb + m, pre + gb + 2 * m, pre + gb + 3 * m,
                                     cp + hb, act + gb, act + gb + m, act + gb + 2 * m,
                                     act + gb + 3 * m, c + hb, h + hb);
  }
}

// dh: this pixel's full hidden gradient; dc_in: dc * f of the next pixel on this pixel's cell
// path; dc_out receives this pixel's dc * f. Writes dpre; the caller copies it to grad_gates (a
// second store in this loop stops gcc from vectorising it).
template <typename T, bool kHasCPrev>
PF_ALWAYS_INLINE void cell_backward_pixel(const T* __restrict__ act, const T* __restrict__ c,
                                          const T* __restrict__ c_prev, const T* __restrict__ dh,
                                          const T* __restrict__ dc_in, T* __restrict__ dc_out,
                                          T* __restrict__ dpre, int64_t hidden, int64_t groups) {
  const int64_t m = hidden / groups;
  const T* cp = kHasCPrev ? c_prev : c;  // never read when absent
  for (int64_t grp = 0; grp < groups; ++grp) {
    const int64_t gb = grp * 4 * m;
    const int64_t hb = grp * m;
    cell_backward_strip<T, kHasCPrev>(m, act + gb, act + gb + m, act + gb + 2 * m, act + gb + 3 * m,
                                      c + hb, cp + hb, dh + hb, dc_in + hb, dc_out + hb, dpre + gb,
                                      dpre + gb + m, dpre + gb + 2 * m, dpre + gb + 3 * m);
  }
}

// ---- channels-last copies of inputs that come in another layout, by 16 x 16 tiles: ATen's
// generic strided copy is ~3x slower here.

template <typename T>
struct TransposeArgs {
  const T* src;  // [B, C, P] (P = H * W)
  T* dst;        // [B, P, C]
  int64_t channels, pixels, channel_tiles, pixel_tiles;
};

constexpr int64_t kTile = 16;

// The tile loop. full_tile(src, dst, src_stride, dst_stride) may copy a whole kTile x kTile tile
// its own way and return true; otherwise (and for ragged edge tiles) a scalar loop copies it.
template <typename Args, typename FullTile>
PF_ALWAYS_INLINE void transpose_tiles_impl(const Args& a, int64_t begin, int64_t end,
                                           FullTile&& full_tile) {
  const int64_t tiles = a.channel_tiles * a.pixel_tiles;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / tiles, ct = item % tiles / a.pixel_tiles, pt = item % a.pixel_tiles;
    const int64_t c0 = ct * kTile, c1 = std::min(a.channels, c0 + kTile);
    const int64_t p0 = pt * kTile, p1 = std::min(a.pixels, p0 + kTile);
    const auto* src = a.src + b * a.channels * a.pixels;
    auto* dst = a.dst + b * a.channels * a.pixels;
    if (c1 - c0 == kTile && p1 - p0 == kTile &&
        full_tile(src + c0 * a.pixels + p0, dst + p0 * a.channels + c0, a.pixels, a.channels)) {
      continue;
    }
    for (int64_t ch = c0; ch < c1; ++ch) {  // contiguous reads, strided writes: the faster order
      for (int64_t p = p0; p < p1; ++p) dst[p * a.channels + ch] = src[ch * a.pixels + p];
    }
  }
}

template <typename Args>
PF_ALWAYS_INLINE void transpose_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  transpose_tiles_impl(a, begin, end, [](const auto*, auto*, int64_t, int64_t) { return false; });
}
PF_ISA_DISPATCH(transpose_chunk)

#if defined(PF_HAVE_AVX2_INTRINSICS)
// float tiles as 8 x 8 register transposes (unpack, shuffle, lane permute): about 3x the scalar
// tile loop, which moves one float per instruction.
PF_TARGET_AVX2 inline void transpose8x8(const float* src, int64_t src_stride, float* dst,
                                        int64_t dst_stride) {
  __m256 r[8], t[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * src_stride);
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    r[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(dst + k * dst_stride, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
    _mm256_storeu_ps(dst + (k + 4) * dst_stride, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
  }
}

PF_TARGET_AVX2 void transpose_chunk_float_avx2(const TransposeArgs<float>& a, int64_t begin,
                                               int64_t end) {
  transpose_tiles_impl(a, begin, end,
                       [](const float* src, float* dst, int64_t src_stride, int64_t dst_stride) {
                         for (int64_t c = 0; c < kTile; c += 8) {
                           for (int64_t q = 0; q < kTile; q += 8) {
                             transpose8x8(src + c * src_stride + q, src_stride,
                                          dst + q * dst_stride + c, dst_stride);
                           }
                         }
                         return true;
                       });
}
#endif

template <typename T>
void transpose_tiles(const TransposeArgs<T>& args, int64_t begin, int64_t end) {
#if defined(PF_HAVE_AVX2_INTRINSICS)
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx2()) return transpose_chunk_float_avx2(args, begin, end);
  }
#endif
  transpose_chunk(args, begin, end);
}

at::Tensor channels_last_cpu(const at::Tensor& t) {
  if (t.is_contiguous(kChannelsLast)) return t;
  const at::Tensor src = t.contiguous();
  at::Tensor dst = at::empty_like(src, kChannelsLast);
  const int64_t batch = src.size(0), channels = src.size(1), pixels = src.size(2) * src.size(3);
  const int64_t channel_tiles = (channels + kTile - 1) / kTile;
  const int64_t pixel_tiles = (pixels + kTile - 1) / kTile;
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "lstm_channels_last", [&] {
    const TransposeArgs<scalar_t> args{src.const_data_ptr<scalar_t>(),
                                       dst.mutable_data_ptr<scalar_t>(),
                                       channels,
                                       pixels,
                                       channel_tiles,
                                       pixel_tiles};
    at::parallel_for(0, batch * channel_tiles * pixel_tiles, 16,
                     [&](int64_t begin, int64_t end) { transpose_tiles(args, begin, end); });
  });
  return dst;
}

// ---- the chunks: a range [begin, end) of a step's scan rows (pixels), over the step geometry of
// scan_step.h; the same lookups as the CUDA kernels (lstm_kernels.cuh), a pixel's channels at once.

template <typename T>
PF_ALWAYS_INLINE void gather_chunk_impl(const GatherParams<T>& a, int64_t begin, int64_t end) {
  const Step& s = a.step;
  const int64_t hid = s.hidden;
  for (int64_t n = begin; n < end; ++n) {
    const Pixel p = pixel(s, n);
    T* dst = a.x + n * s.taps * hid;
    for (int64_t tap = 0; tap < s.taps; ++tap) {
      const int64_t src = source(s, p, tap);
      if (src >= 0) {
        std::copy(a.h + src * hid, a.h + (src + 1) * hid, dst + tap * hid);
      } else {
        std::fill(dst + tap * hid, dst + (tap + 1) * hid, T(0));
      }
    }
    if (a.pre != nullptr) std::copy(a.bias, a.bias + 4 * hid, a.pre + n * 4 * hid);
  }
}
PF_ISA_DISPATCH(gather_chunk)

template <typename T>
PF_ALWAYS_INLINE void cell_forward_chunk_impl(const CellForwardParams<T>& a, int64_t begin,
                                              int64_t end) {
  const Step& s = a.step;
  const int64_t hid = s.hidden;
  for (int64_t n = begin; n < end; ++n) {
    const Pixel p = pixel(s, n);
    if (n + kPrefetchAhead < end) {
      prefetch_strip(a.gates + pixel(s, n + kPrefetchAhead).offset * 4 * hid, 4 * hid);
    }
    const T* gin = a.gates + p.offset * 4 * hid;
    const T* pre = a.pre + n * 4 * hid;
    T* act = a.acts + p.offset * 4 * hid;
    T* c = a.c + p.offset * hid;
    T* h = a.h + p.offset * hid;
    const int64_t prev = cell_source(s, p);
    if (prev >= 0) {
      cell_forward_pixel<T, true>(gin, pre, a.c + prev * hid, act, c, h, hid, s.groups);
    } else {
      cell_forward_pixel<T, false>(gin, pre, nullptr, act, c, h, hid, s.groups);
    }
  }
}
PF_ISA_DISPATCH(cell_forward_chunk)

template <typename T>
PF_ALWAYS_INLINE void cell_backward_chunk_impl(const CellBackwardParams<T>& a, int64_t begin,
                                               int64_t end) {
  const Step& s = a.step;
  const int64_t hid = s.hidden;
  std::vector<T> dh(hid);
  const std::vector<T> zeros(hid, T(0));
  for (int64_t n = begin; n < end; ++n) {
    const Pixel p = pixel(s, n);
    if (n + kPrefetchAhead < end) {
      const int64_t ahead = pixel(s, n + kPrefetchAhead).offset;
      prefetch_strip(a.acts + ahead * 4 * hid, 4 * hid);
      prefetch_strip(a.grad_h + ahead * hid, hid);
      prefetch_strip(a.c + ahead * hid, hid);
    }
    std::copy(a.grad_h + p.offset * hid, a.grad_h + (p.offset + 1) * hid, dh.begin());
    for (int64_t tap = 0; tap < s.taps; ++tap) {
      const int64_t row = reader(s, p, tap);
      if (row < 0) continue;
      const T* src = a.dx + (row * s.taps + tap) * hid;
      for (int64_t ch = 0; ch < hid; ++ch) dh[ch] += src[ch];
    }
    const int64_t next = cell_reader(s, p);
    const T* dc_in = next >= 0 ? a.dc_in + next * hid : zeros.data();
    const T* act = a.acts + p.offset * 4 * hid;
    const T* c = a.c + p.offset * hid;
    T* dpre = a.dpre + n * 4 * hid;
    const int64_t prev = cell_source(s, p);
    if (prev >= 0) {
      cell_backward_pixel<T, true>(act, c, a.c + prev * hid, dh.data(), dc_in, a.dc_out + n * hid,
                                   dpre, hid, s.groups);
    } else {
      cell_backward_pixel<T, false>(act, c, nullptr, dh.data(), dc_in, a.dc_out + n * hid, dpre,
                                    hid, s.groups);
    }
    std::copy(dpre, dpre + 4 * hid, a.grad_gates + p.offset * 4 * hid);
  }
}
PF_ISA_DISPATCH(cell_backward_chunk)

// The Kernels table's backend (lstm_backend.h): the chunks over a step's pixels in parallel.
struct CpuBackend {
  static at::Tensor channels_last(const at::Tensor& t) { return channels_last_cpu(t); }

  template <typename T>
  static void gather(const GatherParams<T>& a) {
    at::parallel_for(0, scan_rows(a.step), grain(a.step.taps * a.step.hidden),
                     [&](int64_t begin, int64_t end) { gather_chunk(a, begin, end); });
  }

  template <typename T>
  static void cell_forward(const CellForwardParams<T>& a) {
    at::parallel_for(0, scan_rows(a.step), grain(a.step.hidden),
                     [&](int64_t begin, int64_t end) { cell_forward_chunk(a, begin, end); });
  }

  template <typename T>
  static void cell_backward(const CellBackwardParams<T>& a) {
    at::parallel_for(0, scan_rows(a.step), grain(a.step.hidden),
                     [&](int64_t begin, int64_t end) { cell_backward_chunk(a, begin, end); });
  }
};

const Kernels& cpu_kernels() {
  static const Kernels kernels = make_kernels<CpuBackend>();
  return kernels;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward_cpu(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  return row_forward(cpu_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  return row_backward(cpu_kernels(), grad_h, weight, h, c, acts, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward_cpu(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  return diagonal_forward(cpu_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  return diagonal_backward(cpu_kernels(), grad_h, weight, h, c, acts, groups);
}

}  // namespace
}  // namespace lstm
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("row_lstm", &pixelfast::lstm::row_forward_cpu);
  m.impl("row_lstm_backward", &pixelfast::lstm::row_backward_cpu);
  m.impl("diagonal_lstm", &pixelfast::lstm::diagonal_forward_cpu);
  m.impl("diagonal_lstm_backward", &pixelfast::lstm::diagonal_backward_cpu);
}
