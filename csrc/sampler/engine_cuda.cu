// The sampling engine on CUDA: checks the call, then launches engine_kernel.cuh once for the whole
// batch on the current stream: clusters of 8 blocks on Hopper and later GPUs (one block before),
// as many as fit on the GPU at once, each sampling a tile of the batch.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "engine.h"
#include "engine_kernel.cuh"

namespace pixelfast {
namespace sampler {
namespace {

constexpr int kClusterBlocks = 8;  // Hopper's portable cluster size

// How many clusters of `blocks` blocks run at once on this GPU (0: none can).
template <typename Kernel>
int active_clusters(Kernel kernel, int blocks, size_t shared_bytes) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(kEngineThreads);
  config.dynamicSmemBytes = shared_bytes;
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = blocks;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
    (void)cudaGetLastError();  // not an error of the launch: fall back to single blocks
    return 0;
  }
  return clusters;
}

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
  const int64_t batch = p.image.size(0);
  const int64_t scratch_stride = p.plan.scratch_doubles(levels);
  at::Tensor scratch = at::empty({batch, scratch_stride}, image.options().dtype(at::kDouble));
  at::Tensor error = at::zeros({1}, image.options().dtype(at::kInt));
  int device = 0, major = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_cuda", [&] {
    const DeviceView<scalar_t> d = device_view<scalar_t>(p, weights);
    const auto kernel = engine_kernel<scalar_t>;
    const size_t shared_bytes = engine_shared_bytes<scalar_t>(kEngineThreads);
    // Clusters where the GPU has them (compute capability 9.0+) and they fit, one block per SM:
    // each cluster streams the weights once per sub-step for its whole tile of images, so more
    // clusters than SMs / 8 would only add weight traffic (docs/gpu_engine.md).
    int blocks = 1;
    int64_t slots = sms;
    cudaFuncAttributes attributes;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    // The code the driver loaded must be sm_90's too: a kernel built for an older GPU (its
    // PTX compiled for this one) has no cluster barrier (common/cluster.cuh).
    if (major >= 9 && attributes.binaryVersion >= 90) {
      const int clusters = active_clusters(kernel, kClusterBlocks, shared_bytes);
      if (clusters > 0) {
        blocks = kClusterBlocks;
        slots = std::max<int64_t>(1, std::min<int64_t>(clusters, slots / kClusterBlocks));
      }
    }
    const int64_t tile = (batch + slots - 1) / slots;
    const int64_t clusters = (batch + tile - 1) / tile;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(static_cast<unsigned>(clusters * blocks));
    config.blockDim = dim3(kEngineThreads);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = c10::cuda::getCurrentCUDAStream();
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = static_cast<unsigned>(blocks);
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = blocks > 1 ? 1 : 0;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, d.view, batch, tile,
                                      scratch.mutable_data_ptr<double>(), scratch_stride,
                                      error.mutable_data_ptr<int>()));
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
