// Host/device annotations, so one header of inline math serves the CPU kernel (g++) and the CUDA
// kernel (nvcc) alike.
#pragma once

#if defined(__CUDACC__)
#define PF_HD __host__ __device__ __forceinline__
#else
#define PF_HD inline
#endif

// For small math in hot loops: always inlined on the host too, so that the compiler can vectorise
// the loop around it (a call it did not inline blocks vectorisation).
#if defined(__CUDACC__)
#define PF_HD_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define PF_HD_INLINE inline __attribute__((always_inline))
#else
#define PF_HD_INLINE inline
#endif
