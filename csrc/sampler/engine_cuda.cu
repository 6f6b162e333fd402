// The sampling engine on CUDA: checks the call, then launches engine_kernel.cuh once for the whole
// batch on the current stream: clusters of 8 blocks on Hopper and later GPUs (one block before),
// as many as fit on the GPU at once, each sampling a tile of the batch.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/cluster_launch.h"
#include "engine.h"
#include "engine_kernel.cuh"

namespace pixelfast {
namespace sampler {
namespace {

std::tuple<at::Tensor, at::Tensor> sample_cached_cuda(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits, const std::optional<at::Tensor>& condition,
    const std::string& precision) {
  // The op's own checks first (a CPU tensor among CUDA ones gets its message), then the device.
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits, condition);
  TORCH_CHECK_VALUE(parse_precision(precision, weights[0]) == Precision::kFp32,
                    "sample_cached: precision 'bf16' runs on the CPU engine only; the CUDA engine "
                    "computes in float32 (its tensor-core products are not built yet)");
  TORCH_CHECK(image.is_cuda(), "sample_cached: the CUDA engine got tensors on ", image.device());
  const c10::cuda::CUDAGuard guard(image.device());
  if (p.empty()) return {p.out, p.logits};
  const int64_t batch = p.image.size(0);
  const KernelWorkspace work = kernel_workspace(p);
  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_cuda", [&] {
    const DeviceView<scalar_t> d = device_view<scalar_t>(p, weights);
    const auto kernel = engine_kernel<scalar_t>;
    const size_t shared_bytes = engine_shared_bytes<scalar_t>(kEngineThreads);
    const ClusterLayout layout = cluster_layout(kernel, batch, kEngineThreads, shared_bytes);
    launch_clusters(kernel, layout, kEngineThreads, shared_bytes,
                    c10::cuda::getCurrentCUDAStream().stream(), d.view, batch, layout.tile,
                    work.scratch.mutable_data_ptr<double>(), work.stride,
                    work.error.mutable_data_ptr<int>());
  });
  check_kernel_error(work);
  return {p.out, p.logits};
}

}  // namespace
}  // namespace sampler
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CUDA, m) {
  m.impl("sample_cached", &pixelfast::sampler::sample_cached_cuda);
}
