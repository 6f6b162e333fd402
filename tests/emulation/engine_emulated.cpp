// The sampling engine's CUDA kernel (csrc/sampler/engine_kernel.cuh), run on the CPU under the
// CUDA emulation: the op pixelfast_emulated::sample_cached takes the CPU op's arguments plus the
// launch shape (threads per block, blocks per cluster, images per cluster), the emulated schedule
// and the products' precision ("fp32", or "bf16" / "tf32" on emulated tensor cores), and launches
// the kernel as engine_cuda.cu does.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "sampler/engine.h"

// After every torch header: the emulation defines the CUDA built-ins as macros.
#include "cuda_emulation.h"
#include "sampler/engine_launch.h"

namespace pixelfast {
namespace sampler {
namespace {

std::tuple<at::Tensor, at::Tensor> sample_cached_emulated(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits, const std::optional<at::Tensor>& condition, int64_t threads,
    int64_t cluster_blocks, int64_t tile, int64_t schedule, int64_t seed,
    const std::string& precision_name) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, "threads must be in 1..1024, got ", threads);
  TORCH_CHECK(cluster_blocks >= 1 && cluster_blocks <= 16, "cluster_blocks must be in 1..16, got ",
              cluster_blocks);
  TORCH_CHECK(tile >= 1, "tile must be >= 1, got ", tile);
  const Precision precision = parse_precision(precision_name, weights[0]);
  TORCH_CHECK(precision == Precision::kFp32 || threads % 32 == 0, "precision '", precision_name,
              "' runs on tensor cores: threads must be whole warps, got ", threads);
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits, condition);
  if (p.empty()) return {p.out, p.logits};
  const int64_t batch = p.image.size(0);
  const KernelWorkspace work = kernel_workspace(p);
  const pf_emu::ScheduleScope scope(static_cast<pf_emu::Schedule>(schedule),
                                    static_cast<uint64_t>(seed));
  const int64_t clusters = (batch + tile - 1) / tile;
  with_engine_kernel(
      p, weights, precision, threads, [&](auto kernel, const auto& view, size_t shared_bytes) {
        pf_emu::launch_clusters(dim3(static_cast<unsigned>(clusters * cluster_blocks)),
                                dim3(static_cast<unsigned>(threads)),
                                static_cast<unsigned>(cluster_blocks), shared_bytes, kernel, view,
                                batch, tile, work.scratch.mutable_data_ptr<double>(), work.stride,
                                work.error.mutable_data_ptr<int>());
      });
  check_kernel_error(work);
  return {p.out, p.logits};
}

}  // namespace
}  // namespace sampler
}  // namespace pixelfast

TORCH_LIBRARY_FRAGMENT(pixelfast_emulated, m) {
  m.def(
      "sample_cached(Tensor[] weights, int[] buffers, int[] program, Tensor image, Tensor known, "
      "Tensor uniforms, Tensor? labels, float temperature, int levels, bool record_logits, "
      "Tensor? condition, int threads, int cluster_blocks, int tile, int schedule, int seed, "
      "str precision=\"fp32\") -> (Tensor, Tensor)");
  m.impl("sample_cached", c10::DispatchKey::CPU, &pixelfast::sampler::sample_cached_emulated);
}
