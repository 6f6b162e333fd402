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

// The weight's rows [0, c] (the centre row and those above: [out, in, c + 1, k], channels-last)
// with the taps the mask leaves out zeroed, a copy: one convolution with it, padded by c on every
// side, gives the masked convolution in the first H of its H + c output rows.
at::Tensor half_weight(const at::Tensor& weight, int64_t color_groups, bool mask_b);

// Zeroes the masked taps of a tensor shaped like half_weight's (its gradient).
void zero_half_masked_taps(const at::Tensor& half, int64_t color_groups, bool mask_b);

// A channels-last [B, C, H, W] tensor seen as the matrix [B * H * W, C] (a view): a 1x1
// convolution is then one matrix product.
inline at::Tensor pixel_matrix(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).view({-1, t.size(1)});
}

}  // namespace masked_conv
}  // namespace pixelfast
