// The incremental-cache sampling engine's CUDA kernel: ONE launch samples the whole batch.
//
// Each thread block owns one image and runs the raster loop of engine_ops.h over the same plan,
// buffer layout and per-op logic as the CPU engine. Within a block, threads stride over each op's
// output channels; __syncthreads() orders the ops. Images never wait for each other: no grid-wide
// synchronisation, no launch per step. Device code only (no ATen/c10): engine_cuda.cu launches it,
// and the tests compile it on the host under the CUDA emulation (tests/emulation).
//
// Launch: grid = batch, any block size, dynamic shared memory = Plan::scratch_doubles (the draw's
// exponentials, then the mixture's components).
#pragma once

#include <cstdint>

#include "../common/host_device.h"
#include "engine_ops.h"

namespace pixelfast {
namespace sampler {

// Convolution at (i, j), sub-step g, for image b: each thread owns output channels t, t + blockDim,
// ..., so it reads back only what it wrote (no barrier inside the op).
template <typename T>
__device__ void conv_op(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                        int64_t g) {
  const int64_t channels = v.buffers[op.dst].channels;
  const int64_t n = group_width(v, op);
  T* out = v.at(op.dst, b, i, j);
  const int64_t t0 = threadIdx.x, step = blockDim.x;
  if (g == 0) add_into(out, conv_bias(v, op), op.accumulate != 0, t0, channels, step);
  for (int64_t t = t0; t < channels; t += step) {
    T sum = out[t];
    auto product = [&](const T* a, const T* w, int64_t k) {
      for (int64_t q = 0; q < k; ++q) sum += a[q] * w[q * channels + t];
    };
    if (g == 0) off_centre_products(v, op, b, i, j, product);
    if (t >= g * n && t < (g + 1) * n) centre_product(v, op, b, i, j, g, product);
    out[t] = sum;
  }
}

// The draw: every thread records its share of the logits; thread 0 draws (keeping the
// exponentials in shared memory) and writes the level. A non-finite draw sets *error.
template <typename T>
__device__ void sample_op(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                          int64_t g, double* scratch, int* error) {
  T* record = logits_record(v.io, b, g, i, j);
  if (record != nullptr) {
    const T* logits = sample_logits(v, op, b, i, j, g);
    const int64_t stride = record_stride(v.io);
    for (int64_t l = threadIdx.x; l < v.io.levels; l += blockDim.x) record[l * stride] = logits[l];
  }
  if (threadIdx.x == 0) {
    int64_t level = draw_level(v, op, b, i, j, g, scratch);
    if (level < 0) {
      atomicExch(error, 1);
      level = 0;
    }
    store_level(v, op, b, i, j, g, level);
  }
}

// The mixture of colour g: thread 0 computes the components' weights (in scratch, after the
// draw's exponentials), every thread its share of the levels, thread 0 the normaliser.
template <typename T>
__device__ void mixture_op(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                           int64_t g, double* scratch) {
  const MixtureAt<T> m = mixture_at(v, op, b, i, j, g);
  T* out = mixture_out(v, op, b, i, j, g);
  double* weights = scratch + v.io.levels;
  if (threadIdx.x == 0) mixture_weights(m, weights);
  __syncthreads();
  mixture_joint(m, weights, out, threadIdx.x, v.io.levels, blockDim.x);
  __syncthreads();
  if (threadIdx.x == 0) scratch[0] = double(log_sum_exp(out, v.io.levels));
  __syncthreads();
  const T norm = T(scratch[0]);
  for (int64_t l = threadIdx.x; l < v.io.levels; l += blockDim.x) out[l] -= norm;
}

template <typename T>
__global__ void engine_kernel(EngineView<T> v, int* error) {
  PF_DYNAMIC_SHARED(double, scratch);
  const int64_t b = blockIdx.x;
  run_raster(
      v,
      [&](const Op& op, int64_t r, int64_t j, int64_t g) {
        if (op.code == kConv) {
          conv_op(v, op, b, r, j, g);
        } else if (op.code == kSample) {
          sample_op(v, op, b, r, j, g, scratch, error);
        } else if (op.code == kMixture) {
          mixture_op(v, op, b, r, j, g, scratch);
        } else {
          pointwise_elements(pointwise_operands(v, op, b, r, j, g), threadIdx.x, group_width(v, op),
                             blockDim.x);
        }
        __syncthreads();  // the next op reads what this one wrote
      },
      [](int64_t, int64_t) { return true; });
}

}  // namespace sampler
}  // namespace pixelfast
