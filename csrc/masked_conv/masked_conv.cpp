// Masked convolution: argument checks and the block decomposition (masked_conv.h), device-generic.
//
// out = conv(x, W[top block]) + conv(x, W[left block]) + bias, then per colour group g
//   out[g] += W[g, :P_g, centre] . x[:P_g]   (P_g: the centre tap's input-channel prefix);
// for a 3x3 kernel (and a dense 1x1) out = conv(x, W[half block] * mask) + bias instead.
// Each block runs on the backend's best convolution (oneDNN / cuDNN), forward and backward, so
// the rows below the centre are never multiplied (nor, for 5x5 and up, any masked tap).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <array>
#include <string>

#include "../common/checks.h"
#include "masked_conv.h"
#include "masked_conv_op.h"

namespace pixelfast {
namespace masked_conv {
namespace {

// The op's argument rules (masked_conv_op.h), in the words of the Python API.
Params make_params(const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                   int64_t color_groups) {
  constexpr const char* op = "masked_conv2d";
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": input must be a 4-D tensor [B, C, H, W], got ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(2) == weight.size(3), op,
                    ": weight must be [out, in, k, k] with a square kernel, got ", weight.sizes());
  const int64_t k = weight.size(2);
  TORCH_CHECK_VALUE(k % 2 == 1 && k <= kMaxKernelSize, op, ": kernel size must be odd and in 1..",
                    kMaxKernelSize, ", got ", k);
  TORCH_CHECK_VALUE(mask_type == "A" || mask_type == "B", op,
                    ": mask_type must be 'A' or 'B', got '", std::string(mask_type), "'");
  check_color_groups(op, color_groups);
  check_floating(op, {"input", &x});
  check_one_dtype_and_device(
      op, {{"input", &x}, {"weight", &weight}, {"bias", bias.has_value() ? &*bias : nullptr}});
  const int64_t out_channels = weight.size(0), in_channels = weight.size(1);
  TORCH_CHECK_VALUE(out_channels >= 1 && in_channels >= 1, op,
                    ": weight must have at least one output and one input channel, got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(x.size(2) >= 1 && x.size(3) >= 1, op, ": input must have H, W >= 1, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(x.size(1) == in_channels, op, ": input has ", x.size(1),
                    " channels but the weight expects ", in_channels);
  TORCH_CHECK_VALUE(in_channels % color_groups == 0 && out_channels % color_groups == 0, op,
                    ": with color_groups=", color_groups, ", in_channels (", in_channels,
                    ") and out_channels (", out_channels, ") must be divisible by ", color_groups);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == out_channels, op,
                      ": bias must have shape (", out_channels, ",), got ", bias->sizes());
  }
  return Params{x.size(0), in_channels, out_channels, x.size(2),
                x.size(3), k,           color_groups, mask_type == "B"};
}

std::vector<int64_t> padding_of(Block block, int64_t k) {
  int64_t pad[4];
  block_padding(block, k, pad);
  return {pad[0], pad[1], pad[2], pad[3]};
}

// x zero-padded (negative: cropped) by `pad`; x itself when there is nothing to pad.
at::Tensor padded(const at::Tensor& x, const std::vector<int64_t>& pad) {
  for (int64_t amount : pad) {
    if (amount != 0) return at::constant_pad_nd(x, pad);
  }
  return x;
}

std::vector<int64_t> negated(std::vector<int64_t> pad) {
  for (auto& p : pad) p = -p;
  return pad;
}

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

at::Tensor block_weight(const at::Tensor& weight, Block block) {
  const BlockShape b = block_shape(block, weight.size(2));
  return weight.narrow(2, b.row0, b.rows).narrow(3, b.col0, b.cols).contiguous(kChannelsLast);
}

// Centre tap of output group g over its input prefix: [group_out, prefix].
at::Tensor centre_weight(const at::Tensor& weight, const Params& p, int64_t g, int64_t prefix) {
  const int64_t c = p.kernel_size / 2;
  const int64_t group_out = p.out_channels / p.color_groups;
  return weight.narrow(0, g * group_out, group_out).narrow(1, 0, prefix).select(3, c).select(2, c);
}

// Zeroes, in a kHalf-shaped tensor ([out, in, c + 1, k]: the weight's half block or its
// gradient), the taps the mask leaves out, whatever they hold (a NaN there stays out): the centre
// row right of the centre, and the centre tap's input channels past each output group's prefix.
void zero_masked_taps(const at::Tensor& half, const Params& p) {
  const int64_t k = p.kernel_size, c = k / 2;
  const int64_t group_out = p.out_channels / p.color_groups;
  const at::Tensor centre_row = half.select(2, c);  // [out, in, k]
  if (k - c - 1 > 0) centre_row.narrow(2, c + 1, k - c - 1).zero_();
  for (int64_t g = 0; g < p.color_groups; ++g) {
    const int64_t prefix = centre_prefix(p.in_channels, p.color_groups, p.mask_b, g);
    if (prefix == p.in_channels) continue;
    centre_row.narrow(0, g * group_out, group_out)
        .narrow(1, prefix, p.in_channels - prefix)
        .select(2, c)
        .zero_();
  }
}

// kHalf's weight with the masked taps zeroed: a copy, or the weight itself where nothing is
// masked (a dense 1x1).
at::Tensor half_block_weight(const at::Tensor& weight, const Params& p) {
  if (p.kernel_size == 1) return block_weight(weight, kHalf);  // single_block: one group, mask B
  return half_weight(weight, p.color_groups, p.mask_b);
}

// Params of the weight alone (no input shapes): what the tap rules need.
Params weight_params(const at::Tensor& weight, int64_t color_groups, bool mask_b) {
  return Params{0, weight.size(1), weight.size(0), 0, 0, weight.size(3), color_groups, mask_b};
}

at::Tensor valid_conv(const at::Tensor& x, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias) {
  return at::convolution(x, weight, bias, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1);
}

}  // namespace

at::Tensor half_weight(const at::Tensor& weight, int64_t color_groups, bool mask_b) {
  at::Tensor half = weight.narrow(2, 0, weight.size(2) / 2 + 1).clone(kChannelsLast);
  zero_masked_taps(half, weight_params(weight, color_groups, mask_b));
  return half;
}

void zero_half_masked_taps(const at::Tensor& half, int64_t color_groups, bool mask_b) {
  zero_masked_taps(half, weight_params(half, color_groups, mask_b));
}

// The blocks run in channels-last layout: oneDNN (and cuDNN) are markedly faster there, above all
// backward, and the centre tap becomes a plain strided GEMM over [pixels, channels] with no copy.
// The output and the input gradient stay channels-last, so a stack of masked convolutions never
// converts layouts between layers.
at::Tensor forward(const at::Tensor& x_in, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                   int64_t color_groups) {
  const Params p = make_params(x_in, weight, bias, mask_type, color_groups);
  const int64_t k = p.kernel_size;
  const int64_t group_out = p.out_channels / p.color_groups;
  const at::Tensor x = x_in.contiguous(kChannelsLast);
  at::Tensor out;
  if (single_block(k, p.color_groups, p.mask_b)) {
    const at::Tensor w = half_block_weight(weight, p);
    return valid_conv(padded(x, padding_of(kHalf, k)), w, bias).contiguous(kChannelsLast);
  }
  if (k > 1) {
    out = valid_conv(at::constant_pad_nd(x, padding_of(kTop, k)), block_weight(weight, kTop), bias)
              .contiguous(kChannelsLast);
    out.add_(valid_conv(at::constant_pad_nd(x, padding_of(kLeft, k)), block_weight(weight, kLeft),
                        std::nullopt));
  } else {
    out = at::empty({p.batch, p.out_channels, p.height, p.width},
                    x.options().memory_format(kChannelsLast));
    if (bias.has_value()) {
      out.copy_(bias->view({1, p.out_channels, 1, 1}).expand_as(out));
    } else {
      out.zero_();
    }
  }
  const at::Tensor x_matrix = pixel_matrix(x);
  at::Tensor out_matrix = pixel_matrix(out);
  for (int64_t g = 0; g < p.color_groups; ++g) {
    const int64_t prefix = centre_prefix(p.in_channels, p.color_groups, p.mask_b, g);
    if (prefix == 0) continue;
    out_matrix.narrow(1, g * group_out, group_out)
        .addmm_(x_matrix.narrow(1, 0, prefix), centre_weight(weight, p, g, prefix).t());
  }
  return out;  // channels-last, like a convolution of a channels-last input
}

void check_arguments(const at::Tensor& x, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, c10::string_view mask_type,
                     int64_t color_groups) {
  make_params(x, weight, bias, mask_type, color_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& weight,
    c10::string_view mask_type, int64_t color_groups, std::array<bool, 2> output_mask) {
  const Params p = make_params(x_in, weight, std::nullopt, mask_type, color_groups);
  TORCH_CHECK(grad_out_in.dim() == 4 && grad_out_in.size(0) == p.batch &&
                  grad_out_in.size(1) == p.out_channels && grad_out_in.size(2) == p.height &&
                  grad_out_in.size(3) == p.width,
              "masked_conv2d_backward: grad_out has shape ", grad_out_in.sizes(),
              ", expected the output's shape");
  TORCH_CHECK(
      grad_out_in.scalar_type() == x_in.scalar_type() && grad_out_in.device() == x_in.device(),
      "masked_conv2d_backward: grad_out must match the input's dtype and device");
  const int64_t k = p.kernel_size;
  const int64_t c = k / 2;
  const int64_t group_out = p.out_channels / p.color_groups;
  const at::Tensor x = x_in.contiguous(kChannelsLast);
  const at::Tensor grad_out = grad_out_in.contiguous(kChannelsLast);
  // An unrequested gradient (the data layer's input, a frozen weight) is not computed; it comes
  // back as zeros so the op's outputs always have the same shapes.
  const bool want_x = output_mask[0], want_w = output_mask[1];
  const std::array<bool, 3> want{want_x, want_w, false};

  // The input's gradient starts as the first part computed (no zero-filled tensor to add it to),
  // or as zeros where the only parts, the centre products, may not cover every channel (1x1).
  at::Tensor grad_x;
  // Every masked entry keeps an exact zero gradient: only the blocks below are written.
  at::Tensor grad_weight = at::zeros_like(weight, at::MemoryFormat::Contiguous);
  if (single_block(k, p.color_groups, p.mask_b)) {
    const auto pad = padding_of(kHalf, k);
    const at::Tensor w = half_block_weight(weight, p);
    // The bias gradient too: the backend sums grad_out in the same pass (a separate sum over it
    // cost as much again at 16 channels).
    const int64_t bias_size = p.out_channels;
    auto grads =
        at::convolution_backward(grad_out, padded(x, pad), w, at::IntArrayRef(bias_size), {1, 1},
                                 {0, 0}, {1, 1}, false, {0, 0}, 1, {want_x, want_w, true});
    grad_x = want_x ? padded(std::get<0>(grads), negated(pad)).contiguous(kChannelsLast)
                    : at::zeros_like(x, kChannelsLast);
    if (want_w) {
      // Only the used taps' gradients: the masked taps' stay exactly zero.
      const BlockShape b = block_shape(kHalf, k);
      const at::Tensor half = grad_weight.narrow(2, b.row0, b.rows);
      half.copy_(std::get<1>(grads));
      zero_masked_taps(half, p);
    }
    return {grad_x, grad_weight, std::get<2>(grads)};
  }
  if (k > 1 && (want_x || want_w)) {
    for (Block block : {kTop, kLeft}) {
      const auto pad = padding_of(block, k);
      auto grads = at::convolution_backward(grad_out, at::constant_pad_nd(x, pad),
                                            block_weight(weight, block), std::nullopt, {1, 1},
                                            {0, 0}, {1, 1}, false, {0, 0}, 1, want);
      if (want_x) {
        at::Tensor part = at::constant_pad_nd(std::get<0>(grads), negated(pad));
        if (grad_x.defined()) {
          grad_x.add_(part);
        } else {
          grad_x = part.contiguous(kChannelsLast);
        }
      }
      const BlockShape b = block_shape(block, k);
      if (want_w) {
        grad_weight.narrow(2, b.row0, b.rows).narrow(3, b.col0, b.cols).copy_(std::get<1>(grads));
      }
    }
  }
  const at::Tensor x_matrix = pixel_matrix(x);
  const at::Tensor go_matrix = pixel_matrix(grad_out);
  if (!grad_x.defined()) grad_x = at::zeros_like(x, kChannelsLast);
  at::Tensor gx_matrix = pixel_matrix(grad_x);
  for (int64_t g = 0; g < p.color_groups; ++g) {
    const int64_t prefix = centre_prefix(p.in_channels, p.color_groups, p.mask_b, g);
    if (prefix == 0) continue;
    const at::Tensor go_g = go_matrix.narrow(1, g * group_out, group_out);
    if (want_x) gx_matrix.narrow(1, 0, prefix).addmm_(go_g, centre_weight(weight, p, g, prefix));
    if (want_w) {
      grad_weight.narrow(0, g * group_out, group_out)
          .narrow(1, 0, prefix)
          .select(3, c)
          .select(2, c)
          .copy_(go_g.t().mm(x_matrix.narrow(1, 0, prefix)));
    }
  }
  return {grad_x, grad_weight, grad_out_in.sum({0, 2, 3})};
}

}  // namespace masked_conv
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("masked_conv2d", &pixelfast::masked_conv::forward);
  m.impl("masked_conv2d_backward", &pixelfast::masked_conv::backward);
}
