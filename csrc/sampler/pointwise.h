// Per-element math of the sampling engine's pointwise ops and of its categorical draw, shared by
// the CPU and CUDA engines.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/activations.h"
#include "../common/host_device.h"
#include "../lstm/cell.h"

namespace pixelfast {
namespace sampler {

template <typename T>
PF_HD T relu(T x) {
  return x > T(0) ? x : T(0);
}

// ELU with alpha 1: x above zero, exp(x) - 1 (expm1, accurate near zero) below; NaN stays NaN.
PF_HD_INLINE float elu(float x) { return x > 0.0f ? x : expm1f(x); }
PF_HD_INLINE double elu(double x) { return x > 0.0 ? x : expm1(x); }

// The gated activation of the Gated PixelCNN: tanh(a) * sigmoid(b).
template <typename T>
PF_HD_INLINE T gate(T a, T b) {
  return tanh_(a) * sigmoid(b);
}

// The gated residual of PixelCNN++: a * sigmoid(b).
template <typename T>
PF_HD_INLINE T sigmoid_gate(T a, T b) {
  return a * sigmoid(b);
}

// The LSTM cell of channel t of group g (m channels per group): gates [i, f, o, g] at gates[0],
// gates[m], gates[2m], gates[3m]; returns the new cell state and writes the hidden state. The
// training-time scans' cell (lstm/cell.h); the activated gates it also returns are not needed here.
template <typename T>
PF_HD_INLINE T lstm_cell(const T* gates, int64_t m, T c_prev, T* h) {
  T i, f, o, g, c;
  lstm::cell_forward(gates[0], gates[m], gates[2 * m], gates[3 * m], c_prev, &i, &f, &o, &g, &c, h);
  return c;
}

// exp(x) for x <= 0 in double, branch-free so that the loop over the levels vectorises (libm's
// exp is a scalar call; it was the largest cost of the draw): Cephes' range reduction and rational
// approximation, within 2 ulp of exp. Below -708 the result is 0 (exp would be subnormal:
// nothing next to the largest level's 1: only a uniform of exactly 0 could tell); NaN stays NaN.
PF_HD_INLINE double exp_nonpositive(double x) {
  const double c = x > -708.0 ? x : -708.0;
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double t = c * 1.4426950408889634073599 + shifter;
  const double n = t - shifter;  // x / ln 2 rounded, in -1021 .. 0
  const double r = (c - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr +
                        9.99999999999999999910e-1);
  const double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr +
                    2.27265548208155028766e-1) *
                       rr +
                   2.00000000000000000009e0;
  const double e = 1.0 + 2.0 * p / (q - p);  // exp(r)
  const int64_t n_int = detail::bit_cast<int64_t>(t) - detail::bit_cast<int64_t>(shifter);
  const double scale = detail::bit_cast<double>((n_int + 1023) << 52);  // 2^n
  const double result = x > -708.0 ? e * scale : 0.0;
  return x != x ? x : result;
}

// Level for a uniform draw u in [0, 1) from softmax(logits / temperature): the smallest level whose
// cumulative probability exceeds u (inverse CDF); -1 for non-finite logits. Accumulates in double
// so the result does not depend on float rounding of a long sum; pixelfast/sampling/categorical.py
// is its Python twin. `scratch` (levels doubles) keeps the exponentials: computed in one loop that
// vectorises, then summed in order.
template <typename T>
PF_HD_INLINE int64_t categorical(const T* logits, int64_t levels, int64_t stride,
                                 double temperature, double u, double* scratch) {
  // The largest logit, from 8 running maxima (a chain of dependent compares otherwise). A NaN
  // logit is skipped here, and gives NaN below.
  double tops[8];
  for (int k = 0; k < 8; ++k) tops[k] = double(logits[0]);
  int64_t l = 0;
  for (; l + 8 <= levels; l += 8) {
    for (int k = 0; k < 8; ++k) {
      const double x = double(logits[(l + k) * stride]);
      tops[k] = x > tops[k] ? x : tops[k];
    }
  }
  for (; l < levels; ++l) {
    const double x = double(logits[l * stride]);
    tops[0] = x > tops[0] ? x : tops[0];
  }
  double top = tops[0];
  for (int k = 1; k < 8; ++k) top = tops[k] > top ? tops[k] : top;
  for (l = 0; l < levels; ++l)
    scratch[l] = exp_nonpositive((double(logits[l * stride]) - top) / temperature);
  double total = 0.0;
  for (l = 0; l < levels; ++l) total += scratch[l];
  if (!(total < INFINITY) || !(top == top)) return -1;  // NaN or inf logits: the caller reports it
  const double target = u * total;
  double cumulative = 0.0;
  for (l = 0; l < levels; ++l) {
    cumulative += scratch[l];
    if (cumulative > target) return l;
  }
  return levels - 1;  // u * total rounded up to total
}

// The network's input value for a level: level 0 -> -1, level (levels - 1) -> +1.
template <typename T>
PF_HD T scale_level(int64_t level, int64_t levels) {
  return T(double(level) * (2.0 / double(levels - 1)) - 1.0);
}

}  // namespace sampler
}  // namespace pixelfast
