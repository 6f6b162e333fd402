// The thread-block cluster a block belongs to (Hopper, sm_90+: up to 8 blocks on neighbouring SMs
// that meet at a hardware barrier): its rank, its size and that barrier. On older GPUs, and in a
// launch without clusters, a cluster is the block itself. Under the test-only CUDA emulation
// (tests/emulation/cuda_emulation.h) the blocks of a cluster run together as host fibers.
#pragma once

#include <cstdint>

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

// A kernel's batch split into tiles of consecutive images, one per cluster (cluster k: images
// [k tile, (k + 1) tile)), and this thread's place in its cluster's team of threads.
struct Team {
  int64_t first_image, images;  // the cluster's images: [first_image, first_image + images)
  int64_t block, blocks;        // this block's rank in the cluster, the cluster's blocks
  int64_t rank, size;           // this thread's rank among the cluster's threads, their number
};

__device__ inline Team make_team(int64_t batch, int64_t tile) {
  Team team;
  team.blocks = cluster_blocks();
  team.block = cluster_rank();
  team.first_image = blockIdx.x / team.blocks * tile;
  const int64_t left = batch - team.first_image;
  team.images = left < tile ? (left > 0 ? left : 0) : tile;
  team.rank = team.block * blockDim.x + threadIdx.x;
  team.size = team.blocks * blockDim.x;
  return team;
}

}  // namespace pixelfast
