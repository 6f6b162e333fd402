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

// Level for a uniform draw u in [0, 1) from softmax(logits / temperature): the smallest level whose
// cumulative probability exceeds u (inverse CDF); -1 for non-finite logits. Accumulates in double
// so the result does not depend on float rounding of a long sum; pixelfast/sampling/categorical.py
// is its Python twin. `scratch` (levels doubles, or nullptr) keeps the exponentials of the first
// pass for the second: the same values in the same order, so the same level either way.
template <typename T>
PF_HD int64_t categorical(const T* logits, int64_t levels, int64_t stride, double temperature,
                          double u, double* scratch = nullptr) {
  double top = double(logits[0]);
  for (int64_t l = 1; l < levels; ++l) top = fmax(top, double(logits[l * stride]));
  double total = 0.0;
  for (int64_t l = 0; l < levels; ++l) {
    const double e = exp((double(logits[l * stride]) - top) / temperature);
    if (scratch != nullptr) scratch[l] = e;
    total += e;
  }
  if (!(total < INFINITY) || !(top == top)) return -1;  // NaN or inf logits: the caller reports it
  const double target = u * total;
  double cumulative = 0.0;
  for (int64_t l = 0; l < levels; ++l) {
    cumulative +=
        scratch != nullptr ? scratch[l] : exp((double(logits[l * stride]) - top) / temperature);
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
