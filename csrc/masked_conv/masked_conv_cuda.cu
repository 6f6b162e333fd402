// CUDA registration of the masked convolution. The op is device-generic (masked_conv.cpp): its
// dense blocks run on cuDNN through ATen, so this file only selects the device. Its checks are the
// op's own (check_arguments) and the CUDA kernels' shared rule (common/checks.h), both run before
// the device guard, so a tensor elsewhere gets the op's message instead of c10's. It is compiled by
// nvcc in every CUDA build so the CUDA side of the op can never rot unseen.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "masked_conv_op.h"

namespace pixelfast {
namespace masked_conv {
namespace {

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                        int64_t color_groups) {
  check_cuda_tensors("masked_conv2d",
                     {{"input", &x}, {"weight", &weight}, {"bias", bias ? &*bias : nullptr}});
  check_arguments(x, weight, bias, mask_type, color_groups);
  const c10::cuda::CUDAGuard guard(x.device());
  return forward(x, weight, bias, mask_type, color_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    c10::string_view mask_type, int64_t color_groups, std::array<bool, 2> output_mask) {
  check_cuda_tensors("masked_conv2d_backward",
                     {{"input", &x}, {"grad_out", &grad_out}, {"weight", &weight}});
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
