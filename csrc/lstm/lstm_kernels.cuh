// The CUDA kernels of the LSTM scans: one thread per element of a step (a pixel's channel), in
// grid-stride loops, over the step geometry of scan_step.h and the cell math of cell.h. No c10 or
// ATen here, so that g++ compiles these under the test-only CUDA emulation
// (tests/emulation/cuda_emulation.h); lstm_cuda.cu launches them.
#pragma once

#include <cstdint>

#include "../common/grid.cuh"
#include "cell.h"
#include "lstm_params.h"
#include "scan_step.h"

namespace pixelfast {
namespace lstm {

// Elements (threads' work items) of each kernel, for its grid-stride loop and its launch: a
// gather row covers taps * hidden X values and 4 * hidden pre values; a cell kernel handles one
// hidden channel of one pixel.
PF_HD int64_t gather_columns(const Step& s) { return (s.taps > 4 ? s.taps : 4) * s.hidden; }
PF_HD int64_t gather_elements(const Step& s) { return scan_rows(s) * gather_columns(s); }
PF_HD int64_t cell_elements(const Step& s) { return scan_rows(s) * s.hidden; }

template <typename T>
__global__ void gather_kernel(const GatherParams<T> a) {
  const Step& s = a.step;
  const int64_t hidden = s.hidden, cols = gather_columns(s);
  PF_GRID_STRIDE(e, gather_elements(s)) {
    const int64_t n = e / cols, col = e % cols;
    if (a.pre != nullptr && col < 4 * hidden) a.pre[n * 4 * hidden + col] = a.bias[col];
    if (col < s.taps * hidden) {
      const int64_t src = source(s, pixel(s, n), col / hidden);
      a.x[n * s.taps * hidden + col] = src >= 0 ? a.h[src * hidden + col % hidden] : T(0);
    }
  }
}

template <typename T>
__global__ void cell_forward_kernel(const CellForwardParams<T> a) {
  const Step& s = a.step;
  const int64_t hidden = s.hidden;
  PF_GRID_STRIDE(e, cell_elements(s)) {
    const int64_t n = e / hidden, ch = e % hidden;
    const Pixel p = pixel(s, n);
    const int64_t prev = cell_source(s, p);
    const T c_prev = prev >= 0 ? a.c[prev * hidden + ch] : T(0);
    T pre_act[4];
    int64_t g[4];
    for (int q = 0; q < 4; ++q) {
      g[q] = gate_index(q, ch, hidden, s.groups);
      pre_act[q] = a.gates[p.offset * 4 * hidden + g[q]] + a.pre[n * 4 * hidden + g[q]];
    }
    T* act = a.acts + p.offset * 4 * hidden;
    cell_forward(pre_act[kI], pre_act[kF], pre_act[kO], pre_act[kG], c_prev, &act[g[kI]],
                 &act[g[kF]], &act[g[kO]], &act[g[kG]], &a.c[p.offset * hidden + ch],
                 &a.h[p.offset * hidden + ch]);
  }
}

template <typename T>
__global__ void cell_backward_kernel(const CellBackwardParams<T> a) {
  const Step& s = a.step;
  const int64_t hidden = s.hidden;
  PF_GRID_STRIDE(e, cell_elements(s)) {
    const int64_t n = e / hidden, ch = e % hidden;
    const Pixel p = pixel(s, n);
    T dh = a.grad_h[p.offset * hidden + ch];
    for (int64_t tap = 0; tap < s.taps; ++tap) {
      const int64_t row = reader(s, p, tap);
      if (row >= 0) dh += a.dx[(row * s.taps + tap) * hidden + ch];
    }
    const int64_t next = cell_reader(s, p);
    const T dc_next = next >= 0 ? a.dc_in[next * hidden + ch] : T(0);
    const int64_t prev = cell_source(s, p);
    const T c_prev = prev >= 0 ? a.c[prev * hidden + ch] : T(0);
    const T* act = a.acts + p.offset * 4 * hidden;
    int64_t g[4];
    for (int q = 0; q < 4; ++q) g[q] = gate_index(q, ch, hidden, s.groups);
    T da[4];
    cell_backward(act[g[kI]], act[g[kF]], act[g[kO]], act[g[kG]], a.c[p.offset * hidden + ch],
                  c_prev, dh, dc_next, &da[kI], &da[kF], &da[kO], &da[kG], &a.dc_out[e]);
    for (int q = 0; q < 4; ++q) {
      a.dpre[n * 4 * hidden + g[q]] = da[q];
      a.grad_gates[p.offset * 4 * hidden + g[q]] = da[q];
    }
  }
}

// The kernels of a Backend (lstm_backend.h), each with the element count it covers, started by
// Launcher::launch(kernel, elements, params): the CUDA launcher (lstm_cuda.cu) and the test-only
// emulated one (tests/emulation/lstm_emulated.cpp) share this pairing.
template <typename Launcher>
struct KernelLaunches {
  template <typename T>
  static void gather(const GatherParams<T>& a) {
    Launcher::launch(gather_kernel<T>, gather_elements(a.step), a);
  }
  template <typename T>
  static void cell_forward(const CellForwardParams<T>& a) {
    Launcher::launch(cell_forward_kernel<T>, cell_elements(a.step), a);
  }
  template <typename T>
  static void cell_backward(const CellBackwardParams<T>& a) {
    Launcher::launch(cell_backward_kernel<T>, cell_elements(a.step), a);
  }
};

}  // namespace lstm
}  // namespace pixelfast
