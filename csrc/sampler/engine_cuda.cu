// The incremental-cache sampling engine, CUDA: ONE kernel launch samples the whole batch.
//
// Each thread block owns one image and runs the same raster loop as the CPU engine
// (engine_cpu.cpp) over the same plan and buffer layout (plan.h), with the same per-element math
// (pointwise.h). Within a block, threads split each op's output channels; __syncthreads() orders
// the ops. Images never wait for each other, so there is no grid-wide synchronisation and no
// launch per step.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "engine.h"
#include "pointwise.h"

namespace pixelfast {
namespace sampler {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct DeviceEngine {
  const Buffer* buffers;      // [num_buffers]
  T* const* data;             // per buffer: [B][rows][Wp][channels]
  const int64_t* strides;     // per buffer: values per image
  const T* const* weights;
  const Op* row_ops;
  int64_t num_row_ops;
  const Op* pixel_ops;
  int64_t num_pixel_ops;
  EngineIO<T> io;
  int* error;                 // set when logits are not finite

  __device__ T* at(int64_t buffer, int64_t image, int64_t row, int64_t column) const {
    return data[buffer] + image * strides[buffer] + position_offset(buffers[buffer], io.width, row, column);
  }

  // As on the CPU: sub-step 0 computes the bias and the off-centre taps of every output group,
  // each sub-step g adds group g's centre tap over its input prefix.
  __device__ void conv(const Op& op, int64_t b, int64_t i, int64_t j, int64_t g) const {
    const Buffer& src = buffers[op.src];
    const Buffer& dst = buffers[op.dst];
    const int64_t n = dst.channels / op.groups;
    const int64_t prefix = centre_prefix(src.channels, op.groups, op.centre, g);
    T* out = at(op.dst, b, i, j);
    const int64_t first = g == 0 ? 0 : g * n;
    const int64_t last = g == 0 ? dst.channels : (g + 1) * n;
    for (int64_t t = first + threadIdx.x; t < last; t += blockDim.x) {
      T sum = out[t];
      if (g == 0) {
        sum = (op.accumulate ? sum : T(0)) + (op.bias >= 0 ? weights[op.bias][t] : T(0));
        for (int64_t s = 0; s < op.num_segments; ++s) {
          const Segment& seg = op.segments[s];
          if (i + seg.dy < 0) continue;  // rows above the image are zero padding
          const T* a = at(op.src, b, i + seg.dy, j + seg.dx);
          const T* w = weights[seg.weight] + t;
          const int64_t k = seg.cols * src.channels;
          for (int64_t q = 0; q < k; ++q) sum += a[q] * w[q * dst.channels];
        }
      }
      if (prefix > 0 && t >= g * n && t < (g + 1) * n) {
        const T* a = at(op.src, b, i, j);
        const T* w = weights[op.centre_weight] + t;
        for (int64_t q = 0; q < prefix; ++q) sum += a[q] * w[q * dst.channels];
      }
      out[t] = sum;
    }
  }

  __device__ void pointwise(const Op& op, int64_t b, int64_t i, int64_t j, int64_t g) const {
    const int64_t n = buffers[op.dst].channels / op.groups;
    T* out = at(op.dst, b, i, j) + g * n;
    for (int64_t t = threadIdx.x; t < n; t += blockDim.x) {
      switch (op.code) {
        case kRelu:
          out[t] = relu(at(op.src, b, i, j)[g * n + t]);
          break;
        case kAdd:  // dst (+)= src, src from row i + src_dy (rows above the image are zero)
          out[t] = (op.accumulate ? out[t] : T(0)) +
                   (i + op.src_dy >= 0 ? at(op.src, b, i + op.src_dy, j)[g * n + t] : T(0));
          break;
        case kLstmCell: {
          const T prev = i + op.prev_dy >= 0 ? at(op.cell, b, i + op.prev_dy, j + op.prev_dx)[g * n + t] : T(0);
          at(op.cell, b, i, j)[g * n + t] = lstm_cell(at(op.src, b, i, j) + g * 4 * n + t, n, prev, out + t);
          break;
        }
        case kGate: {
          const T* in = at(op.src, b, i, j) + g * 2 * n;
          out[t] = gate(in[t], in[n + t]);
          break;
        }
        case kClassBias:
          out[t] += weights[op.table][io.labels[b] * buffers[op.dst].channels + g * n + t];
          break;
        default:
          break;
      }
    }
  }

  __device__ void sample(const Op& op, int64_t b, int64_t i, int64_t j, int64_t g) const {
    const T* logits = at(op.src, b, i, j) + g * io.levels;
    const int64_t hw = io.height * io.width;
    const int64_t index = ((b * io.channels + g) * io.height + i) * io.width + j;
    if (io.logits_out != nullptr) {
      T* record = io.logits_out + ((b * io.levels) * io.channels + g) * hw + i * io.width + j;
      for (int64_t l = threadIdx.x; l < io.levels; l += blockDim.x) record[l * io.channels * hw] = logits[l];
    }
    if (threadIdx.x == 0) {
      int64_t level = io.known[index] ? io.image_in[index]
                                      : categorical(logits, io.levels, 1, io.temperature, io.uniforms[index]);
      if (level < 0) {
        atomicExch(error, 1);
        level = 0;
      }
      io.image_out[index] = level;
      at(op.dst, b, i, j)[g] = scale_level<T>(level, io.levels);
    }
  }

  __device__ void run(const Op& op, int64_t b, int64_t i, int64_t j, int64_t g) const {
    if (op.code == kConv) {
      conv(op, b, i, j, g);
    } else if (op.code == kSample) {
      sample(op, b, i, j, g);
    } else {
      pointwise(op, b, i, j, g);
    }
    __syncthreads();  // the next op reads what this one wrote
  }
};

template <typename T>
__global__ void engine_kernel(DeviceEngine<T> engine) {
  const int64_t b = blockIdx.x;
  for (int64_t i = 0; i < engine.io.height; ++i) {
    run_row_phase(engine.row_ops, engine.num_row_ops, i, engine.io.width,
                  [&](const Op& op, int64_t r, int64_t j, int64_t g) { engine.run(op, b, r, j, g); });
    for (int64_t j = 0; j < engine.io.width; ++j) {
      for (int64_t g = 0; g < engine.io.channels; ++g) {
        for (int64_t o = 0; o < engine.num_pixel_ops; ++o) engine.run(engine.pixel_ops[o], b, i, j, g);
      }
    }
  }
}

// Host data copied to the device as raw bytes in one tensor (its storage keeps it alive).
template <typename V>
at::Tensor to_device(const std::vector<V>& values, const at::Device& device) {
  at::Tensor host = at::empty({static_cast<int64_t>(values.size() * sizeof(V))}, at::kByte);
  if (!values.empty()) std::memcpy(host.mutable_data_ptr(), values.data(), values.size() * sizeof(V));
  return host.to(device);
}

std::tuple<at::Tensor, at::Tensor> sample_cached_cuda(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits) {
  const c10::cuda::CUDAGuard guard(image.device());
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits);
  if (p.empty()) return {p.out, p.logits};
  const at::Device device = image.device();
  at::Tensor error = at::zeros({1}, image.options().dtype(at::kInt));

  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_cuda", [&] {
    std::vector<const scalar_t*> weight_pointers;
    for (const auto& w : weights) weight_pointers.push_back(w.const_data_ptr<scalar_t>());
    const at::Tensor d_buffers = to_device(p.plan.buffers, device);
    const at::Tensor d_data = to_device(buffer_data<scalar_t>(p), device);
    const at::Tensor d_strides = to_device(p.strides, device);
    const at::Tensor d_weights = to_device(weight_pointers, device);
    const at::Tensor d_row_ops = to_device(p.plan.row_ops, device);
    const at::Tensor d_pixel_ops = to_device(p.plan.pixel_ops, device);

    DeviceEngine<scalar_t> engine;
    engine.buffers = reinterpret_cast<const Buffer*>(d_buffers.const_data_ptr());
    engine.data = reinterpret_cast<scalar_t* const*>(d_data.const_data_ptr());
    engine.strides = reinterpret_cast<const int64_t*>(d_strides.const_data_ptr());
    engine.weights = reinterpret_cast<const scalar_t* const*>(d_weights.const_data_ptr());
    engine.row_ops = reinterpret_cast<const Op*>(d_row_ops.const_data_ptr());
    engine.num_row_ops = static_cast<int64_t>(p.plan.row_ops.size());
    engine.pixel_ops = reinterpret_cast<const Op*>(d_pixel_ops.const_data_ptr());
    engine.num_pixel_ops = static_cast<int64_t>(p.plan.pixel_ops.size());
    engine.io = io_of<scalar_t>(p);
    engine.error = error.mutable_data_ptr<int>();

    auto stream = c10::cuda::getCurrentCUDAStream();
    engine_kernel<scalar_t><<<static_cast<unsigned int>(p.image.size(0)), kThreads, 0, stream>>>(engine);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Reading the flag waits for the kernel.
  TORCH_CHECK(error.cpu().item<int>() == 0,
              "sample_cached: the model produced non-finite logits (NaN or inf)");
  return {p.out, p.logits};
}

}  // namespace
}  // namespace sampler
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CUDA, m) {
  m.impl("sample_cached", &pixelfast::sampler::sample_cached_cuda);
}
