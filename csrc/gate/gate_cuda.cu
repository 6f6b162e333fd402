// The CUDA registration of the gated activation: the op's checks (gate_cpu.cpp), then the kernels
// of gate_kernels.cuh on the current stream.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "gate_kernels.cuh"
#include "gate_op.h"

namespace pixelfast {
namespace gate {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
void launch(void (*kernel)(Args<T>), const Args<T>& args) {
  const int64_t n = out_elements(args.p);
  if (n == 0) return;
  kernel<<<blocks_for(n, kThreads, kMaxBlocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor forward_cuda(const at::Tensor& x_in, int64_t color_groups) {
  check_cuda_tensors("gated_activation", {{"input", &x_in}});
  const Params p = check_forward(x_in, color_groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = in_layout(x_in, p);
  at::Tensor out = empty_in_layout(x, p.channels, p);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_activation", [&] {
    launch(forward_kernel<scalar_t>, Args<scalar_t>{p, x.const_data_ptr<scalar_t>(), nullptr,
                                                    out.mutable_data_ptr<scalar_t>()});
  });
  return out;
}

at::Tensor backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                         int64_t color_groups) {
  check_cuda_tensors("gated_activation_backward", {{"input", &x_in}, {"grad_out", &grad_out_in}});
  const Params p = check_backward(grad_out_in, x_in, color_groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = in_layout(x_in, p);
  const at::Tensor grad_out = in_layout(grad_out_in, p);
  at::Tensor grad_x = empty_in_layout(x, 2 * p.channels, p);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_activation_backward", [&] {
    launch(backward_kernel<scalar_t>,
           Args<scalar_t>{p, x.const_data_ptr<scalar_t>(), grad_out.const_data_ptr<scalar_t>(),
                          grad_x.mutable_data_ptr<scalar_t>()});
  });
  return grad_x;
}

}  // namespace
}  // namespace gate
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CUDA, m) {
  m.impl("gated_activation", &pixelfast::gate::forward_cuda);
  m.impl("gated_activation_backward", &pixelfast::gate::backward_cuda);
}
