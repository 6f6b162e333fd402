// sigmoid and tanh for the kernels' per-element math (LSTM cells, the sampling engine's gates),
// shared by the CPU code (g++) and the CUDA code (nvcc).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace pixelfast {

// sigmoid and tanh, one definition for the CPU and the GPU. float32: branch-free versions built on
// exp(-|x|) (a Cephes-style range reduction and degree-6 polynomial; |error| < 1e-7 against the
// exact functions), so that gcc vectorises the cell loops (libm's expf/tanhf are scalar calls)
// with no clamping compares: |x| is capped at 87 by an integer min on its bits. NaN inputs give
// NaN. float64, everywhere: the exact functions (the reference precision).
namespace detail {

// The same bits as another type of the same size, on the host and the device (a memcpy of one
// register's worth compiles to a move on both).
template <typename To, typename From>
PF_HD_INLINE To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: the sizes differ");
  To to;
  memcpy(&to, &from, sizeof(to));
  return to;
}

PF_HD_INLINE float bits_to_float(int32_t bits) { return bit_cast<float>(bits); }
PF_HD_INLINE int32_t float_to_bits(float f) { return bit_cast<int32_t>(f); }

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

PF_HD_INLINE float sigmoid(float x) {
  const float e = detail::exp_minus_abs(x);
  const float r = 1.0f / (1.0f + e);
  const float s = x >= 0.0f ? r : e * r;  // 1 / (1 + e^-x), or e^x / (1 + e^x) for x < 0
  return x != x ? x : s;
}

PF_HD_INLINE float tanh_(float x) {
  const float e = detail::exp_minus_abs(2.0f * x);
  const float t = (1.0f - e) / (1.0f + e);  // tanh |x|
  const float signed_t =
      detail::bits_to_float(detail::float_to_bits(t) | (detail::float_to_bits(x) & INT32_MIN));
  return x != x ? x : signed_t;
}

PF_HD_INLINE double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
PF_HD_INLINE double tanh_(double x) { return tanh(x); }

}  // namespace pixelfast
