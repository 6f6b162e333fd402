// Host side shared by the CPU and CUDA engines: checking the op's arguments and decoding the plan
// (plan_decode.cpp), and the engine's view of one call on its device.
#pragma once

#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/ArrayRef.h>

#include "engine_ops.h"
#include "epilogue.h"
#include "plan.h"

namespace pixelfast {
namespace sampler {

struct Plan {
  std::vector<Buffer> buffers;
  std::vector<Op> row_ops;
  std::vector<Op> pixel_ops;
  int64_t mixture_components = 0;  // the most components of a kMixture op

  // The doubles of scratch an image's draws and mixtures need: one per level, then four per
  // mixture component (mixture.h).
  int64_t scratch_doubles(int64_t levels) const {
    return levels + kMixtureScratch * mixture_components;
  }
};

// Decodes and validates the flat lists (TORCH_CHECK on anything inconsistent) against a call on
// images of `channels` x `height` x `width`.
Plan decode_plan(c10::ArrayRef<int64_t> buffers, c10::ArrayRef<int64_t> program,
                 const std::vector<at::Tensor>& weights, int64_t channels, int64_t height,
                 int64_t width, int64_t levels, bool has_labels, int64_t condition_channels);

// The plan format this library decodes, as text: plan.h's field names, codes and limits, which
// pixelfast/sampling/plan_format.py checks its own tables against.
std::string plan_format();

// The precision of the convs' matrix products: float32 (or the weights' float64), or inputs and
// weights rounded to bf16 (both engines: the CPU's small_gemm_bf16.h, CUDA's tensor cores in
// engine_mma.cuh) or to tf32 (CUDA's tensor cores only), with float32 sums.
enum class Precision { kFp32, kBf16, kTf32 };

// sample_cached's `precision` argument ("fp32", "bf16" or "tf32"; the last two need float32
// weights).
inline Precision parse_precision(const std::string& precision, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(precision == "fp32" || precision == "bf16" || precision == "tf32",
                    "sample_cached: precision must be 'fp32', 'bf16' or 'tf32', got '", precision,
                    "'");
  if (precision == "fp32") return Precision::kFp32;
  TORCH_CHECK_VALUE(weight.scalar_type() == at::kFloat, "sample_cached: precision '", precision,
                    "' needs float32 weights, got ", weight.scalar_type());
  return precision == "bf16" ? Precision::kBf16 : Precision::kTf32;
}

// One engine call's checked arguments, contiguous inputs, outputs, and zero-filled buffer storage
// (the pad columns are the convolutions' zero padding).
struct Prepared {
  Plan plan;
  at::Tensor image, known, uniforms, labels, condition, out, logits;
  std::vector<at::Tensor> storage;  // per buffer: [B * values per image]
  std::vector<int64_t> strides;     // per buffer: values per image
  double temperature;
  int64_t levels;
  bool empty() const { return out.numel() == 0; }
};

Prepared prepare(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                 c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
                 const at::Tensor& uniforms, const std::optional<at::Tensor>& labels,
                 double temperature, int64_t levels, bool record_logits,
                 const std::optional<at::Tensor>& condition);

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
  io.condition = p.condition.defined() ? p.condition.template const_data_ptr<T>() : nullptr;
  io.condition_channels = p.condition.defined() ? p.condition.size(3) : 0;
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

// The engine's view of a prepared call, for kernels on `device`: the plan's arrays copied there
// (kept alive by `keep`); on the CPU the same pointers the host holds.
template <typename T>
struct DeviceView {
  EngineView<T> view;
  std::vector<at::Tensor> keep;
};

// Host data copied to `device` as raw bytes in one tensor (its storage keeps it alive).
template <typename V>
at::Tensor bytes_on(const std::vector<V>& values, const at::Device& device) {
  at::Tensor host = at::empty({static_cast<int64_t>(values.size() * sizeof(V))}, at::kByte);
  if (!values.empty())
    std::memcpy(host.mutable_data_ptr(), values.data(), values.size() * sizeof(V));
  return host.to(device);
}

template <typename T>
DeviceView<T> device_view(Prepared& p, const std::vector<at::Tensor>& weights) {
  const at::Device device = p.image.device();
  std::vector<const T*> weight_pointers;
  for (const auto& w : weights) weight_pointers.push_back(w.template const_data_ptr<T>());
  DeviceView<T> d;
  d.keep = {bytes_on(p.plan.buffers, device),
            bytes_on(buffer_data<T>(p), device),
            bytes_on(p.strides, device),
            bytes_on(weight_pointers, device),
            bytes_on(p.plan.row_ops, device),
            bytes_on(p.plan.pixel_ops, device),
            bytes_on(epilogue_table(p.plan.buffers, p.plan.pixel_ops), device)};
  const auto pointer = [&](size_t k) { return d.keep[k].const_data_ptr(); };
  d.view.buffers = static_cast<const Buffer*>(pointer(0));
  d.view.data = static_cast<T* const*>(pointer(1));
  d.view.strides = static_cast<const int64_t*>(pointer(2));
  d.view.weights = static_cast<const T* const*>(pointer(3));
  d.view.row_ops = static_cast<const Op*>(pointer(4));
  d.view.num_row_ops = static_cast<int64_t>(p.plan.row_ops.size());
  d.view.pixel_ops = static_cast<const Op*>(pointer(5));
  d.view.num_pixel_ops = static_cast<int64_t>(p.plan.pixel_ops.size());
  d.view.epilogue = static_cast<const int32_t*>(pointer(6));
  d.view.io = io_of<T>(p);
  return d;
}

// What the CUDA kernel (engine_kernel.cuh) needs beside the view, on the call's device: scratch
// for every image's draws and mixtures (Plan::scratch_doubles each, `stride` apart) and the flag
// it raises on non-finite logits.
struct KernelWorkspace {
  at::Tensor scratch, error;
  int64_t stride;
};

inline KernelWorkspace kernel_workspace(const Prepared& p) {
  const int64_t stride = p.plan.scratch_doubles(p.levels);
  const auto options = p.image.options();
  return {at::empty({p.image.size(0), stride}, options.dtype(at::kDouble)),
          at::zeros({1}, options.dtype(at::kInt)), stride};
}

// After the kernel: its non-finite flag as the op's error (reading it waits for the kernel).
inline void check_kernel_error(const KernelWorkspace& w) {
  TORCH_CHECK(w.error.cpu().item<int>() == 0,
              "sample_cached: the model produced non-finite logits (NaN or inf)");
}

// How many CPU engine calls went on with one thread because other programs held the cores.
int64_t sampler_solo_runs();

// Sets how many preemptions within one image row make the CPU engine go on with one thread (4 by
// default; 0 = after the first pixel) and returns the previous setting.
int64_t sampler_solo_after(int64_t preemptions);

// Sets the CPU engine's matrix-product kernel (auto, generic, avx2, avx512: float32, small_gemm.h;
// amx: bf16, small_gemm_bf16.h) and returns the previous setting; ValueError for a kernel this CPU
// cannot run. auto: the widest float32 kernel, and AMX for bf16 where the CPU has it.
std::string sampler_gemm_kernel(const std::string& kind);

// How many CPU engine calls split the batch by image (each thread its own images, no barriers).
int64_t sampler_image_split_runs();

// Sets the weight size in bytes below which the CPU engine splits the batch by image rather than
// by channel (8 MiB by default; 0 = never) and returns the previous setting.
int64_t sampler_split_images_below(int64_t bytes);

}  // namespace sampler
}  // namespace pixelfast
