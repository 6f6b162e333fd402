// The thread-block cluster a block belongs to (Hopper, sm_90+: up to 8 blocks on neighbouring SMs
// that meet at a hardware barrier): its rank, its size and that barrier. On older GPUs, and in a
// launch without clusters, a cluster is the block itself. Under the test-only CUDA emulation
// (tests/emulation/cuda_emulation.h) the blocks of a cluster run together as host fibers.
#pragma once

#if !defined(PF_CUDA_EMULATION)
#include <cooperative_groups.h>
#endif

namespace pixelfast {

__device__ __forceinline__ unsigned cluster_rank() {
#if defined(PF_CUDA_EMULATION)
  return ::pf_emu::cluster_rank();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().block_rank();
#else
  return 0;
#endif
}

__device__ __forceinline__ unsigned cluster_blocks() {
#if defined(PF_CUDA_EMULATION)
  return ::pf_emu::cluster_blocks();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().num_blocks();
#else
  return 1;
#endif
}

// Every thread of the cluster waits here; their global-memory writes before it are visible to
// all of them after it (the barrier's release / acquire semantics at cluster scope).
__device__ __forceinline__ void cluster_sync() {
#if defined(PF_CUDA_EMULATION)
  ::pf_emu::cluster_sync();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().sync();
#else
  __syncthreads();
#endif
}

}  // namespace pixelfast
