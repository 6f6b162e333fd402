// The sampling engine on CUDA: checks the call, then launches engine_kernel.cuh once for the whole
// batch (one block per image) on the current stream.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "engine.h"
#include "engine_kernel.cuh"

namespace pixelfast {
namespace sampler {
namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // dynamic shared memory without an opt-in

std::tuple<at::Tensor, at::Tensor> sample_cached_cuda(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits, const std::optional<at::Tensor>& condition) {
  // The op's own checks first (a CPU tensor among CUDA ones gets its message), then the device.
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits, condition);
  TORCH_CHECK(image.is_cuda(), "sample_cached: the CUDA engine got tensors on ", image.device());
  const c10::cuda::CUDAGuard guard(image.device());
  if (p.empty()) return {p.out, p.logits};
  at::Tensor error = at::zeros({1}, image.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_cuda", [&] {
    const DeviceView<scalar_t> d = device_view<scalar_t>(p, weights);
    const size_t shared_bytes =
        static_cast<size_t>(p.plan.scratch_doubles(levels)) * sizeof(double);
    TORCH_CHECK(shared_bytes <= kMaxSharedBytes, "sample_cached: the CUDA engine keeps ",
                p.plan.scratch_doubles(levels), " doubles per image in shared memory, at most ",
                kMaxSharedBytes / sizeof(double), " (fewer levels or mixture components)");
    engine_kernel<scalar_t>
        <<<static_cast<unsigned int>(p.image.size(0)), kThreads, shared_bytes,
           c10::cuda::getCurrentCUDAStream()>>>(d.view, error.mutable_data_ptr<int>());
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
