// The LSTM scans' CUDA kernels (csrc/lstm/lstm_kernels.cuh) run on the CPU under the emulation:
// ops `pixelfast_emulated::row_lstm` etc. run the same drivers as pixelfast's CPU and CUDA ops
// (lstm_scan.cpp) with a Kernels table whose entries launch the .cuh kernels on CPU tensors, with
// `threads` per block, in clusters of `cluster_blocks` blocks each owning `tile` images, in the
// emulated schedule `schedule` (0 forward, 1 reverse, 2 random from `seed`).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "cuda_emulation.h"
#include "lstm/lstm_kernels.cuh"

#include "lstm/lstm_backend.h"
#include "lstm/lstm_op.h"

namespace pixelfast {
namespace lstm {
namespace {

// The launch shape of the op being run (the Kernels table holds plain function pointers).
struct LaunchShape {
  int64_t threads = 256, cluster_blocks = 1, tile = 1;
  pf_emu::Schedule schedule = pf_emu::kForward;
  uint64_t seed = 0;
};
thread_local LaunchShape launch_shape;

// The CUDA backend of lstm_cuda.cu, launched by the emulation.
struct EmulatedBackend : ScanLaunches<EmulatedBackend> {
  static at::Tensor channels_last(const at::Tensor& t) {
    return t.contiguous(at::MemoryFormat::ChannelsLast);
  }
  template <typename T>
  static void launch(void (*kernel)(ScanParams<T>), ScanParams<T>& a) {
    if (a.step.batch == 0) return;  // no images: nothing to launch
    LaunchShape& l = launch_shape;
    a.tile = l.tile;
    const int64_t clusters = (a.step.batch + l.tile - 1) / l.tile;
    // Each launch of a random schedule draws its own permutations.
    const pf_emu::ScheduleScope scope(l.schedule, l.seed++);
    pf_emu::launch_clusters(dim3(static_cast<unsigned>(clusters * l.cluster_blocks)),
                            dim3(static_cast<unsigned>(l.threads)),
                            static_cast<unsigned>(l.cluster_blocks), 0, kernel, a);
  }
};

// Runs `driver` with the emulated kernels under the given launch shape.
template <typename Driver, typename... Args>
auto run(int64_t threads, int64_t cluster_blocks, int64_t tile, int64_t schedule, int64_t seed,
         Driver driver, const Args&... args) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, "threads must be in [1, 1024], got ", threads);
  TORCH_CHECK(cluster_blocks >= 1 && cluster_blocks <= 16,
              "cluster_blocks must be in [1, 16], got ", cluster_blocks);
  TORCH_CHECK(tile >= 1, "tile must be >= 1, got ", tile);
  TORCH_CHECK(schedule >= 0 && schedule <= 2, "schedule must be 0, 1 or 2, got ", schedule);
  static const Kernels kernels = make_scan_kernels<EmulatedBackend>();
  launch_shape = LaunchShape{threads, cluster_blocks, tile, static_cast<pf_emu::Schedule>(schedule),
                             static_cast<uint64_t>(seed)};
  return driver(kernels, args...);
}

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Result row_forward_emulated(const at::Tensor& gates, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t groups, int64_t threads,
                            int64_t cluster_blocks, int64_t tile, int64_t schedule, int64_t seed) {
  return run(threads, cluster_blocks, tile, schedule, seed, row_forward, gates, weight, bias,
             groups);
}

Result row_backward_emulated(const at::Tensor& grad_h, const at::Tensor& weight,
                             const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts,
                             int64_t groups, int64_t threads, int64_t cluster_blocks, int64_t tile,
                             int64_t schedule, int64_t seed) {
  return run(threads, cluster_blocks, tile, schedule, seed, row_backward, grad_h, weight, h, c,
             acts, groups);
}

Result diagonal_forward_emulated(const at::Tensor& gates, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, int64_t groups,
                                 int64_t threads, int64_t cluster_blocks, int64_t tile,
                                 int64_t schedule, int64_t seed) {
  return run(threads, cluster_blocks, tile, schedule, seed, diagonal_forward, gates, weight, bias,
             groups);
}

Result diagonal_backward_emulated(const at::Tensor& grad_h, const at::Tensor& weight,
                                  const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts,
                                  int64_t groups, int64_t threads, int64_t cluster_blocks,
                                  int64_t tile, int64_t schedule, int64_t seed) {
  return run(threads, cluster_blocks, tile, schedule, seed, diagonal_backward, grad_h, weight, h, c,
             acts, groups);
}

}  // namespace
}  // namespace lstm
}  // namespace pixelfast

// The real ops' schemas (csrc/pixelfast.cpp) plus the launch shape.
#define PF_LAUNCH \
  "int threads, int cluster_blocks, int tile, int schedule, int seed) -> (Tensor, Tensor, Tensor)"

TORCH_LIBRARY_FRAGMENT(pixelfast_emulated, m) {
  m.def("row_lstm(Tensor gates, Tensor weight, Tensor? bias, int color_groups, " PF_LAUNCH,
        &pixelfast::lstm::row_forward_emulated);
  m.def(
      "row_lstm_backward(Tensor grad_h, Tensor weight, Tensor h, Tensor c, Tensor acts, "
      "int color_groups, " PF_LAUNCH,
      &pixelfast::lstm::row_backward_emulated);
  m.def("diagonal_lstm(Tensor gates, Tensor weight, Tensor? bias, int color_groups, " PF_LAUNCH,
        &pixelfast::lstm::diagonal_forward_emulated);
  m.def(
      "diagonal_lstm_backward(Tensor grad_h, Tensor weight, Tensor h, Tensor c, Tensor acts, "
      "int color_groups, " PF_LAUNCH,
      &pixelfast::lstm::diagonal_backward_emulated);
}
