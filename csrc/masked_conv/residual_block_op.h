// The PixelCNN residual block as one op, device-generic: the CPU and CUDA registrations both call
// these (residual_block.cpp, masked_conv_cuda.cu).
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "../common/checks.h"

namespace pixelfast {
namespace residual_block {

// The forward's tensor arguments with their names in messages (null: an absent optional one), for
// the checks that list them (the op's own and the CUDA registration's).
inline std::array<Named, 8> named_arguments(const at::Tensor& x, const at::Tensor& w_in,
                                            const std::optional<at::Tensor>& b_in,
                                            const at::Tensor& w, const std::optional<at::Tensor>& b,
                                            const at::Tensor& w_out,
                                            const std::optional<at::Tensor>& b_out,
                                            const std::optional<at::Tensor>& image_bias) {
  const auto opt = [](const std::optional<at::Tensor>& t) { return t ? &*t : nullptr; };
  return {{{"input", &x},
           {"w_in", &w_in},
           {"b_in", opt(b_in)},
           {"w", &w},
           {"b", opt(b)},
           {"w_out", &w_out},
           {"b_out", opt(b_out)},
           {"image_bias", opt(image_bias)}}};
}

// The op's argument checks (shapes, dtypes, devices, colour groups), in the words of the Python
// API.
void check_arguments(const at::Tensor& x, const at::Tensor& w_in,
                     const std::optional<at::Tensor>& b_in, const at::Tensor& w,
                     const std::optional<at::Tensor>& b, const at::Tensor& w_out,
                     const std::optional<at::Tensor>& b_out,
                     const std::optional<at::Tensor>& image_bias, int64_t color_groups);

// (out, relu(x), hidden_in, hidden): the block's output and the three activations its backward
// reads, all channels-last. hidden is [B, hidden, H + k / 2, W]: the padded convolution's output
// (residual_block.cpp), whose spare rows past H are never read.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& x, const at::Tensor& w_in, const std::optional<at::Tensor>& b_in,
    const at::Tensor& w, const std::optional<at::Tensor>& b, const at::Tensor& w_out,
    const std::optional<at::Tensor>& b_out, const std::optional<at::Tensor>& image_bias,
    int64_t color_groups);

// The gradients of x, w_in, b_in, w, b, w_out, b_out and the image bias (an empty tensor when the
// block has none), from the forward's saved activations.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
backward(const at::Tensor& grad_out, const at::Tensor& relu_x, const at::Tensor& hidden_in,
         const at::Tensor& hidden, const at::Tensor& w_in, const at::Tensor& w,
         const at::Tensor& w_out, bool image_bias, int64_t color_groups);

}  // namespace residual_block
}  // namespace pixelfast
