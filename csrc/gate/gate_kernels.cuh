// The gated activation's CUDA kernels: one thread per output element, in grid-stride loops, over
// the layout and math of gate.h. No c10 or ATen here, so that g++ compiles these under the
// test-only CUDA emulation (tests/emulation/cuda_emulation.h); gate_cuda.cu launches them.
#pragma once

#include <cstdint>

#include "../common/grid.cuh"
#include "gate.h"

namespace pixelfast {
namespace gate {

template <typename T>
__global__ void forward_kernel(const Args<T> a) {
  const int64_t gap = b_distance(a.p);
  PF_GRID_STRIDE(e, out_elements(a.p)) {
    const int64_t offset = a_offset(a.p, e);
    a.out[e] = gate_value(a.x[offset], a.x[offset + gap]);
  }
}

template <typename T>
__global__ void backward_kernel(const Args<T> a) {
  const int64_t gap = b_distance(a.p);
  PF_GRID_STRIDE(e, out_elements(a.p)) {
    const int64_t offset = a_offset(a.p, e);
    T da, db;
    gate_gradient(a.x[offset], a.x[offset + gap], a.grad_out[e], &da, &db);
    a.out[offset] = da;
    a.out[offset + gap] = db;
  }
}

}  // namespace gate
}  // namespace pixelfast
