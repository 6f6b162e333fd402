// Host/device annotations, so one header of inline math serves the CPU kernel (g++) and the CUDA
// kernel (nvcc) alike.
#pragma once

#if defined(__CUDACC__)
#define PF_HD __host__ __device__ __forceinline__
#else
#define PF_HD inline
#endif
