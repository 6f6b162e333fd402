// LSTM gate math and scan geometry, shared by the CPU and CUDA scan kernels (no torch in here).
//
// Gate layout. A layer with `hidden` state channels and `groups` colour groups (1, or 3 for R, G,
// B) has 4 * hidden gate channels in `groups` contiguous blocks of 4m channels (m = hidden /
// groups), each block being [i, f, o, g] x m:
//
//   gate channel of (gate q, hidden channel c) = (c / m) * 4m + q * m + c % m,   q: 0=i 1=f 2=o 3=g
//
// so every hidden channel's four gates come from its own colour group, and a masked convolution
// whose output colour groups are contiguous channel blocks (MaskedConv2d, HorizontalConv2d)
// produces the gates directly in this order. With groups = 1 it is the usual [i, f, o, g].
//
// Cell (pre-activations a_q = input-to-state + state-to-state + bias):
//   i = sigmoid(a_i), f = sigmoid(a_f), o = sigmoid(a_o), g = tanh(a_g)
//   c = f * c_prev + i * g,   h = o * tanh(c)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../common/host_device.h"

namespace pixelfast {
namespace lstm {

enum Gate : int64_t { kI = 0, kF = 1, kO = 2, kG = 3 };

PF_HD int64_t gate_index(int64_t q, int64_t c, int64_t hidden, int64_t groups) {
  const int64_t m = hidden / groups;
  return (c / m) * 4 * m + q * m + c % m;
}

// sigmoid and tanh. float32 on the host: branch-free versions built on exp(-|x|) (a Cephes-style
// range reduction and degree-6 polynomial; |error| < 1e-7 against the exact functions), so that
// gcc vectorises the cell loops (libm's expf/tanhf are scalar calls) with no clamping compares:
// |x| is capped at 87 by an integer min on its bits. NaN inputs give NaN. On the device the CUDA
// math library. float64, everywhere: the exact functions (the reference precision).
#if !defined(__CUDA_ARCH__)
namespace detail {

PF_HD_INLINE float bits_to_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

PF_HD_INLINE int32_t float_to_bits(float f) {
  int32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// exp(-|x|), |x| capped at 87 (e^-87 ~ 1.6e-38, still a normal float).
PF_HD_INLINE float exp_minus_abs(float x) {
  int32_t abs_bits = float_to_bits(x) & 0x7fffffff;
  const int32_t cap = 0x42ae0000;  // 87.0f; non-negative floats order like their bits
  abs_bits = abs_bits < cap ? abs_bits : cap;
  const float y = -bits_to_float(abs_bits);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = y * 1.44269504088896341f + shifter;
  const float n = t - shifter;  // y / ln 2 rounded, in -126 .. 0
  const int32_t n_int = float_to_bits(t) - float_to_bits(shifter);
  const float r = (y - n * 0.693359375f) - n * -2.12194440e-4f;  // y - n ln 2, |r| <= ln2 / 2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;  // exp(r)
  return p * bits_to_float((n_int + 127) << 23);
}

}  // namespace detail
#endif

PF_HD_INLINE float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return 1.0f / (1.0f + expf(-x));
#else
  const float e = detail::exp_minus_abs(x);
  const float r = 1.0f / (1.0f + e);
  const float s = x >= 0.0f ? r : e * r;  // 1 / (1 + e^-x), or e^x / (1 + e^x) for x < 0
  return x != x ? x : s;
#endif
}

PF_HD_INLINE float tanh_(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  const float e = detail::exp_minus_abs(2.0f * x);
  const float t = (1.0f - e) / (1.0f + e);  // tanh |x|
  const float signed_t = detail::bits_to_float(detail::float_to_bits(t) |
                                               (detail::float_to_bits(x) & INT32_MIN));
  return x != x ? x : signed_t;
#endif
}

PF_HD_INLINE double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
PF_HD_INLINE double tanh_(double x) { return tanh(x); }

// One cell step. Pre-activations in, activated gates and the new state out.
template <typename T>
PF_HD_INLINE void cell_forward(T a_i, T a_f, T a_o, T a_g, T c_prev, T* i, T* f, T* o, T* g, T* c, T* h) {
  const T vi = sigmoid(a_i);
  const T vf = sigmoid(a_f);
  const T vo = sigmoid(a_o);
  const T vg = tanh_(a_g);
  const T vc = vf * c_prev + vi * vg;
  *i = vi;
  *f = vf;
  *o = vo;
  *g = vg;
  *c = vc;
  *h = vo * tanh_(vc);
}

// Its backward. dh: gradient reaching h (from the output and from the next step's state-to-state
// product); dc_next: gradient reaching c from the next step's cell update (dc_next' * f_next).
// Returns the pre-activation gradients and, in *dc_carry, dc * f: what flows on to c_prev.
template <typename T>
PF_HD_INLINE void cell_backward(T i, T f, T o, T g, T c, T c_prev, T dh, T dc_next, T* da_i, T* da_f,
                                T* da_o, T* da_g, T* dc_carry) {
  const T tc = tanh_(c);
  const T dc = dc_next + dh * o * (T(1) - tc * tc);
  *da_i = dc * g * i * (T(1) - i);
  *da_f = dc * c_prev * f * (T(1) - f);
  *da_o = dh * tc * o * (T(1) - o);
  *da_g = dc * i * (T(1) - g * g);
  *dc_carry = dc * f;
}

// Diagonal scan geometry. Skewing shifts image row i right by i, so skewed column t holds the
// pixels (i, t - i): an anti-diagonal. Steps t = 0 .. H + W - 2; at step t the rows
// first_row(t) .. last_row(t) are inside the image. Scan buffers hold one step's pixels as rows
// (i - first_row(t)) * batch + b, so a step's rows are one contiguous block for the GEMM.
PF_HD int64_t diag_steps(int64_t height, int64_t width) { return height + width - 1; }
PF_HD int64_t first_row(int64_t t, int64_t width) { return t - width + 1 > 0 ? t - width + 1 : 0; }
PF_HD int64_t last_row(int64_t t, int64_t height) { return t < height - 1 ? t : height - 1; }
PF_HD int64_t diag_len(int64_t t, int64_t height, int64_t width) {
  return last_row(t, height) - first_row(t, width) + 1;
}

}  // namespace lstm
}  // namespace pixelfast
