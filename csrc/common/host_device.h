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

// A restrict pointer on the host, where it lets gcc vectorise a loop without alias checks; none on
// the device, where const __restrict__ may route loads through the read-only cache, which is not
// coherent with the kernel's own earlier writes.
#if defined(__CUDACC__)
#define PF_RESTRICT
#else
#define PF_RESTRICT __restrict__
#endif

// Dynamic shared memory of a kernel (the launch's shared-memory bytes) as `type* name`, aligned
// to 128 bytes (wmma's tiles need 32); under the test-only CUDA emulation
// (tests/emulation/cuda_emulation.h) a per-block host buffer, aligned alike.
#if defined(__CUDACC__)
#define PF_DYNAMIC_SHARED(type, name)                                  \
  extern __shared__ __align__(128) unsigned char pf_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(pf_dynamic_shared_)
#else  // only kernels use it: on the host they exist only under the emulation
#define PF_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::pf_emu::dynamic_shared())
#endif
