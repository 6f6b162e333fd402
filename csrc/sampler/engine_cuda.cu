// The sampling engine on CUDA: checks the call, then launches engine_kernel.cuh once for the whole
// batch on the current stream: clusters of 8 blocks on Hopper and later GPUs (one block before),
// as many as fit on the GPU at once, each sampling a tile of the batch. precision "bf16" / "tf32"
// launches the kernel whose convolutions run on tensor cores (engine_mma.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/cluster_launch.h"
#include "engine.h"
#include "engine_launch.h"

namespace pixelfast {
namespace sampler {
namespace {

// bf16 / tf32 tensor cores need a GPU of compute capability 8.0 or later, and the kernel built for
// one (an older target compiles its products to a trap).
template <typename Kernel>
void check_tensor_cores(Kernel kernel, const std::string& precision) {
  int device = 0, major = 0, minor = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  TORCH_CHECK_VALUE(major >= 8, "sample_cached: precision '", precision,
                    "' needs tensor cores of compute capability 8.0 or later; this GPU is ", major,
                    ".", minor, " (use precision 'fp32')");
  cudaFuncAttributes attributes;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  TORCH_CHECK_VALUE(attributes.ptxVersion >= 80, "sample_cached: precision '", precision,
                    "' needs pixelfast built for compute capability 8.0 or later "
                    "(TORCH_CUDA_ARCH_LIST); this GPU runs code built for ",
                    attributes.ptxVersion / 10, ".", attributes.ptxVersion % 10);
}

std::tuple<at::Tensor, at::Tensor> sample_cached_cuda(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits, const std::optional<at::Tensor>& condition,
    const std::string& precision_name) {
  // The op's own checks first (a CPU tensor among CUDA ones gets its message), then the device.
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits, condition);
  const Precision precision = parse_precision(precision_name, weights[0]);
  TORCH_CHECK(image.is_cuda(), "sample_cached: the CUDA engine got tensors on ", image.device());
  const c10::cuda::CUDAGuard guard(image.device());
  if (precision != Precision::kFp32) {
    check_tensor_cores(precision == Precision::kBf16 ? engine_kernel<float, kBf16Products>
                                                     : engine_kernel<float, kTf32Products>,
                       precision_name);
  }
  if (p.empty()) return {p.out, p.logits};
  const int64_t batch = p.image.size(0);
  const KernelWorkspace work = kernel_workspace(p);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  with_engine_kernel(p, weights, precision, kEngineThreads,
                     [&](auto kernel, const auto& view, size_t shared_bytes) {
                       const ClusterLayout layout =
                           cluster_layout(kernel, batch, kEngineThreads, shared_bytes);
                       launch_clusters(kernel, layout, kEngineThreads, shared_bytes, stream, view,
                                       batch, layout.tile, work.scratch.mutable_data_ptr<double>(),
                                       work.stride, work.error.mutable_data_ptr<int>());
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
