// CUDA registration of the masked convolution. The op is device-generic (masked_conv.cpp): its
// dense blocks run on cuDNN through ATen, so this file only selects the device. It is compiled by
// nvcc in every CUDA build so the CUDA side of the op can never rot unseen.
#include <initializer_list>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "masked_conv_op.h"

namespace pixelfast {
namespace masked_conv {
namespace {

// Every tensor argument of the CUDA kernel must be a CUDA tensor on the input's device. Checked
// (with the op's other argument checks) before the device guard, so a CPU tensor gets this message
// instead of c10's "Expected a CUDA device".
void check_on_cuda(const char* op, const at::Tensor& x,
                   std::initializer_list<std::pair<const char*, const at::Tensor*>> others) {
  TORCH_CHECK(x.is_cuda(), op, ": the CUDA kernel was called with the input on ", x.device(),
              "; every tensor must be a CUDA tensor (on one device)");
  for (const auto& [name, tensor] : others) {
    if (tensor == nullptr) continue;
    TORCH_CHECK(tensor->is_cuda() && tensor->device() == x.device(), op, ": ", name, " is on ",
                tensor->device(), " but the input is on ", x.device(),
                "; every tensor must be a CUDA tensor on the input's device");
  }
}

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                        int64_t color_groups) {
  check_on_cuda("masked_conv2d", x, {{"weight", &weight}, {"bias", bias ? &*bias : nullptr}});
  check_arguments(x, weight, bias, mask_type, color_groups);
  const c10::cuda::CUDAGuard guard(x.device());
  return forward(x, weight, bias, mask_type, color_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    c10::string_view mask_type, int64_t color_groups, std::array<bool, 2> output_mask) {
  check_on_cuda("masked_conv2d_backward", x, {{"grad_out", &grad_out}, {"weight", &weight}});
  check_arguments(x, weight, std::nullopt, mask_type, color_groups);
  const c10::cuda::CUDAGuard guard(x.device());
  return backward(grad_out, x, weight, mask_type, color_groups, output_mask);
}

}  // namespace
}  // namespace masked_conv
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CUDA, m) {
  m.impl("masked_conv2d", &pixelfast::masked_conv::forward_cuda);
  m.impl("masked_conv2d_backward", &pixelfast::masked_conv::backward_cuda);
}
