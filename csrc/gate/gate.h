// The gated activation tanh(a) * sigmoid(b) (Gated PixelCNN) and its gradient: the per-element
// math and the channel layout, shared by the CPU kernel (gate_cpu.cpp) and the CUDA kernels
// (gate_kernels.cuh). No torch in here.
//
// Input [B, 2n, H, W], output [B, n, H, W], both in one memory format (contiguous or
// channels-last). The input's channels are `groups` contiguous blocks of 2m (m = n / groups), each
// [a (m channels), b (m channels)]; output channel g*m + t reads a = input g*2m + t and b = a + m,
// so colour group g of the output reads only colour group g of the input.
#pragma once

#include <cstdint>

#include "../common/activations.h"
#include "../common/host_device.h"

namespace pixelfast {
namespace gate {

// One small params struct per op (shapes of one call).
struct Params {
  int64_t batch;
  int64_t channels;  // n: the output's channels (the input has 2n)
  int64_t groups;
  int64_t pixels;  // H * W
  bool channels_last;
};

// The kernels' arguments (CPU and CUDA alike): the shapes and the data.
template <typename T>
struct Args {
  Params p;
  const T* x;
  const T* grad_out;  // backward only
  T* out;             // forward: the output; backward: the input's gradient
};

PF_HD int64_t per_group(const Params& p) { return p.channels / p.groups; }
PF_HD int64_t out_elements(const Params& p) { return p.batch * p.channels * p.pixels; }

// The input channel of output channel c's `a` (its `b` is m channels later).
PF_HD int64_t a_channel(const Params& p, int64_t c) {
  return c + (c / per_group(p)) * per_group(p);
}

// Offset in the input of the `a` that the output element at offset e reads.
PF_HD int64_t a_offset(const Params& p, int64_t e) {
  if (p.channels_last) {  // e = pixel * n + c
    const int64_t pixel = e / p.channels, c = e % p.channels;
    return pixel * 2 * p.channels + a_channel(p, c);
  }
  // e = (image * n + c) * pixels + s
  const int64_t s = e % p.pixels, plane = e / p.pixels;
  const int64_t c = plane % p.channels, image = plane / p.channels;
  return (image * 2 * p.channels + a_channel(p, c)) * p.pixels + s;
}

// From an `a` to its `b` in the input.
PF_HD int64_t b_distance(const Params& p) {
  return per_group(p) * (p.channels_last ? 1 : p.pixels);
}

// Output runs whose inputs are runs too (a colour group of one pixel, or one channel plane): the
// CPU kernel's unit of work, a contiguous loop the compiler vectorises.
PF_HD int64_t run_length(const Params& p) { return p.channels_last ? per_group(p) : p.pixels; }

template <typename T>
PF_HD_INLINE T gate_value(T a, T b) {
  return tanh_(a) * sigmoid(b);
}

// d/da and d/db of grad * tanh(a) * sigmoid(b).
template <typename T>
PF_HD_INLINE void gate_gradient(T a, T b, T grad, T* grad_a, T* grad_b) {
  const T t = tanh_(a), s = sigmoid(b);
  *grad_a = grad * s * (T(1) - t * t);
  *grad_b = grad * t * s * (T(1) - s);
}

}  // namespace gate
}  // namespace pixelfast
