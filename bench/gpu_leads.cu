// The leads of docs/gpu_engine.md, measured on the GPU at hand ("What to measure first"): the cost
// of one cluster barrier (clusters of 8 and 16 blocks), of one grid-wide barrier (a cooperative
// launch over one block per SM), and the L2 read bandwidth when 16 clusters each stream the same
// weights. Built by bench/gpu_leads.py with torch.utils.cpp_extension for this GPU only; not part
// of the package. Every time comes from CUDA events around one launch of many repetitions.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <vector>

#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace cg = cooperative_groups;

namespace {

constexpr int kThreads = 256;

// Clusters exist from sm_90 on; compiled for an older GPU these kernels do no barrier (the host
// side does not time clusters there).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define PF_NO_CLUSTERS 1
#endif

__global__ void cluster_barriers(int iterations, int* sink) {
  int count = 0;
  for (int k = 0; k < iterations; ++k) {
#ifndef PF_NO_CLUSTERS
    cg::this_cluster().sync();
#endif
    ++count;
  }
  if (threadIdx.x == 0 && count != iterations) atomicAdd(sink, 1);
}

__global__ void grid_barriers(int iterations, int* sink) {
  int count = 0;
  for (int k = 0; k < iterations; ++k) {
    cg::this_grid().sync();
    ++count;
  }
  if (threadIdx.x == 0 && count != iterations) atomicAdd(sink, 1);
}

// Each cluster reads all `n` float4 of `weights` `passes` times, its blocks taking interleaved
// parts; the sums go to `sink` so that nothing is optimised away.
__global__ void stream_weights(const float4* weights, long long n, int passes, float* sink) {
#ifndef PF_NO_CLUSTERS
  const unsigned blocks = cg::this_cluster().num_blocks();
  const unsigned rank = cg::this_cluster().block_rank();
#else
  const unsigned blocks = 1, rank = 0;
#endif
  float sum = 0.0f;
  for (int p = 0; p < passes; ++p) {
    for (long long e = (long long)rank * blockDim.x + threadIdx.x; e < n;
         e += (long long)blocks * blockDim.x) {
      const float4 w = weights[e];
      sum += w.x + w.y + w.z + w.w;
    }
  }
  if (sum == 123.456f) sink[0] = sum;  // practically never true
}

// Milliseconds of one launch of kernel(args...) with the given shape and cluster size (0: a
// cooperative launch).
template <typename... Params, typename... Args>
float time_launch(void (*kernel)(Params...), unsigned blocks, unsigned cluster, Args... args) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attribute;
  if (cluster > 0) {
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = cluster;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
  } else {
    attribute.id = cudaLaunchAttributeCooperative;
    attribute.val.cooperative = 1;
  }
  config.attrs = &attribute;
  config.numAttrs = 1;
  struct Events {  // destroyed on every way out, a throwing launch too
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start != nullptr) cudaEventDestroy(start);
      if (stop != nullptr) cudaEventDestroy(stop);
    }
  } events;
  C10_CUDA_CHECK(cudaEventCreate(&events.start));
  C10_CUDA_CHECK(cudaEventCreate(&events.stop));
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));  // warm-up
  C10_CUDA_CHECK(cudaEventRecord(events.start, stream));
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));
  C10_CUDA_CHECK(cudaEventRecord(events.stop, stream));
  C10_CUDA_CHECK(cudaEventSynchronize(events.stop));
  float ms = 0;
  C10_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop));
  return ms;
}

// [us per barrier of a cluster of 8, of 16 (-1 where the GPU refuses), of the whole grid; L2 read
// bandwidth in TB/s with 16 clusters of 8 each streaming `megabytes` MB].
std::vector<double> leads(int64_t iterations, int64_t megabytes) {
  int device = 0, sms = 0, major = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  TORCH_CHECK(major >= 9, "gpu_leads: thread-block clusters need compute capability 9.0 or later");
  at::Tensor sink = at::zeros({1}, at::TensorOptions().device(at::kCUDA).dtype(at::kInt));
  const int n = static_cast<int>(iterations);
  std::vector<double> out;
  for (unsigned cluster : {8u, 16u}) {
    if (cluster == 16) {
      if (cudaFuncSetAttribute(cluster_barriers, cudaFuncAttributeNonPortableClusterSizeAllowed,
                               1) != cudaSuccess) {
        (void)cudaGetLastError();
        out.push_back(-1);
        continue;
      }
    }
    const unsigned clusters = static_cast<unsigned>(sms) / cluster;
    cudaError_t ok = cudaSuccess;
    float ms = 0;
    try {
      ms = time_launch(cluster_barriers, clusters * cluster, cluster, n, sink.data_ptr<int>());
    } catch (const c10::Error&) {
      ok = cudaErrorInvalidValue;
      (void)cudaGetLastError();
    }
    out.push_back(ok == cudaSuccess ? 1000.0 * ms / n : -1);
  }
  out.push_back(
      1000.0 * time_launch(grid_barriers, static_cast<unsigned>(sms), 0u, n, sink.data_ptr<int>()) /
      n);
  const long long floats = megabytes * 1000000 / 16 * 4;
  at::Tensor weights = at::ones({floats}, at::TensorOptions().device(at::kCUDA).dtype(at::kFloat));
  at::Tensor result = at::zeros({1}, weights.options());
  const int passes = 20;
  const float ms = time_launch(stream_weights, 16u * 8u, 8u,
                               reinterpret_cast<const float4*>(weights.data_ptr<float>()),
                               floats / 4, passes, result.data_ptr<float>());
  out.push_back(16.0 * passes * floats * 4 / (ms * 1e-3) / 1e12);
  TORCH_CHECK(sink.item<int>() == 0, "gpu_leads: a barrier loop miscounted");
  return out;
}

}  // namespace

TORCH_LIBRARY(pixelfast_leads, m) {
  m.def("leads(int iterations, int megabytes) -> float[]", &leads);
}
