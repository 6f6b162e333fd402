// What every op of a plan does at one position, defined once for the CPU engine (engine_cpu.cpp)
// and the CUDA kernel (engine_kernel.cuh): where its operands sit in the buffers, which products a
// convolution adds at each colour sub-step, the pointwise loops, the draw, and the raster order.
// The engines differ only in how they split the work: the CPU's thread team splits channels and
// runs the products as matrix products over the whole batch; on CUDA a cluster of blocks owns a
// tile of images and splits each op's channels (engine_kernel.cuh).
#pragma once

#include <cstdint>

#include "../common/host_device.h"
#include "mixture.h"
#include "plan.h"
#include "pointwise.h"

namespace pixelfast {
namespace sampler {

// The engine's state as raw pointers, host or device: the plan, the buffers and the call's I/O.
template <typename T>
struct EngineView {
  const Buffer* buffers;    // [num_buffers]
  T* const* data;           // per buffer: [B][rows][W + 2 pad][channels]
  const int64_t* strides;   // per buffer: values per image
  const T* const* weights;  // the plan's weight list
  const Op* row_ops;
  int64_t num_row_ops;
  const Op* pixel_ops;
  int64_t num_pixel_ops;
  const int32_t* epilogue;  // per pixel op: the CUDA engine's epilogue table (epilogue.h)
  EngineIO<T> io;

  PF_HD T* at(int64_t buffer, int64_t image, int64_t row, int64_t column) const {
    return data[buffer] + image * strides[buffer] +
           position_offset(buffers[buffer], io.width, row, column);
  }
};

// ---- the raster loop

// Image row by image row: the row phase (plan.h; run_row(op, r) as there), then for every pixel
// and colour sub-step g every pixel-phase op that runs there (runs_at); run(op, r, j, g) runs one
// op, after_pixel(i, j) returns false to stop. An op of one group in an RGB plan runs once per
// pixel, at sub-step 0: it does not read the pixel's colours (PixelCNN++'s network, whose colours
// meet in the mixture).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename T, typename Run, typename RunRow, typename AfterPixel>
PF_HD void run_raster(const EngineView<T>& v, Run&& run, RunRow&& run_row,
                      AfterPixel&& after_pixel) {
  for (int64_t i = 0; i < v.io.height; ++i) {
    run_row_phase(v.row_ops, v.num_row_ops, i, v.io.width, run, run_row);
    for (int64_t j = 0; j < v.io.width; ++j) {
      for (int64_t g = 0; g < v.io.channels; ++g) {
        for (int64_t o = 0; o < v.num_pixel_ops; ++o) {
          const Op& op = v.pixel_ops[o];
          if (g < op.groups && runs_at(op, i, j)) run(op, i, j, g);
        }
      }
      if (!after_pixel(i, j)) return;
    }
  }
}

// ---- convolution
//
// The off-centre taps do not depend on the current pixel: colour sub-step 0 sets every output
// channel to its bias (added to dst when accumulating) and adds the off-centre taps; each sub-step
// g then adds group g's centre tap, over its input prefix, to group g's channels only.

// dst[t] = (accumulate ? dst[t] : 0) + (src ? src[t] : 0) for t in [t0, t1) by `step`: the conv's
// bias and the add op. The branches sit outside the loops, so that each loop vectorises.
template <typename T>
PF_HD_INLINE void add_into(T* dst, const T* src, bool accumulate, int64_t t0, int64_t t1,
                           int64_t step) {
  if (!accumulate) {
    if (src != nullptr) {
      for (int64_t t = t0; t < t1; t += step) dst[t] = src[t];
    } else {
      for (int64_t t = t0; t < t1; t += step) dst[t] = T(0);
    }
  } else if (src != nullptr) {
    for (int64_t t = t0; t < t1; t += step) dst[t] += src[t];
  }
}

template <typename T>
PF_HD const T* conv_bias(const EngineView<T>& v, const Op& op) {
  return op.bias >= 0 ? v.weights[op.bias] : nullptr;
}

// Output channels per group: group g's centre tap adds to channels [g * n, (g + 1) * n).
template <typename T>
PF_HD int64_t group_width(const EngineView<T>& v, const Op& op) {
  return v.buffers[op.dst].channels / op.groups;
}

// Calls product(a, w, k) for each off-centre segment of conv `op` at (i, j) of image b: dst[c] +=
// sum over q < k of a[q] * w[q * dst.channels + c]. Rows above the image are zero padding.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename T, typename Product>
PF_HD void off_centre_products(const EngineView<T>& v, const Op& op, int64_t b, int64_t i,
                               int64_t j, Product&& product) {
  const int64_t in_channels = v.buffers[op.src].channels;
  for (int64_t s = 0; s < op.num_segments; ++s) {
    const Segment& seg = op.segments[s];
    if (i + seg.dy < 0) continue;
    product(v.at(op.src, b, i + seg.dy, j + seg.dx), v.weights[seg.weight], seg.cols * in_channels);
  }
}

// The same for the centre tap of sub-step g (nothing when its prefix is empty), to group g's
// channels.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename T, typename Product>
PF_HD void centre_product(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                          int64_t g, Product&& product) {
  const int64_t prefix = centre_prefix(v.buffers[op.src].channels, op.groups, op.centre, g);
  if (prefix > 0) product(v.at(op.src, b, i, j), v.weights[op.centre_weight], prefix);
}

// ---- pointwise ops (relu, elu, add, mul, gates, class bias, LSTM cell, concat_elu, cat) of one
// group at one position

template <typename T>
struct PointwiseOperands {
  int32_t code;
  bool accumulate;  // add: dst += src, else dst = src
  int64_t n;        // channels per group
  const T* in;      // relu, elu, add (null: rows above the image, zero), mul, gate [a | b], LSTM
                    // gates [i | f | o | g], class and position bias: their table row,
                    // condition: its values, concat_elu and cat: the first source
  const T* prev;    // LSTM cell: the previous cell state (null: zero); cat: the second source
  int64_t split;    // concat_elu, cat: the first source's channels (out[t] for t >= split reads
                    // the negated first source, or the second source, at t - split)
  T* out;           // the group's output (LSTM: the hidden state)
  T* cell;          // LSTM cell: the new cell state
};

template <typename T>
PF_HD PointwiseOperands<T> pointwise_operands(const EngineView<T>& v, const Op& op, int64_t b,
                                              int64_t i, int64_t j, int64_t g) {
  PointwiseOperands<T> p{};
  p.code = op.code;
  p.accumulate = op.accumulate != 0;
  p.n = group_width(v, op);
  p.out = v.at(op.dst, b, i, j) + g * p.n;
  switch (op.code) {
    case kRelu:
    case kElu:
    case kMul:
      p.in = v.at(op.src, b, i, j) + g * p.n;
      break;
    case kConcatElu:  // one group (the decoder checks)
      p.in = v.at(op.src, b, i, j);
      p.split = v.buffers[op.src].channels;
      break;
    case kCat:  // one group
      p.in = v.at(op.src, b, i, j);
      p.prev = v.at(op.cell, b, i, j);
      p.split = v.buffers[op.src].channels;
      break;
    case kAdd:  // src from row i + src_dy
      p.in = i + op.src_dy >= 0 ? v.at(op.src, b, i + op.src_dy, j) + g * p.n : nullptr;
      break;
    case kGate:
    case kSigmoidGate:
      p.in = v.at(op.src, b, i, j) + g * 2 * p.n;
      break;
    case kClassBias:
      p.in = v.weights[op.table] + v.io.labels[b] * v.buffers[op.dst].channels + g * p.n;
      break;
    case kPositionBias:
      p.in = v.weights[op.table] + (i * v.io.width + j) * v.buffers[op.dst].channels + g * p.n;
      break;
    case kClassPositionBias:
      p.in = v.weights[op.table] +
             ((v.io.labels[b] * v.io.height + i) * v.io.width + j) * v.buffers[op.dst].channels +
             g * p.n;
      break;
    case kCondition:
      p.in = v.io.condition + ((b * v.io.height + i) * v.io.width + j) * v.io.condition_channels +
             g * p.n;
      break;
    case kLstmCell:
      p.in = v.at(op.src, b, i, j) + g * 4 * p.n;
      p.cell = v.at(op.cell, b, i, j) + g * p.n;
      p.prev = i + op.prev_dy >= 0 ? v.at(op.cell, b, i + op.prev_dy, j + op.prev_dx) + g * p.n
                                   : nullptr;
      break;
    default:
      break;
  }
  return p;
}

// The gate and LSTM cell loops over restrict pointers (host only, common/host_device.h): gcc
// vectorises them only so (the outputs might alias the inputs otherwise, in more pairs than it
// checks at run time). The decoder makes sure that they do not.
// kTanh: tanh(a) * sigmoid(b) (kGate), else a * sigmoid(b) (kSigmoidGate).
template <bool kTanh, typename T>
PF_HD_INLINE void gate_elements(const T* PF_RESTRICT a, const T* PF_RESTRICT b, T* PF_RESTRICT out,
                                int64_t t0, int64_t t1, int64_t step) {
  for (int64_t t = t0; t < t1; t += step)
    out[t] = kTanh ? gate(a[t], b[t]) : sigmoid_gate(a[t], b[t]);
}

// prev: the previous cell state, or null (zero).
template <typename T>
PF_HD_INLINE void lstm_elements(const T* PF_RESTRICT gates, int64_t m, const T* PF_RESTRICT prev,
                                T* PF_RESTRICT hidden, T* PF_RESTRICT cell, int64_t t0, int64_t t1,
                                int64_t step) {
  if (prev != nullptr) {
    for (int64_t t = t0; t < t1; t += step) cell[t] = lstm_cell(gates + t, m, prev[t], hidden + t);
  } else {
    for (int64_t t = t0; t < t1; t += step) cell[t] = lstm_cell(gates + t, m, T(0), hidden + t);
  }
}

// Elements [t0, t1) by `step` (a CPU thread: its share, step 1; a CUDA thread: a block stride).
template <typename T>
PF_HD_INLINE void pointwise_elements(const PointwiseOperands<T>& p, int64_t t0, int64_t t1,
                                     int64_t step) {
  switch (p.code) {
    case kRelu:
      for (int64_t t = t0; t < t1; t += step) p.out[t] = relu(p.in[t]);
      break;
    case kElu:
      for (int64_t t = t0; t < t1; t += step) p.out[t] = elu(p.in[t]);
      break;
    case kMul:
      for (int64_t t = t0; t < t1; t += step) p.out[t] *= p.in[t];
      break;
    case kConcatElu:
      for (int64_t t = t0; t < t1; t += step)
        p.out[t] = t < p.split ? elu(p.in[t]) : elu(-p.in[t - p.split]);
      break;
    case kCat:
      for (int64_t t = t0; t < t1; t += step)
        p.out[t] = t < p.split ? p.in[t] : p.prev[t - p.split];
      break;
    case kAdd:
      add_into(p.out, p.in, p.accumulate, t0, t1, step);
      break;
    case kGate:
      gate_elements<true>(p.in, p.in + p.n, p.out, t0, t1, step);
      break;
    case kSigmoidGate:
      gate_elements<false>(p.in, p.in + p.n, p.out, t0, t1, step);
      break;
    case kClassBias:
    case kPositionBias:
    case kClassPositionBias:
    case kCondition:
      for (int64_t t = t0; t < t1; t += step) p.out[t] += p.in[t];
      break;
    case kLstmCell:
      lstm_elements(p.in, p.n, p.prev, p.out, p.cell, t0, t1, step);
      break;
    default:
      break;
  }
}

// ---- the draw (kSample) of colour g at (i, j) of image b

template <typename T>
PF_HD int64_t sub_pixel_index(const EngineIO<T>& io, int64_t b, int64_t g, int64_t i, int64_t j) {
  return ((b * io.channels + g) * io.height + i) * io.width + j;
}

template <typename T>
PF_HD const T* sample_logits(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                             int64_t g) {
  return v.at(op.src, b, i, j) + g * v.io.levels;
}

// Where the logits of this sub-pixel are recorded (level l at [l * record_stride]), or null.
template <typename T>
PF_HD T* logits_record(const EngineIO<T>& io, int64_t b, int64_t g, int64_t i, int64_t j) {
  if (io.logits_out == nullptr) return nullptr;
  return io.logits_out + ((b * io.levels) * io.channels + g) * io.height * io.width + i * io.width +
         j;
}

template <typename T>
PF_HD int64_t record_stride(const EngineIO<T>& io) {
  return io.channels * io.height * io.width;
}

// The level: the known one, or the inverse-CDF draw from the logits (-1: non-finite logits).
// `scratch`: `levels` doubles (see categorical).
template <typename T>
PF_HD_INLINE int64_t draw_level(const EngineView<T>& v, const Op& op, int64_t b, int64_t i,
                                int64_t j, int64_t g, double* scratch) {
  const int64_t index = sub_pixel_index(v.io, b, g, i, j);
  if (v.io.known[index]) return v.io.image_in[index];
  return categorical(sample_logits(v, op, b, i, j, g), v.io.levels, 1, v.io.temperature,
                     v.io.uniforms[index], scratch);
}

// Writes the level to the output and its scaled value into the image buffer (op.dst).
template <typename T>
PF_HD void store_level(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                       int64_t g, int64_t level) {
  v.io.image_out[sub_pixel_index(v.io, b, g, i, j)] = level;
  v.at(op.dst, b, i, j)[g] = scale_level<T>(level, v.io.levels);
}

// ---- the logistic mixture (kMixture) of colour g at (i, j) of image b (mixture.h)

// The pixel's parameters (src), scaled colours (buffer 0) and levels (the output image).
template <typename T>
PF_HD MixtureAt<T> mixture_at(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                              int64_t g) {
  MixtureAt<T> m;
  m.params = v.at(op.src, b, i, j);
  m.pixel = v.at(kInputBuffer, b, i, j);
  m.level = v.io.image_out + sub_pixel_index(v.io, b, 0, i, j);
  m.level_stride = v.io.height * v.io.width;
  m.channels = v.io.channels;
  m.components = v.buffers[op.src].channels / mixture_channels(v.io.channels, 1);
  m.levels = v.io.levels;
  m.g = g;
  return m;
}

// Where colour g's logits go: its group of dst.
template <typename T>
PF_HD T* mixture_out(const EngineView<T>& v, const Op& op, int64_t b, int64_t i, int64_t j,
                     int64_t g) {
  return v.at(op.dst, b, i, j) + g * v.io.levels;
}

}  // namespace sampler
}  // namespace pixelfast
