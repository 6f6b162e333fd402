// LSTM scans: argument checks, the device-generic drivers (lstm_op.h) and the CPU kernels.
//
// Row LSTM (one step per image row i, top to bottom):
//   a(i, j) = gates(i, j) + bias + sum_s weight[:, :, s] . h(i - 1, j + s - k/2)
//   c(i, j) = f * c(i - 1, j) + i * g,   h(i, j) = o * tanh(c(i, j))
// Diagonal LSTM (one step per skewed column t = i + j, left to right; the skewed map's 2x1
// state-to-state column conv reads rows i - 1 and i of column t - 1, i.e. pixels (i - 1, j) and
// (i, j - 1)):
//   a(i, j) = gates(i, j) + bias + weight[:, :, 0] . h(i - 1, j) + weight[:, :, 1] . h(i, j - 1)
//   c(i, j) = f * c(i, j - 1) + i * g,   h(i, j) = o * tanh(c(i, j))
// Everything outside the image (h and c of row -1, column -1) is zero. Skewing is only the index
// map pixel (i, j) <-> step t = i + j; nothing skewed is ever materialised.
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
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include <utility>
#include <vector>

#include "../common/cpu_isa.h"
#include "cell.h"
#include "lstm_op.h"

namespace pixelfast {
namespace lstm {
namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

struct Shape {
  int64_t batch, hidden, height, width, taps;
};

void check_float_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                      const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but ", ref_name, " has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device());
}

// `diagonal`: the weight must be [4h, h, 2]; else [4h, h, k] with k odd.
Shape check_forward(const char* op, const at::Tensor& gates, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, int64_t groups, bool diagonal,
                    const char* gates_name = "gates") {
  TORCH_CHECK(gates.dim() == 4, op, ": ", gates_name, " must be 4-D [B, 4h, H, W], got ",
              gates.dim(), "-D");
  TORCH_CHECK(gates.scalar_type() == at::kFloat || gates.scalar_type() == at::kDouble, op, ": ",
              gates_name, " must be float32 or float64, got ", gates.scalar_type());
  TORCH_CHECK(groups == 1 || groups == 3, op, ": color_groups must be 1 or 3, got ", groups);
  const int64_t channels = gates.size(1);
  TORCH_CHECK(channels > 0 && channels % (4 * groups) == 0, op, ": ", gates_name,
              " must have 4h channels with h divisible by color_groups=", groups, ", got ",
              channels, " channels");
  TORCH_CHECK(gates.size(2) >= 1 && gates.size(3) >= 1, op, ": ", gates_name,
              " must have H, W >= 1, got ", gates.sizes());
  const int64_t hidden = channels / 4;
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == channels && weight.size(1) == hidden, op,
              ": weight must be [4h, h, ", diagonal ? "2" : "k", "] = [", channels, ", ", hidden,
              ", ", diagonal ? "2" : "k", "], got ", weight.sizes());
  if (diagonal) {
    TORCH_CHECK(weight.size(2) == 2, op, ": weight must have 2 taps (above, left), got ",
                weight.size(2));
  } else {
    TORCH_CHECK(weight.size(2) % 2 == 1, op, ": kernel size must be odd, got ", weight.size(2));
  }
  check_float_like(op, "weight", weight, gates, gates_name);
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == channels, op, ": bias must have shape [",
                channels, "], got ", bias->sizes());
    check_float_like(op, "bias", *bias, gates, gates_name);
  }
  return Shape{gates.size(0), hidden, gates.size(2), gates.size(3), weight.size(2)};
}

Shape check_backward(const char* op, const at::Tensor& grad_h, const at::Tensor& weight,
                     const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts,
                     int64_t groups, bool diagonal) {
  const Shape s = check_forward(op, acts, weight, std::nullopt, groups, diagonal, "acts");
  const std::vector<int64_t> state{s.batch, s.hidden, s.height, s.width};
  const auto check_state = [&](const char* name, const at::Tensor& t) {
    TORCH_CHECK(t.sizes() == at::IntArrayRef(state), op, ": ", name, " must have shape ",
                at::IntArrayRef(state), ", got ", t.sizes());
    check_float_like(op, name, t, acts, "acts");
  };
  check_state("grad_h", grad_h);
  check_state("h", h);
  check_state("c", c);
  return s;
}


// The GEMM's right operand: Wm[s * h + c, q] = weight[q, c, s], [taps * h, 4h].
at::Tensor weight_matrix(const at::Tensor& weight) {
  return weight.permute({2, 1, 0}).reshape({weight.size(2) * weight.size(1), weight.size(0)}).contiguous();
}

at::Tensor weight_from_matrix(const at::Tensor& wm, const Shape& s) {
  return wm.view({s.taps, s.hidden, 4 * s.hidden}).permute({2, 1, 0}).contiguous();
}

// The first `n` elements of a flat buffer as a contiguous [rows, n / rows] matrix.
at::Tensor matrix(const at::Tensor& buffer, int64_t rows, int64_t cols) {
  return buffer.narrow(0, 0, rows * cols).view({rows, cols});
}

}  // namespace

// ------------------------------------------------------------------------------ drivers

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward(const Kernels& kernels,
                                                           const at::Tensor& gates_in,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           int64_t groups) {
  const Shape s = check_forward("row_lstm", gates_in, weight, bias, groups, false);
  const at::Tensor gates = kernels.channels_last(gates_in);
  const auto opts = gates.options();
  at::Tensor h = at::empty({s.batch, s.hidden, s.height, s.width}, opts.memory_format(kChannelsLast));
  at::Tensor c = at::empty_like(h, kChannelsLast);
  at::Tensor acts = at::empty_like(gates, kChannelsLast);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::zeros({4 * s.hidden}, opts);
  const at::Tensor wm = weight_matrix(weight);
  const int64_t rows = s.batch * s.width;
  at::Tensor x = at::empty({rows, s.taps * s.hidden}, opts);
  at::Tensor pre = at::empty({rows, 4 * s.hidden}, opts);
  for (int64_t i = 0; i < s.height; ++i) {
    kernels.row_gather(h, x, b, pre, i, s.taps);  // pre = bias, then += X . Wm
    if (i > 0) at::addmm_out(pre, pre, x, wm);
    kernels.row_cell_forward(gates, pre, h, c, acts, i, groups);
  }
  return {h, c, acts};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward(
    const Kernels& kernels, const at::Tensor& grad_h_in, const at::Tensor& weight,
    const at::Tensor& h_in, const at::Tensor& c_in, const at::Tensor& acts_in, int64_t groups) {
  const Shape s =
      check_backward("row_lstm_backward", grad_h_in, weight, h_in, c_in, acts_in, groups, false);
  const at::Tensor grad_h = kernels.channels_last(grad_h_in);
  const at::Tensor h = kernels.channels_last(h_in);
  const at::Tensor c = kernels.channels_last(c_in);
  const at::Tensor acts = kernels.channels_last(acts_in);
  const auto opts = acts.options();
  at::Tensor grad_gates = at::empty_like(acts, kChannelsLast);
  const at::Tensor wm = weight_matrix(weight);
  at::Tensor grad_wm = at::zeros_like(wm);
  const int64_t rows = s.batch * s.width;
  at::Tensor x = at::empty({rows, s.taps * s.hidden}, opts);
  at::Tensor dx = at::empty({rows, s.taps * s.hidden}, opts);
  at::Tensor dpre = at::empty({rows, 4 * s.hidden}, opts);
  // dc * f flows from row i + 1 to row i: read one buffer, write the other.
  at::Tensor dc_next = at::empty({rows, s.hidden}, opts);
  at::Tensor dc_this = at::empty({rows, s.hidden}, opts);
  for (int64_t i = s.height - 1; i >= 0; --i) {
    kernels.row_cell_backward(grad_h, dx, i + 1 < s.height, acts, c, dc_next, dc_this, dpre,
                              grad_gates, i, s.taps, groups);
    if (i > 0) {
      at::mm_out(dx, dpre, wm.t());  // gradient w.r.t. X of row i, i.e. h of row i - 1
      kernels.row_gather(h, x, at::Tensor(), at::Tensor(), i, s.taps);
      at::addmm_out(grad_wm, grad_wm, x.t(), dpre);
    }
    std::swap(dc_next, dc_this);
  }
  return {grad_gates, weight_from_matrix(grad_wm, s), grad_gates.sum({0, 2, 3})};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward(
    const Kernels& kernels, const at::Tensor& gates_in, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t groups) {
  const Shape s = check_forward("diagonal_lstm", gates_in, weight, bias, groups, true);
  const at::Tensor gates = kernels.channels_last(gates_in);
  const auto opts = gates.options();
  at::Tensor h = at::empty({s.batch, s.hidden, s.height, s.width}, opts.memory_format(kChannelsLast));
  at::Tensor c = at::empty_like(h, kChannelsLast);
  at::Tensor acts = at::empty_like(gates, kChannelsLast);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::zeros({4 * s.hidden}, opts);
  const at::Tensor wm = weight_matrix(weight);
  const int64_t max_rows = s.batch * std::min(s.height, s.width);
  at::Tensor x = at::empty({max_rows * 2 * s.hidden}, opts);
  at::Tensor pre = at::empty({max_rows * 4 * s.hidden}, opts);
  for (int64_t t = 0; t < diag_steps(s.height, s.width); ++t) {
    const int64_t rows = diag_len(t, s.height, s.width) * s.batch;
    kernels.diag_gather(h, x, b, pre, t);  // pre = bias, then += X . Wm
    if (t > 0) {
      at::Tensor out = matrix(pre, rows, 4 * s.hidden);
      at::addmm_out(out, out, matrix(x, rows, 2 * s.hidden), wm);
    }
    kernels.diag_cell_forward(gates, pre, h, c, acts, t, groups);
  }
  return {h, c, acts};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward(
    const Kernels& kernels, const at::Tensor& grad_h_in, const at::Tensor& weight,
    const at::Tensor& h_in, const at::Tensor& c_in, const at::Tensor& acts_in, int64_t groups) {
  const Shape s = check_backward("diagonal_lstm_backward", grad_h_in, weight, h_in, c_in, acts_in,
                                 groups, true);
  const at::Tensor grad_h = kernels.channels_last(grad_h_in);
  const at::Tensor h = kernels.channels_last(h_in);
  const at::Tensor c = kernels.channels_last(c_in);
  const at::Tensor acts = kernels.channels_last(acts_in);
  const auto opts = acts.options();
  at::Tensor grad_gates = at::empty_like(acts, kChannelsLast);
  const at::Tensor wm = weight_matrix(weight);
  at::Tensor grad_wm = at::zeros_like(wm);
  const int64_t max_rows = s.batch * std::min(s.height, s.width);
  at::Tensor x = at::empty({max_rows * 2 * s.hidden}, opts);
  at::Tensor dx = at::empty({max_rows * 2 * s.hidden}, opts);
  at::Tensor dpre = at::empty({max_rows * 4 * s.hidden}, opts);
  // dc * f flows from column t + 1 to column t, whose rows are numbered differently: two buffers.
  at::Tensor dc_next = at::empty({max_rows, s.hidden}, opts);
  at::Tensor dc_this = at::empty({max_rows, s.hidden}, opts);
  const int64_t steps = diag_steps(s.height, s.width);
  for (int64_t t = steps - 1; t >= 0; --t) {
    kernels.diag_cell_backward(grad_h, dx, t + 1 < steps, acts, c, dc_next, dc_this, dpre,
                               grad_gates, t, groups);
    if (t > 0) {
      const int64_t rows = diag_len(t, s.height, s.width) * s.batch;
      const at::Tensor dpre_rows = matrix(dpre, rows, 4 * s.hidden);
      at::Tensor dx_rows = matrix(dx, rows, 2 * s.hidden);
      at::mm_out(dx_rows, dpre_rows, wm.t());
      kernels.diag_gather(h, x, at::Tensor(), at::Tensor(), t);
      at::addmm_out(grad_wm, grad_wm, matrix(x, rows, 2 * s.hidden).t(), dpre_rows);
    }
    std::swap(dc_next, dc_this);
  }
  return {grad_gates, weight_from_matrix(grad_wm, s), grad_gates.sum({0, 2, 3})};
}

// ---------------------------------------------------------------------------- CPU kernels
//
// Each kernel runs at::parallel_for over the independent pixels of one step; a range of pixels is
// processed by a "chunk" function compiled twice, for the baseline ISA and for AVX2 + FMA (picked
// at run time): the cell loops are dominated by exp and division and gain 2x from wider vectors.

namespace {

// Consecutive pixels of an anti-diagonal lie a row (or an image) apart in memory, beyond the
// hardware prefetcher: fetch a few ahead.
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
PF_ALWAYS_INLINE void cell_forward_strip(
    int64_t n, const T* __restrict__ g_i, const T* __restrict__ g_f, const T* __restrict__ g_o,
    const T* __restrict__ g_g, const T* __restrict__ p_i, const T* __restrict__ p_f,
    const T* __restrict__ p_o, const T* __restrict__ p_g, const T* __restrict__ c_prev,
    T* __restrict__ o_i, T* __restrict__ o_f, T* __restrict__ o_o, T* __restrict__ o_g,
    T* __restrict__ c, T* __restrict__ h) {
  for (int64_t j = 0; j < n; ++j) {
    cell_forward(g_i[j] + p_i[j], g_f[j] + p_f[j], g_o[j] + p_o[j], g_g[j] + p_g[j],
                 kHasCPrev ? c_prev[j] : T(0), &o_i[j], &o_f[j], &o_o[j], &o_g[j], &c[j], &h[j]);
  }
}

template <typename T, bool kHasCPrev>
PF_ALWAYS_INLINE void cell_backward_strip(
    int64_t n, const T* __restrict__ a_i, const T* __restrict__ a_f, const T* __restrict__ a_o,
    const T* __restrict__ a_g, const T* __restrict__ c, const T* __restrict__ c_prev,
    const T* __restrict__ dh, const T* __restrict__ dc_in, T* __restrict__ dc_out,
    T* __restrict__ d_i, T* __restrict__ d_f, T* __restrict__ d_o, T* __restrict__ d_g) {
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
    cell_forward_strip<T, kHasCPrev>(m, gin + gb, gin + gb + m, gin + gb + 2 * m,
                                     gin + gb + 3 * m, pre + gb, pre + gb + m, pre + gb + 2 * m,
                                     pre + gb + 3 * m, cp + hb, act + gb, act + gb + m,
                                     act + gb + 2 * m, act + gb + 3 * m, c + hb, h + hb);
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
    cell_backward_strip<T, kHasCPrev>(m, act + gb, act + gb + m, act + gb + 2 * m,
                                      act + gb + 3 * m, c + hb, cp + hb, dh + hb, dc_in + hb,
                                      dc_out + hb, dpre + gb, dpre + gb + m, dpre + gb + 2 * m,
                                      dpre + gb + 3 * m);
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
                                       dst.mutable_data_ptr<scalar_t>(), channels, pixels,
                                       channel_tiles, pixel_tiles};
    at::parallel_for(0, batch * channel_tiles * pixel_tiles, 16,
                     [&](int64_t begin, int64_t end) { transpose_tiles(args, begin, end); });
  });
  return dst;
}

// ---- One step's operands for the chunk functions of both scans; each kernel sets what it uses:
//   gather:   src = h,      out = X,      bias, pre_out (pre set to the bias; nullptr: leave it)
//   forward:  src = gates,  out = h,      pre, c, acts
//   backward: src = grad_h, out = dc_out, dx, dc_in, c, acts, dpre, grad_gates, has_next
template <typename T>
struct StepArgs {
  const T* src = nullptr;
  const T* bias = nullptr;
  const T* pre = nullptr;
  const T* dx = nullptr;     // the next step's dX
  const T* dc_in = nullptr;  // the next step's dc * f
  T* out = nullptr;
  T* pre_out = nullptr;
  T* c = nullptr;  // c and acts are only read by the backward
  T* acts = nullptr;
  T* dpre = nullptr;
  T* grad_gates = nullptr;
  int64_t batch = 0, hidden = 0, height = 0, width = 0;
  int64_t step = 0;  // the image row i (Row LSTM) or the skewed column t (Diagonal LSTM)
  int64_t k = 1;     // Row LSTM taps
  int64_t groups = 1;
  bool has_next = false;
};

// The shape of `image` ([B, hidden, H, W]) and the step; the pointers are left to the caller.
template <typename T>
StepArgs<T> step_args(const at::Tensor& image, int64_t step) {
  StepArgs<T> a;
  a.batch = image.size(0);
  a.hidden = image.size(1);
  a.height = image.size(2);
  a.width = image.size(3);
  a.step = step;
  return a;
}

template <typename T>
StepArgs<T> gather_args(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                        const at::Tensor& pre, int64_t step) {
  auto a = step_args<T>(h, step);
  a.src = h.const_data_ptr<T>();
  a.out = x.mutable_data_ptr<T>();
  if (pre.defined()) {
    a.bias = bias.const_data_ptr<T>();
    a.pre_out = pre.mutable_data_ptr<T>();
  }
  return a;
}

template <typename T>
StepArgs<T> forward_args(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                         const at::Tensor& c, const at::Tensor& acts, int64_t step, int64_t groups) {
  auto a = step_args<T>(h, step);
  a.src = gates.const_data_ptr<T>();
  a.pre = pre.const_data_ptr<T>();
  a.out = h.mutable_data_ptr<T>();
  a.c = c.mutable_data_ptr<T>();
  a.acts = acts.mutable_data_ptr<T>();
  a.groups = groups;
  return a;
}

template <typename T>
StepArgs<T> backward_args(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                          const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                          const at::Tensor& dc_out, const at::Tensor& dpre,
                          const at::Tensor& grad_gates, int64_t step, int64_t groups) {
  auto a = step_args<T>(c, step);
  a.src = grad_h.const_data_ptr<T>();
  a.dx = dx.const_data_ptr<T>();
  a.dc_in = dc_in.const_data_ptr<T>();
  a.out = dc_out.mutable_data_ptr<T>();
  a.c = const_cast<T*>(c.const_data_ptr<T>());
  a.acts = const_cast<T*>(acts.const_data_ptr<T>());
  a.dpre = dpre.mutable_data_ptr<T>();
  a.grad_gates = grad_gates.mutable_data_ptr<T>();
  a.groups = groups;
  a.has_next = has_next;
  return a;
}

// ---- Row LSTM (scan buffers [B * W, C], row b * W + j).

template <typename Args>
PF_ALWAYS_INLINE void row_gather_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  const int64_t hid = a.hidden, p = a.k / 2;
  for (int64_t n = begin; n < end; ++n) {
    const int64_t b = n / a.width, j = n % a.width;
    T* dst = a.out + n * a.k * hid;
    const T* above = a.step > 0 ? a.src + ((b * a.height + a.step - 1) * a.width) * hid : nullptr;
    for (int64_t s = 0; s < a.k; ++s) {
      const int64_t jj = j + s - p;
      if (above != nullptr && jj >= 0 && jj < a.width) {
        std::copy(above + jj * hid, above + (jj + 1) * hid, dst + s * hid);
      } else {
        std::fill(dst + s * hid, dst + (s + 1) * hid, T(0));
      }
    }
    if (a.pre_out != nullptr) std::copy(a.bias, a.bias + 4 * hid, a.pre_out + n * 4 * hid);
  }
}
PF_ISA_DISPATCH(row_gather_chunk)

template <typename Args>
PF_ALWAYS_INLINE void row_forward_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  const int64_t hid = a.hidden;
  for (int64_t n = begin; n < end; ++n) {
    const int64_t pix = (n / a.width * a.height + a.step) * a.width + n % a.width;
    const T* gin = a.src + pix * 4 * hid;
    T* act = a.acts + pix * 4 * hid;
    T* c = a.c + pix * hid;
    T* h = a.out + pix * hid;
    if (a.step > 0) {
      cell_forward_pixel<T, true>(gin, a.pre + n * 4 * hid, c - a.width * hid, act, c, h, hid,
                                  a.groups);
    } else {
      cell_forward_pixel<T, false>(gin, a.pre + n * 4 * hid, nullptr, act, c, h, hid, a.groups);
    }
  }
}
PF_ISA_DISPATCH(row_forward_chunk)

template <typename Args>
PF_ALWAYS_INLINE void row_backward_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  const int64_t hid = a.hidden, p = a.k / 2;
  std::vector<T> dh(hid);
  const std::vector<T> zeros(hid, T(0));
  for (int64_t n = begin; n < end; ++n) {
    const int64_t b = n / a.width, j = n % a.width;
    const int64_t pix = (b * a.height + a.step) * a.width + j;
    std::copy(a.src + pix * hid, a.src + (pix + 1) * hid, dh.begin());
    if (a.has_next) {
      // Row i + 1's pixel jn read h(i, jn + s - p) through tap s: h(i, j) reaches jn = j - s + p.
      for (int64_t s = 0; s < a.k; ++s) {
        const int64_t jn = j - s + p;
        if (jn < 0 || jn >= a.width) continue;
        const T* src = a.dx + (b * a.width + jn) * a.k * hid + s * hid;
        for (int64_t ch = 0; ch < hid; ++ch) dh[ch] += src[ch];
      }
    }
    const T* dc_in = a.has_next ? a.dc_in + n * hid : zeros.data();  // the cell path runs down column j
    const T* act = a.acts + pix * 4 * hid;
    const T* c = a.c + pix * hid;
    T* dpre = a.dpre + n * 4 * hid;
    if (a.step > 0) {
      cell_backward_pixel<T, true>(act, c, c - a.width * hid, dh.data(), dc_in, a.out + n * hid,
                                   dpre, hid, a.groups);
    } else {
      cell_backward_pixel<T, false>(act, c, nullptr, dh.data(), dc_in, a.out + n * hid, dpre, hid,
                                    a.groups);
    }
    std::copy(dpre, dpre + 4 * hid, a.grad_gates + pix * 4 * hid);
  }
}
PF_ISA_DISPATCH(row_backward_chunk)

void row_gather_cpu(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                    const at::Tensor& pre, int64_t i, int64_t k) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "row_lstm_gather", [&] {
    auto a = gather_args<scalar_t>(h, x, bias, pre, i);
    a.k = k;
    at::parallel_for(0, a.batch * a.width, grain(k * a.hidden),
                     [&](int64_t begin, int64_t end) { row_gather_chunk(a, begin, end); });
  });
}

void row_cell_forward_cpu(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                          const at::Tensor& c, const at::Tensor& acts, int64_t i, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "row_lstm_cell", [&] {
    const auto a = forward_args<scalar_t>(gates, pre, h, c, acts, i, groups);
    at::parallel_for(0, a.batch * a.width, grain(a.hidden),
                     [&](int64_t begin, int64_t end) { row_forward_chunk(a, begin, end); });
  });
}

void row_cell_backward_cpu(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                           const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                           const at::Tensor& dc_out, const at::Tensor& dpre,
                           const at::Tensor& grad_gates, int64_t i, int64_t k, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "row_lstm_cell_backward", [&] {
    auto a = backward_args<scalar_t>(grad_h, dx, has_next, acts, c, dc_in, dc_out, dpre,
                                     grad_gates, i, groups);
    a.k = k;
    at::parallel_for(0, a.batch * a.width, grain(a.hidden),
                     [&](int64_t begin, int64_t end) { row_backward_chunk(a, begin, end); });
  });
}

// ---- Diagonal LSTM (channels-last [B, H, W, C] tensors; scan buffers [rows, C] with row
// (i - first_row(t)) * B + b for pixel (i, t - i)).

template <typename Args>
PF_ALWAYS_INLINE void diag_gather_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  const int64_t i0 = first_row(a.step, a.width), hid = a.hidden;
  for (int64_t n = begin; n < end; ++n) {
    const int64_t i = i0 + n / a.batch, b = n % a.batch, j = a.step - i;
    const int64_t pix = (b * a.height + i) * a.width + j;
    T* dst = a.out + n * 2 * hid;
    if (i > 0) {
      std::copy(a.src + (pix - a.width) * hid, a.src + (pix - a.width + 1) * hid, dst);
    } else {
      std::fill(dst, dst + hid, T(0));
    }
    if (j > 0) {
      std::copy(a.src + (pix - 1) * hid, a.src + pix * hid, dst + hid);
    } else {
      std::fill(dst + hid, dst + 2 * hid, T(0));
    }
    if (a.pre_out != nullptr) std::copy(a.bias, a.bias + 4 * hid, a.pre_out + n * 4 * hid);
  }
}
PF_ISA_DISPATCH(diag_gather_chunk)

template <typename Args>
PF_ALWAYS_INLINE void diag_forward_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  const int64_t i0 = first_row(a.step, a.width), hid = a.hidden;
  for (int64_t n = begin; n < end; ++n) {
    const int64_t i = i0 + n / a.batch, b = n % a.batch, j = a.step - i;
    const int64_t pix = (b * a.height + i) * a.width + j;
    if (n + kPrefetchAhead < end) {
      const int64_t na = n + kPrefetchAhead, ia = i0 + na / a.batch;
      const int64_t ahead = (na % a.batch * a.height + ia) * a.width + a.step - ia;
      prefetch_strip(a.src + ahead * 4 * hid, 4 * hid);
    }
    const T* gin = a.src + pix * 4 * hid;
    const T* pre = a.pre + n * 4 * hid;
    T* act = a.acts + pix * 4 * hid;
    T* c = a.c + pix * hid;
    T* h = a.out + pix * hid;
    if (j > 0) {
      cell_forward_pixel<T, true>(gin, pre, c - hid, act, c, h, hid, a.groups);
    } else {
      cell_forward_pixel<T, false>(gin, pre, nullptr, act, c, h, hid, a.groups);
    }
  }
}
PF_ISA_DISPATCH(diag_forward_chunk)

template <typename Args>
PF_ALWAYS_INLINE void diag_backward_chunk_impl(const Args& a, int64_t begin, int64_t end) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  const int64_t i0 = first_row(a.step, a.width), i0_next = first_row(a.step + 1, a.width);
  const int64_t hid = a.hidden;
  std::vector<T> dh(hid);
  const std::vector<T> zeros(hid, T(0));
  for (int64_t n = begin; n < end; ++n) {
    const int64_t i = i0 + n / a.batch, b = n % a.batch, j = a.step - i;
    const int64_t pix = (b * a.height + i) * a.width + j;
    if (n + kPrefetchAhead < end) {
      const int64_t na = n + kPrefetchAhead, ia = i0 + na / a.batch;
      const int64_t ahead = (na % a.batch * a.height + ia) * a.width + a.step - ia;
      prefetch_strip(a.acts + ahead * 4 * hid, 4 * hid);
      prefetch_strip(a.src + ahead * hid, hid);
      prefetch_strip(a.c + ahead * hid, hid);
    }
    std::copy(a.src + pix * hid, a.src + (pix + 1) * hid, dh.begin());
    // Column t + 1 read h(i, j) as "above" of (i + 1, j) and as "left" of (i, j + 1).
    if (a.has_next && i + 1 < a.height) {
      const T* src = a.dx + ((i + 1 - i0_next) * a.batch + b) * 2 * hid;
      for (int64_t ch = 0; ch < hid; ++ch) dh[ch] += src[ch];
    }
    const T* dc_in = zeros.data();
    if (a.has_next && j + 1 < a.width) {
      const int64_t row = (i - i0_next) * a.batch + b;
      const T* src = a.dx + row * 2 * hid + hid;
      for (int64_t ch = 0; ch < hid; ++ch) dh[ch] += src[ch];
      dc_in = a.dc_in + row * hid;  // the cell path runs along the image row
    }
    const T* act = a.acts + pix * 4 * hid;
    const T* c = a.c + pix * hid;
    T* dpre = a.dpre + n * 4 * hid;
    if (j > 0) {
      cell_backward_pixel<T, true>(act, c, c - hid, dh.data(), dc_in, a.out + n * hid, dpre, hid,
                                   a.groups);
    } else {
      cell_backward_pixel<T, false>(act, c, nullptr, dh.data(), dc_in, a.out + n * hid, dpre, hid,
                                    a.groups);
    }
    std::copy(dpre, dpre + 4 * hid, a.grad_gates + pix * 4 * hid);
  }
}
PF_ISA_DISPATCH(diag_backward_chunk)

void diag_gather_cpu(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                     const at::Tensor& pre, int64_t t) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diagonal_lstm_gather", [&] {
    const auto a = gather_args<scalar_t>(h, x, bias, pre, t);
    at::parallel_for(0, diag_len(t, a.height, a.width) * a.batch, grain(2 * a.hidden),
                     [&](int64_t begin, int64_t end) { diag_gather_chunk(a, begin, end); });
  });
}

void diag_cell_forward_cpu(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                           const at::Tensor& c, const at::Tensor& acts, int64_t t, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diagonal_lstm_cell", [&] {
    const auto a = forward_args<scalar_t>(gates, pre, h, c, acts, t, groups);
    at::parallel_for(0, diag_len(t, a.height, a.width) * a.batch, grain(a.hidden),
                     [&](int64_t begin, int64_t end) { diag_forward_chunk(a, begin, end); });
  });
}

void diag_cell_backward_cpu(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                            const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                            const at::Tensor& dc_out, const at::Tensor& dpre,
                            const at::Tensor& grad_gates, int64_t t, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "diagonal_lstm_cell_backward", [&] {
    const auto a = backward_args<scalar_t>(grad_h, dx, has_next, acts, c, dc_in, dc_out, dpre,
                                           grad_gates, t, groups);
    at::parallel_for(0, diag_len(t, a.height, a.width) * a.batch, grain(a.hidden),
                     [&](int64_t begin, int64_t end) { diag_backward_chunk(a, begin, end); });
  });
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

const Kernels& cpu_kernels() {
  static const Kernels kernels{channels_last_cpu,     row_gather_cpu,        row_cell_forward_cpu,
                               row_cell_backward_cpu, diag_gather_cpu,       diag_cell_forward_cpu,
                               diag_cell_backward_cpu};
  return kernels;
}

}  // namespace lstm
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("row_lstm", &pixelfast::lstm::row_forward_cpu);
  m.impl("row_lstm_backward", &pixelfast::lstm::row_backward_cpu);
  m.impl("diagonal_lstm", &pixelfast::lstm::diagonal_forward_cpu);
  m.impl("diagonal_lstm_backward", &pixelfast::lstm::diagonal_backward_cpu);
}
