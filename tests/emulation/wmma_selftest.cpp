// A kernel that checks the emulated tensor-core subset (wmma_emulation.h) the way the engine uses
// it (csrc/sampler/engine_mma.cuh's rounding and tile shapes): one warp's lanes round a [16 x K]
// and a [K x 16] matrix into shared tiles, meet at __syncwarp, multiply them with wmma, store the
// product, meet again and copy it out. The test asks for the product of the rounded inputs, and
// for a wrong result or an error where the kernel breaks a rule: a __syncwarp left out, a
// misaligned tile, a warp that is not whole.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

// After every torch header: the emulation defines the CUDA built-ins as macros.
#include "cuda_emulation.h"
#include "sampler/engine_mma.cuh"

namespace {

using pixelfast::sampler::kBf16Products;
using pixelfast::sampler::kTf32Products;
using pixelfast::sampler::MmaInputs;

// Lanes below `active` run; the A tile sits `misalign` bytes past an aligned address; `sync`'s
// bit 0: the __syncwarp before the loads, bit 1: the one after the store.
template <int P>
__global__ void wmma_product_kernel(const float* a, const float* b, float* out, int sync,
                                    int misalign, unsigned active) {
  using In = MmaInputs<P>;
  using Stored = typename In::Stored;
  constexpr int K = In::kChunk;
  using namespace nvcuda;
  PF_DYNAMIC_SHARED(unsigned char, shared);
  Stored* ta = reinterpret_cast<Stored*>(shared + misalign);
  Stored* tb = reinterpret_cast<Stored*>(shared + 1024);
  float* to = reinterpret_cast<float*>(shared + 2048);
  if (threadIdx.x >= active) return;
  for (unsigned e = threadIdx.x; e < 16 * K; e += 32) ta[e] = In::round(a[e]);
  for (unsigned e = threadIdx.x; e < K * 16; e += 32) tb[e] = In::round(b[e]);
  if (sync & 1) __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, K, typename In::Fragment, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, K, typename In::Fragment, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, K, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, ta, K);
  wmma::load_matrix_sync(fb, tb, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(to, acc, 16, wmma::mem_row_major);
  if (sync & 2) __syncwarp();
  for (unsigned e = threadIdx.x; e < 256; e += 32) out[e] = to[e];
}

at::Tensor wmma_product(const at::Tensor& a, const at::Tensor& b, const std::string& precision,
                        int64_t sync, int64_t misalign, int64_t threads, int64_t active,
                        int64_t schedule, int64_t seed) {
  TORCH_CHECK(precision == "bf16" || precision == "tf32", "precision must be bf16 or tf32");
  const int64_t k = precision == "bf16" ? 16 : 8;
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
                  a.sizes() == at::IntArrayRef({16, k}) && b.sizes() == at::IntArrayRef({k, 16}),
              "a must be float32 [16, ", k, "] and b [", k, ", 16]");
  TORCH_CHECK(misalign >= 0 && misalign <= 128, "misalign must be in 0..128");
  at::Tensor out = at::empty({16, 16}, a.options());
  const pf_emu::ScheduleScope scope(static_cast<pf_emu::Schedule>(schedule),
                                    static_cast<uint64_t>(seed));
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  auto launch = [&](auto kernel) {
    pf_emu::launch(dim3(1), dim3(static_cast<unsigned>(threads)), 4096, kernel,
                   ac.const_data_ptr<float>(), bc.const_data_ptr<float>(),
                   out.mutable_data_ptr<float>(), static_cast<int>(sync),
                   static_cast<int>(misalign), static_cast<unsigned>(active));
  };
  if (precision == "bf16") {
    launch(wmma_product_kernel<kBf16Products>);
  } else {
    launch(wmma_product_kernel<kTf32Products>);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pixelfast_emulated, m) {
  m.def(
      "wmma_product(Tensor a, Tensor b, str precision, int sync, int misalign, int threads, int "
      "active, int schedule, int seed) -> Tensor");
  m.impl("wmma_product", c10::DispatchKey::CPU, &wmma_product);
}
