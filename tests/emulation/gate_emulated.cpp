// The gated activation's CUDA kernels (csrc/gate/gate_kernels.cuh) run on the CPU under the
// emulation: ops `pixelfast_emulated::gated_activation` and `gated_activation_backward` take the
// real ops' arguments (inputs already checked by the tests) plus the launch shape, and launch the
// kernels as gate_cuda.cu does, with `threads` per block and at most `max_blocks` blocks.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

// After every torch header: the emulation defines the CUDA built-ins as macros.
#include "cuda_emulation.h"
#include "gate/gate_kernels.cuh"

namespace pixelfast {
namespace gate {
namespace {

// The real op's layout rule (csrc/gate/gate_op.h).
at::MemoryFormat format_of(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

template <typename T>
void launch(void (*kernel)(Args<T>), const Args<T>& args, int64_t threads, int64_t max_blocks,
            int64_t schedule, int64_t seed) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, "threads must be in [1, 1024], got ", threads);
  TORCH_CHECK(max_blocks >= 1, "max_blocks must be >= 1, got ", max_blocks);
  const int64_t n = out_elements(args.p);
  if (n == 0) return;
  const pf_emu::ScheduleScope scope(static_cast<pf_emu::Schedule>(schedule),
                                    static_cast<uint64_t>(seed));
  pf_emu::launch(dim3(static_cast<unsigned>(blocks_for(n, threads, max_blocks))),
                 dim3(static_cast<unsigned>(threads)), 0, kernel, args);
}

Params params_of(const at::Tensor& x, int64_t groups) {
  return Params{x.size(0), x.size(1) / 2, groups, x.size(2) * x.size(3),
                format_of(x) == at::MemoryFormat::ChannelsLast};
}

at::Tensor forward_emulated(const at::Tensor& x_in, int64_t groups, int64_t threads,
                            int64_t max_blocks, int64_t schedule, int64_t seed) {
  const at::Tensor x = x_in.contiguous(format_of(x_in));
  const Params p = params_of(x, groups);
  at::Tensor out = at::empty({x.size(0), p.channels, x.size(2), x.size(3)},
                             x.options().memory_format(format_of(x)));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_activation_emulated", [&] {
    launch(
        forward_kernel<scalar_t>,
        Args<scalar_t>{p, x.const_data_ptr<scalar_t>(), nullptr, out.mutable_data_ptr<scalar_t>()},
        threads, max_blocks, schedule, seed);
  });
  return out;
}

at::Tensor backward_emulated(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t groups,
                             int64_t threads, int64_t max_blocks, int64_t schedule, int64_t seed) {
  const at::Tensor x = x_in.contiguous(format_of(x_in));
  const at::Tensor grad = grad_in.contiguous(format_of(x));
  const Params p = params_of(x, groups);
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format_of(x)));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_activation_backward_emulated", [&] {
    launch(backward_kernel<scalar_t>,
           Args<scalar_t>{p, x.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
                          grad_x.mutable_data_ptr<scalar_t>()},
           threads, max_blocks, schedule, seed);
  });
  return grad_x;
}

}  // namespace
}  // namespace gate
}  // namespace pixelfast

TORCH_LIBRARY_FRAGMENT(pixelfast_emulated, m) {
  m.def(
      "gated_activation(Tensor x, int color_groups, int threads, int max_blocks, int schedule, "
      "int seed) -> Tensor",
      &pixelfast::gate::forward_emulated);
  m.def(
      "gated_activation_backward(Tensor grad_out, Tensor x, int color_groups, int threads, "
      "int max_blocks, int schedule, int seed) -> Tensor",
      &pixelfast::gate::backward_emulated);
}
