// Host side of the cluster kernels (common/cluster.cuh): how many clusters of how many blocks, and
// the launch. For .cu files only (CUDA runtime API).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include <c10/cuda/CUDAException.h>

namespace pixelfast {

constexpr int kClusterBlocks = 8;  // Hopper's portable cluster size

// A batch split into tiles, one per cluster of `blocks` blocks: `clusters` of them.
struct ClusterLayout {
  unsigned blocks;
  int64_t tile, clusters;
};

inline cudaLaunchAttribute cluster_attribute(unsigned blocks) {
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = blocks;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  return attribute;
}

// Clusters of 8 blocks where the GPU has them (compute capability 9.0+), the kernel was compiled
// for 9.0 or later (one built for an older GPU, even run from its PTX, has no cluster barrier) and
// the driver can place them; one block per SM: each cluster streams the weights once per step for
// its whole tile of images, so more clusters than SMs / 8 would only add weight traffic
// (docs/gpu_engine.md). Otherwise clusters of one block, up to one per SM.
template <typename Kernel>
ClusterLayout cluster_layout(Kernel kernel, int64_t batch, int threads, size_t shared_bytes) {
  int device = 0, major = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  cudaFuncAttributes attributes;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  unsigned blocks = 1;
  int64_t slots = std::max(sms, 1);
  if (major >= 9 && attributes.ptxVersion >= 90) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(kClusterBlocks);
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = shared_bytes;
    cudaLaunchAttribute attribute = cluster_attribute(kClusterBlocks);
    config.attrs = &attribute;
    config.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
      (void)cudaGetLastError();  // not an error of the launch: single blocks instead
      clusters = 0;
    }
    if (clusters > 0) {
      blocks = kClusterBlocks;
      slots = std::max<int64_t>(1, std::min<int64_t>(clusters, sms / kClusterBlocks));
    }
  }
  const int64_t tile = std::max<int64_t>(1, (batch + slots - 1) / slots);
  return ClusterLayout{blocks, tile, (batch + tile - 1) / tile};
}

// kernel<<<clusters x blocks, threads, shared_bytes, stream>>>(args...) in clusters of `blocks`.
template <typename... Params, typename... Args>
void launch_clusters(void (*kernel)(Params...), const ClusterLayout& layout, int threads,
                     size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(layout.clusters * layout.blocks));
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute = cluster_attribute(layout.blocks);
  config.attrs = &attribute;
  config.numAttrs = layout.blocks > 1 ? 1 : 0;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace pixelfast
