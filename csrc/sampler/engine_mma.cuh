// The CUDA engine's convolution products on tensor cores: sample_cached's opt-in precisions "bf16"
// (inputs and weights rounded to bfloat16, round to nearest even: the CPU engine's bf16) and "tf32"
// (rounded to tf32's 10-bit mantissa, ties away from zero), both summed in float32, with wmma's
// 16 x 16 tiles (docs/gpu_engine.md, "Tensor-core products").
//
// One tile is [16 images] x [16 output channels]. A block's warps split its products' K into chunks
// (16 values for bf16, 8 for tf32), numbered across all the products of the tile; warp w takes
// chunks w, w + warps, ... and keeps one float32 accumulator fragment. For each chunk its lanes
// round the activations (A: images x K, zero past the tile's images) and the weights (B: K x
// channels, zero outside the channels the product may touch) into the warp's tiles in shared
// memory; the warp loads them and multiplies. At the end each warp stores its sums; the engine adds
// the warps' sums in warp order (mma_tile_sum) and finishes the outputs as the float path does.
//
// Device code only: engine_kernel.cuh uses it, and the CUDA emulation compiles it on the host
// (tests/emulation/wmma_emulation.h emulates the wmma subset used here).
#pragma once

#include <cstdint>

#if !defined(PF_CUDA_EMULATION)
#include <cuda_bf16.h>
#include <mma.h>
#endif

#include "../common/host_device.h"

// wmma's bf16 and tf32 exist from sm_80 on: a device pass for an older target compiles without
// them (the kernel's tensor-core path traps there, and the launcher refuses such a GPU).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define PF_TENSOR_CORES 1
#endif

namespace pixelfast {
namespace sampler {

// How the engine kernel computes a convolution's products: float FMA in the weights' type (the
// default), or tensor-core MMA on bf16 or tf32 inputs (float32 weights only).
enum ProductPrecision : int { kFmaProducts = 0, kBf16Products = 1, kTf32Products = 2 };

constexpr int kMmaImages = 16;       // a tile's rows (wmma's M)
constexpr int kMmaChannels = 16;     // a tile's columns (wmma's N)
constexpr int kMmaWarpBytes = 2048;  // a warp's shared memory: A and B tiles (512 bytes each),
                                     // then its 16 x 16 float32 sums (1,024 bytes)

#if defined(PF_TENSOR_CORES)

template <int P>
struct MmaInputs;

template <>
struct MmaInputs<kBf16Products> {
  using Stored = __nv_bfloat16;  // what the shared tiles hold
  using Fragment = __nv_bfloat16;
  static constexpr int kChunk = 16;  // wmma's K
  __device__ static Stored round(float x) { return __float2bfloat16_rn(x); }
};

template <>
struct MmaInputs<kTf32Products> {
  using Stored = float;  // tf32 values: floats whose low 13 mantissa bits are zero
  using Fragment = nvcuda::wmma::precision::tf32;
  static constexpr int kChunk = 8;
  __device__ static Stored round(float x) { return nvcuda::wmma::__float_to_tf32(x); }
};

// One warp's part of one tile's products (see the top of this file).
template <int P>
struct MmaTile {
  using In = MmaInputs<P>;
  using Stored = typename In::Stored;
  static constexpr int kChunk = In::kChunk;

  Stored* a;    // [kMmaImages][kChunk]
  Stored* b;    // [kChunk][kMmaChannels]
  float* sums;  // [kMmaImages][kMmaChannels]
  int warp, warps, lane;
  int chunk = 0;  // the tile's chunks numbered so far
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, kMmaImages, kMmaChannels, kChunk, float> acc;

  __device__ MmaTile(unsigned char* shared, int warp_, int warps_, int lane_)
      : a(reinterpret_cast<Stored*>(shared + warp_ * kMmaWarpBytes)),
        b(reinterpret_cast<Stored*>(shared + warp_ * kMmaWarpBytes + 512)),
        sums(reinterpret_cast<float*>(shared + warp_ * kMmaWarpBytes + 1024)),
        warp(warp_),
        warps(warps_),
        lane(lane_) {
    nvcuda::wmma::fill_fragment(acc, 0.0f);
  }

  // acc += x[images, :k] . w[:k, c0 + (0..16)] over this warp's chunks: image r's k values at
  // x + r x_stride (r < images <= 16), weight row q at w + q w_stride; only the columns whose
  // channel c0 + c lies in [lo, hi) (lo >= c0, hi <= c0 + 16: within the weight's columns).
  __device__ void add(const float* x, int64_t x_stride, int64_t images, const float* w,
                      int64_t w_stride, int64_t c0, int64_t lo, int64_t hi, int64_t k) {
    using namespace nvcuda;
    for (int64_t q0 = 0; q0 < k; q0 += kChunk, ++chunk) {
      if (chunk % warps != warp) continue;  // warp-uniform: the whole warp skips or works
      for (int e = lane; e < kMmaImages * kChunk; e += 32) {
        const int64_t r = e / kChunk, q = q0 + e % kChunk;
        a[e] = In::round(r < images && q < k ? x[r * x_stride + q] : 0.0f);
      }
      for (int e = lane; e < kChunk * kMmaChannels; e += 32) {
        const int64_t q = q0 + e / kMmaChannels, t = c0 + e % kMmaChannels;
        b[e] = In::round(q < k && t >= lo && t < hi ? w[q * w_stride + t] : 0.0f);
      }
      __syncwarp();  // every lane's share of the tiles is in place
      wmma::fragment<wmma::matrix_a, kMmaImages, kMmaChannels, kChunk, typename In::Fragment,
                     wmma::row_major>
          fa;
      wmma::fragment<wmma::matrix_b, kMmaImages, kMmaChannels, kChunk, typename In::Fragment,
                     wmma::row_major>
          fb;
      wmma::load_matrix_sync(fa, a, kChunk);
      wmma::load_matrix_sync(fb, b, kMmaChannels);
      wmma::mma_sync(acc, fa, fb, acc);
      __syncwarp();  // every lane has loaded before the tiles are rewritten
    }
  }

  // The warp's sums into its shared [images][channels] (the block barrier after this makes them
  // visible to mma_tile_sum).
  __device__ void store() {
    nvcuda::wmma::store_matrix_sync(sums, acc, kMmaChannels, nvcuda::wmma::mem_row_major);
  }
};

// Image m's sum for tile column c: the warps' sums added in warp order.
__device__ inline float mma_tile_sum(const unsigned char* shared, int warps, int64_t m, int64_t c) {
  float sum = 0.0f;
  for (int w = 0; w < warps; ++w)
    sum += reinterpret_cast<const float*>(shared + w * kMmaWarpBytes + 1024)[m * kMmaChannels + c];
  return sum;
}

#endif  // PF_TENSOR_CORES

}  // namespace sampler
}  // namespace pixelfast
