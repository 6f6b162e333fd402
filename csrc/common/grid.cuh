// Grid-stride loops and their launch size, for the CUDA kernels (and the test-only emulation,
// which defines blockIdx etc. on the CPU).
#pragma once

#include <cstdint>

#define PF_GRID_STRIDE(index, n)                                                    \
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < (n); \
       index += int64_t(blockDim.x) * gridDim.x)

namespace pixelfast {

// Blocks of `threads` covering n elements, at most max_blocks (the grid-stride loops do the rest).
inline int64_t blocks_for(int64_t n, int64_t threads, int64_t max_blocks) {
  const int64_t blocks = (n + threads - 1) / threads;
  return blocks < max_blocks ? blocks : max_blocks;
}

}  // namespace pixelfast
