// Host side shared by the CPU and CUDA engines: checking the op's arguments and decoding the plan.
#pragma once

#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "plan.h"

namespace pixelfast {
namespace sampler {

struct Plan {
  std::vector<Buffer> buffers;
  std::vector<Op> row_ops;
  std::vector<Op> pixel_ops;
  int64_t input_buffer = 0;  // buffer 0: the scaled image, written by kSample
};

// Decodes and validates the flat lists (TORCH_CHECK on anything inconsistent).
Plan decode_plan(c10::ArrayRef<int64_t> buffers, c10::ArrayRef<int64_t> program,
                 const std::vector<at::Tensor>& weights, int64_t channels, int64_t levels,
                 bool has_labels);

// One engine call's checked arguments, contiguous inputs, outputs, and zero-filled buffer storage
// (the pad columns are the convolutions' zero padding).
struct Prepared {
  Plan plan;
  at::Tensor image, known, uniforms, labels, out, logits;
  std::vector<at::Tensor> storage;  // per buffer: [B * values per image]
  std::vector<int64_t> strides;     // per buffer: values per image
  double temperature;
  int64_t levels;
  bool empty() const { return out.numel() == 0; }
};

Prepared prepare(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                 c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
                 const at::Tensor& uniforms, const std::optional<at::Tensor>& labels,
                 double temperature, int64_t levels, bool record_logits);

template <typename T>
EngineIO<T> io_of(Prepared& p) {
  EngineIO<T> io;
  io.channels = p.image.size(1);
  io.height = p.image.size(2);
  io.width = p.image.size(3);
  io.levels = p.levels;
  io.temperature = p.temperature;
  io.labels = p.labels.defined() ? p.labels.template const_data_ptr<int64_t>() : nullptr;
  io.image_in = p.image.template const_data_ptr<int64_t>();
  io.known = p.known.template const_data_ptr<bool>();
  io.uniforms = p.uniforms.template const_data_ptr<double>();
  io.image_out = p.out.template mutable_data_ptr<int64_t>();
  io.logits_out = p.logits.numel() > 0 ? p.logits.template mutable_data_ptr<T>() : nullptr;
  return io;
}

template <typename T>
std::vector<T*> buffer_data(Prepared& p) {
  std::vector<T*> data;
  for (auto& s : p.storage) data.push_back(s.template mutable_data_ptr<T>());
  return data;
}

std::tuple<at::Tensor, at::Tensor> sample_cached_cpu(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits);

}  // namespace sampler
}  // namespace pixelfast
