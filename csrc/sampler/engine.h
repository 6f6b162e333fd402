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

// The shared argument checks of sample_cached; returns the plan.
Plan check_arguments(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                     c10::ArrayRef<int64_t> program, const at::Tensor& image,
                     const at::Tensor& known, const at::Tensor& uniforms,
                     const std::optional<at::Tensor>& labels, double temperature, int64_t levels);

std::tuple<at::Tensor, at::Tensor> sample_cached_cpu(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits);

}  // namespace sampler
}  // namespace pixelfast
