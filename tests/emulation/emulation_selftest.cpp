// Small kernels that check the CUDA emulation itself: that a missing __syncthreads (or cluster
// barrier) changes the result under some schedule, that warp shuffles and dynamic shared memory
// behave as on a GPU, and that a barrier in divergent code is an error, not a hang.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full_like.h>
#include <torch/library.h>

// After every torch header: the emulation defines the CUDA built-ins as macros.
#include "cuda_emulation.h"
#include "common/host_device.h"

namespace {

// Block b sums x[b * blockDim, (b + 1) * blockDim) through shared memory; thread 0 adds up.
__global__ void block_sum_kernel(const double* x, double* out, bool barrier) {
  PF_DYNAMIC_SHARED(double, partial);
  partial[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  if (barrier) __syncthreads();
  if (threadIdx.x == 0) {
    double sum = 0;
    for (unsigned t = 0; t < blockDim.x; ++t) sum += partial[t];
    out[blockIdx.x] = sum;
  }
}

// Each warp's sum by a shuffle-down tree, written by its lane 0.
__global__ void warp_sum_kernel(const double* x, double* out) {
  double v = x[threadIdx.x];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

// Each block of a cluster writes its threads' values to global memory; after the cluster barrier,
// thread 0 of the cluster's first block adds up the cluster's values.
__global__ void cluster_sum_kernel(const double* x, double* staged, double* out, bool barrier) {
  const unsigned blocks = ::pf_emu::cluster_blocks();
  const int64_t cluster = blockIdx.x / blocks;
  const int64_t span = int64_t(blocks) * blockDim.x;
  const int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  staged[index] = x[index];
  if (barrier) ::pf_emu::cluster_sync();
  if (::pf_emu::cluster_rank() == 0 && threadIdx.x == 0) {
    double sum = 0;
    for (int64_t t = 0; t < span; ++t) sum += staged[cluster * span + t];
    out[cluster] = sum;
  }
}

// Blocks of rank below `reach` wait at a cluster barrier the others never reach.
__global__ void divergent_cluster_barrier_kernel(double* out, unsigned reach) {
  if (::pf_emu::cluster_rank() < reach) ::pf_emu::cluster_sync();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

// A warp sum over a full mask where something is wrong with the warp: mode 0, lane 0 has exited;
// mode 1, odd lanes shuffle once more than even ones (which exit while those wait); the launch also
// runs blocks that are not whole warps (mode 2: every lane shuffles).
__global__ void broken_shuffle_kernel(double* out, int mode) {
  if (mode == 0 && threadIdx.x == 0) return;
  double v = 1;
  if (mode == 1 && threadIdx.x % 2 == 1) v += __shfl_xor_sync(0xffffffffu, v, 2);
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

// Threads below `reach` wait at a barrier the others never reach.
__global__ void divergent_barrier_kernel(double* out, unsigned reach) {
  if (threadIdx.x < reach) __syncthreads();
  out[threadIdx.x] = 1;
}

at::Tensor block_sum(const at::Tensor& x, int64_t threads, bool barrier, int64_t schedule,
                     int64_t seed) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kDouble && x.numel() % threads == 0,
              "x must be float64 of a multiple of threads values");
  at::Tensor out = at::empty({x.numel() / threads}, x.options());
  const pf_emu::ScheduleScope scope(static_cast<pf_emu::Schedule>(schedule),
                                    static_cast<uint64_t>(seed));
  pf_emu::launch(dim3(static_cast<unsigned>(out.numel())), dim3(static_cast<unsigned>(threads)),
                 threads * sizeof(double), block_sum_kernel,
                 x.contiguous().const_data_ptr<double>(), out.mutable_data_ptr<double>(), barrier);
  return out;
}

at::Tensor warp_sum(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kDouble && x.numel() % 32 == 0,
              "x must be float64 of whole warps");
  at::Tensor out = at::empty({x.numel() / 32}, x.options());
  pf_emu::launch(dim3(1), dim3(static_cast<unsigned>(x.numel())), 0, warp_sum_kernel,
                 x.contiguous().const_data_ptr<double>(), out.mutable_data_ptr<double>());
  return out;
}

void divergent_barrier(int64_t threads, int64_t reach) {
  at::Tensor out = at::empty({threads}, at::kDouble);
  pf_emu::launch(dim3(1), dim3(static_cast<unsigned>(threads)), 0, divergent_barrier_kernel,
                 out.mutable_data_ptr<double>(), static_cast<unsigned>(reach));
}

at::Tensor cluster_sum(const at::Tensor& x, int64_t threads, int64_t cluster_blocks, bool barrier,
                       int64_t schedule, int64_t seed) {
  TORCH_CHECK(
      x.dim() == 1 && x.scalar_type() == at::kDouble && x.numel() % (threads * cluster_blocks) == 0,
      "x must be float64 of a multiple of threads * cluster_blocks values");
  at::Tensor out = at::empty({x.numel() / (threads * cluster_blocks)}, x.options());
  at::Tensor staged = at::full_like(x, -1e300);
  const pf_emu::ScheduleScope scope(static_cast<pf_emu::Schedule>(schedule),
                                    static_cast<uint64_t>(seed));
  pf_emu::launch_clusters(
      dim3(static_cast<unsigned>(x.numel() / threads)), dim3(static_cast<unsigned>(threads)),
      static_cast<unsigned>(cluster_blocks), 0, cluster_sum_kernel,
      x.contiguous().const_data_ptr<double>(), staged.mutable_data_ptr<double>(),
      out.mutable_data_ptr<double>(), barrier);
  return out;
}

void divergent_cluster_barrier(int64_t threads, int64_t cluster_blocks, int64_t reach) {
  at::Tensor out = at::empty({threads * cluster_blocks}, at::kDouble);
  pf_emu::launch_clusters(
      dim3(static_cast<unsigned>(cluster_blocks)), dim3(static_cast<unsigned>(threads)),
      static_cast<unsigned>(cluster_blocks), 0, divergent_cluster_barrier_kernel,
      out.mutable_data_ptr<double>(), static_cast<unsigned>(reach));
}

void broken_shuffle(int64_t threads, int64_t mode) {
  at::Tensor out = at::empty({threads}, at::kDouble);
  pf_emu::launch(dim3(1), dim3(static_cast<unsigned>(threads)), 0, broken_shuffle_kernel,
                 out.mutable_data_ptr<double>(), static_cast<int>(mode));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pixelfast_emulated, m) {
  m.def("block_sum(Tensor x, int threads, bool barrier, int schedule, int seed) -> Tensor");
  m.def("warp_sum(Tensor x) -> Tensor");
  m.def("divergent_barrier(int threads, int reach) -> ()");
  m.impl("block_sum", c10::DispatchKey::CPU, &block_sum);
  m.impl("warp_sum", c10::DispatchKey::CPU, &warp_sum);
  m.impl("divergent_barrier", c10::DispatchKey::CompositeExplicitAutograd, &divergent_barrier);
  m.def(
      "cluster_sum(Tensor x, int threads, int cluster_blocks, bool barrier, int schedule, int "
      "seed) "
      "-> Tensor");
  m.def("divergent_cluster_barrier(int threads, int cluster_blocks, int reach) -> ()");
  m.def("broken_shuffle(int threads, int mode) -> ()");
  m.impl("broken_shuffle", c10::DispatchKey::CompositeExplicitAutograd, &broken_shuffle);
  m.impl("cluster_sum", c10::DispatchKey::CPU, &cluster_sum);
  m.impl("divergent_cluster_barrier", c10::DispatchKey::CompositeExplicitAutograd,
         &divergent_cluster_barrier);
}
