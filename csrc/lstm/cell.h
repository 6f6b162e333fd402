// LSTM gate math, shared by the CPU and CUDA scan kernels (no torch in here).
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

#include "../common/activations.h"
#include "../common/host_device.h"

namespace pixelfast {
namespace lstm {

enum Gate : int64_t { kI = 0, kF = 1, kO = 2, kG = 3 };

PF_HD int64_t gate_index(int64_t q, int64_t c, int64_t hidden, int64_t groups) {
  const int64_t m = hidden / groups;
  return (c / m) * 4 * m + q * m + c % m;
}

// sigmoid and tanh_ (float and double): the shared activations of common/activations.h.
using ::pixelfast::sigmoid;
using ::pixelfast::tanh_;

// One cell step. Pre-activations in, activated gates and the new state out.
template <typename T>
PF_HD_INLINE void cell_forward(T a_i, T a_f, T a_o, T a_g, T c_prev, T* i, T* f, T* o, T* g, T* c,
                               T* h) {
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
PF_HD_INLINE void cell_backward(T i, T f, T o, T g, T c, T c_prev, T dh, T dc_next, T* da_i,
                                T* da_f, T* da_o, T* da_g, T* dc_carry) {
  const T tc = tanh_(c);
  const T dc = dc_next + dh * o * (T(1) - tc * tc);
  *da_i = dc * g * i * (T(1) - i);
  *da_f = dc * c_prev * f * (T(1) - f);
  *da_o = dh * tc * o * (T(1) - o);
  *da_g = dc * i * (T(1) - g * g);
  *dc_carry = dc * f;
}

}  // namespace lstm
}  // namespace pixelfast
