// The masked convolution op, device-generic: the CPU and CUDA registrations both call these.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace pixelfast {
namespace masked_conv {

// The op's argument checks (shapes, dtypes, devices, mask type, colour groups): the only copy of
// its rules, raising the Python API's ValueError / TypeError. Forward and backward run them too;
// the CUDA registration calls them before it touches the device.
void check_arguments(const at::Tensor& x, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                     int64_t color_groups);

at::Tensor forward(const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                   int64_t color_groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    c10::string_view mask_type, int64_t color_groups, std::array<bool, 2> output_mask);

}  // namespace masked_conv
}  // namespace pixelfast
