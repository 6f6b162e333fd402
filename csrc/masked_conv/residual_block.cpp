// The PixelCNN residual block (ResidualBlock, pixelfast/nn/residual.py) as one op, device-generic:
//
//   out = x + W_out . relu(conv_k(relu(W_in . relu(x) + b_in)) + b + image_bias) + b_out
//
// W_in and W_out are 1x1 mask-B convolutions (dense for one colour group), conv_k the k x k mask-B
// masked convolution (masked_conv.cpp). Written as eight autograd nodes (three convolutions, three
// ReLUs, a bias and the sum) a block of 16-32 channels spends more time in passes over memory and
// per-op overhead than in products; here the 1x1s are single matrix products over the pixels
// (channels-last, so no copies), the k x k one pads inside the convolution (no padded copies), the
// ReLUs run in place, the sum goes into the last product's accumulator, and the backward is one
// call.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/threshold_backward.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <string>
#include <utility>

#include "../common/checks.h"
#include "masked_conv.h"
#include "masked_conv_op.h"
#include "residual_block_op.h"

namespace pixelfast {
namespace residual_block {
namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

// One small params struct per op.
struct Params {
  int64_t batch, channels, hidden, height, width, kernel_size, color_groups;
};

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 std::initializer_list<int64_t> want) {
  TORCH_CHECK_VALUE(t.sizes().equals(want), op, ": ", name, " must have shape ",
                    c10::IntArrayRef(want), ", got ", t.sizes());
}

Params make_params(const at::Tensor& x, const at::Tensor& w_in,
                   const std::optional<at::Tensor>& b_in, const at::Tensor& w,
                   const std::optional<at::Tensor>& b, const at::Tensor& w_out,
                   const std::optional<at::Tensor>& b_out,
                   const std::optional<at::Tensor>& image_bias, int64_t color_groups) {
  constexpr const char* op = "residual_block";
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": input must be a 4-D tensor [B, C, H, W], got ", x.sizes());
  check_color_groups(op, color_groups);
  check_floating(op, {"input", &x});
  check_one_dtype_and_device(op, named_arguments(x, w_in, b_in, w, b, w_out, b_out, image_bias));
  TORCH_CHECK_VALUE(
      w.dim() == 4 && w.size(0) >= 1 && w.size(0) == w.size(1) && w.size(2) == w.size(3), op,
      ": w must be [hidden, hidden, k, k] with hidden >= 1, got ", w.sizes());
  const int64_t k = w.size(2), channels = x.size(1), hidden = w.size(0);
  TORCH_CHECK_VALUE(k % 2 == 1 && k <= masked_conv::kMaxKernelSize, op,
                    ": kernel size must be odd and in 1..", masked_conv::kMaxKernelSize, ", got ",
                    k);
  TORCH_CHECK_VALUE(channels >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
                    ": input must have C, H, W >= 1, got shape ", x.sizes());
  check_shape(op, "w_in", w_in, {hidden, channels, 1, 1});
  check_shape(op, "w_out", w_out, {channels, hidden, 1, 1});
  if (b_in) check_shape(op, "b_in", *b_in, {hidden});
  if (b) check_shape(op, "b", *b, {hidden});
  if (b_out) check_shape(op, "b_out", *b_out, {channels});
  if (image_bias) check_shape(op, "image_bias", *image_bias, {x.size(0), hidden});
  TORCH_CHECK_VALUE(channels % color_groups == 0 && hidden % color_groups == 0, op,
                    ": with color_groups=", color_groups, ", the input's channels (", channels,
                    ") and the hidden channels (", hidden, ") must be divisible by ", color_groups);
  return Params{x.size(0), channels, hidden, x.size(2), x.size(3), k, color_groups};
}

using masked_conv::pixel_matrix;

// A new channels-last [B, channels, H, W] tensor. The op's outputs are such tensors, written
// through their pixel matrices, never views of a matrix: autograd would treat a view as one and
// refuse in-place changes of the block's output.
at::Tensor new_image(const at::Tensor& like, const Params& p, int64_t channels) {
  return at::empty({p.batch, channels, p.height, p.width},
                   like.options().memory_format(kChannelsLast));
}

// A 1x1 mask-B weight [out, in, 1, 1] as the matrix [out, in] it multiplies with: a view for one
// colour group (nothing masked), else masked_conv's half weight (for a 1x1, the whole kernel) with
// the colour groups' masked entries zeroed, a copy (a NaN there stays out).
at::Tensor pointwise_matrix(const at::Tensor& weight, int64_t color_groups) {
  const at::Tensor m =
      color_groups == 1 ? weight : masked_conv::half_weight(weight, color_groups, true);
  return m.reshape({weight.size(0), weight.size(1)});
}

// The gradient of a 1x1 mask-B weight, [out, in] -> [out, in, 1, 1], masked entries exactly zero.
at::Tensor pointwise_grad(const at::Tensor& m, int64_t color_groups) {
  at::Tensor grad = m.view({m.size(0), m.size(1), 1, 1});
  if (color_groups > 1) masked_conv::zero_half_masked_taps(grad, color_groups, true);
  return grad;
}

// m = relu(m + bias + image_bias[image]) in place, m [images * rows_per_image, n].
void bias_relu_(at::Tensor& m, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& image_bias, int64_t rows_per_image) {
  if (bias) m.add_(*bias);
  if (image_bias) m.view({-1, rows_per_image, m.size(1)}).add_(image_bias->unsqueeze(1));
  m.relu_();
}

// grad = (act <= 0 ? 0 : grad) in place: the ReLU's backward, given its output.
void relu_backward_(at::Tensor& grad, const at::Tensor& act) {
  at::threshold_backward_out(grad, grad, act, 0);
}

// The k x k convolution over rows [0, c] of the kernel, padded by c on every side: its output has
// H + c rows, of which the first H are the masked convolution (row i reads input rows i - c .. i);
// the rest are never read. Padding inside the convolution saves padding the input (a fill and a
// copy) here and again in the backward, and cropping the input's gradient.
at::Tensor half_conv(const at::Tensor& x, const at::Tensor& half, int64_t c) {
  return at::convolution(x, half, std::nullopt, {1, 1}, {c, c}, {1, 1}, false, {0, 0}, 1)
      .contiguous(kChannelsLast);
}

// A channels-last [B, C, rows, W] tensor as [B, rows * W, C] (a view).
at::Tensor image_rows(const at::Tensor& t) {
  return pixel_matrix(t).view({t.size(0), -1, t.size(1)});
}

}  // namespace

void check_arguments(const at::Tensor& x, const at::Tensor& w_in,
                     const std::optional<at::Tensor>& b_in, const at::Tensor& w,
                     const std::optional<at::Tensor>& b, const at::Tensor& w_out,
                     const std::optional<at::Tensor>& b_out,
                     const std::optional<at::Tensor>& image_bias, int64_t color_groups) {
  make_params(x, w_in, b_in, w, b, w_out, b_out, image_bias, color_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& x_in, const at::Tensor& w_in, const std::optional<at::Tensor>& b_in,
    const at::Tensor& w, const std::optional<at::Tensor>& b, const at::Tensor& w_out,
    const std::optional<at::Tensor>& b_out, const std::optional<at::Tensor>& image_bias,
    int64_t color_groups) {
  const Params p = make_params(x_in, w_in, b_in, w, b, w_out, b_out, image_bias, color_groups);
  const int64_t c = p.kernel_size / 2, pixels = p.height * p.width;
  const at::Tensor x_image = x_in.contiguous(kChannelsLast);
  const at::Tensor x = pixel_matrix(x_image);
  const at::Tensor relu_x_image = at::relu(x_image);
  const at::Tensor relu_x = pixel_matrix(relu_x_image);
  // out = x + b_out, then the last product accumulates into it.
  at::Tensor out_image = new_image(x, p, p.channels);
  at::Tensor out = pixel_matrix(out_image);
  if (b_out) {
    at::add_out(out, x, *b_out);
  } else {
    out.copy_(x);
  }
  const at::Tensor hidden_in_image = new_image(x, p, p.hidden);
  at::Tensor hidden_in = pixel_matrix(hidden_in_image);
  at::mm_out(hidden_in, relu_x, pointwise_matrix(w_in, color_groups).t());
  bias_relu_(hidden_in, b_in, std::nullopt, pixels);
  // hidden: [B, hidden, H + c, W]; its rows past H are the padded convolution's spare rows.
  at::Tensor hidden =
      half_conv(hidden_in_image, masked_conv::half_weight(w, color_groups, true), c);
  at::Tensor hidden_matrix = pixel_matrix(hidden);
  bias_relu_(hidden_matrix, b, image_bias, (p.height + c) * p.width);
  const at::Tensor w_out_t = pointwise_matrix(w_out, color_groups).t();
  out.view({p.batch, pixels, p.channels})
      .baddbmm_(image_rows(hidden).narrow(1, 0, pixels),
                w_out_t.expand({p.batch, p.hidden, p.channels}));
  return {out_image, relu_x_image, hidden_in_image, hidden};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
backward(const at::Tensor& grad_out_arg, const at::Tensor& relu_x_arg,
         const at::Tensor& hidden_in_arg, const at::Tensor& hidden_arg, const at::Tensor& w_in,
         const at::Tensor& w, const at::Tensor& w_out, bool image_bias, int64_t color_groups) {
  constexpr const char* op = "residual_block_backward";
  const Params p = make_params(relu_x_arg, w_in, std::nullopt, w, std::nullopt, w_out, std::nullopt,
                               std::nullopt, color_groups);
  const int64_t c = p.kernel_size / 2, pixels = p.height * p.width;
  check_shape(op, "grad_out", grad_out_arg, {p.batch, p.channels, p.height, p.width});
  check_shape(op, "hidden_in", hidden_in_arg, {p.batch, p.hidden, p.height, p.width});
  check_shape(op, "hidden", hidden_arg, {p.batch, p.hidden, p.height + c, p.width});
  check_one_dtype_and_device(op, {{"relu_x", &relu_x_arg},
                                  {"grad_out", &grad_out_arg},
                                  {"hidden_in", &hidden_in_arg},
                                  {"hidden", &hidden_arg}});
  const at::Tensor grad_out = pixel_matrix(grad_out_arg.contiguous(kChannelsLast));
  const at::Tensor relu_x = pixel_matrix(relu_x_arg.contiguous(kChannelsLast));
  const at::Tensor hidden_in_image = hidden_in_arg.contiguous(kChannelsLast);
  const at::Tensor hidden = hidden_arg.contiguous(kChannelsLast);
  const at::Tensor hidden_rows = image_rows(hidden);  // [B, (H + c) * W, hidden]
  const at::Tensor grad_rows = grad_out.view({p.batch, pixels, p.channels});

  // out = x + hidden . W_out^T + b_out. The weight's gradient as a batch of per-image products
  // summed: faster than one product over all pixels, whose long inner dimension is transposed.
  const at::Tensor grad_b_out = grad_out.sum(0);
  const at::Tensor grad_w_out = pointwise_grad(
      at::bmm(grad_rows.transpose(1, 2), hidden_rows.narrow(1, 0, pixels)).sum(0), color_groups);
  // hidden = relu(conv(hidden_in) + b + image_bias): the ReLU's backward writes the gradient into
  // the padded convolution's output shape (one pass), its spare rows zero.
  at::Tensor grad_hidden = at::empty_like(hidden, kChannelsLast);
  at::Tensor grad_hidden_rows = image_rows(grad_hidden);
  at::Tensor grad_hidden_valid = grad_hidden_rows.narrow(1, 0, pixels);
  at::threshold_backward_out(
      grad_hidden_valid,
      at::mm(grad_out, pointwise_matrix(w_out, color_groups)).view({p.batch, pixels, p.hidden}),
      hidden_rows.narrow(1, 0, pixels), 0);
  if (c > 0) grad_hidden_rows.narrow(1, pixels, c * p.width).zero_();
  const at::Tensor grad_b = grad_hidden_rows.sum({0, 1});
  at::Tensor grad_image_bias =
      image_bias ? grad_hidden_rows.sum(1) : at::empty({0}, grad_out.options());
  const at::Tensor half = masked_conv::half_weight(w, color_groups, true);
  auto [grad_conv_in, grad_half, unused] =
      at::convolution_backward(grad_hidden, hidden_in_image, half, std::nullopt, {1, 1}, {c, c},
                               {1, 1}, false, {0, 0}, 1, {true, true, false});
  masked_conv::zero_half_masked_taps(grad_half, color_groups, true);
  at::Tensor grad_w = at::zeros_like(w, at::MemoryFormat::Contiguous);
  grad_w.narrow(2, 0, c + 1).copy_(grad_half);

  // hidden_in = relu(relu(x) . W_in^T + b_in)
  at::Tensor grad_hidden_in = pixel_matrix(grad_conv_in.contiguous(kChannelsLast));
  relu_backward_(grad_hidden_in, pixel_matrix(hidden_in_image));
  const at::Tensor grad_b_in = grad_hidden_in.sum(0);
  const at::Tensor grad_w_in =
      pointwise_grad(at::bmm(grad_hidden_in.view({p.batch, pixels, p.hidden}).transpose(1, 2),
                             relu_x.view({p.batch, pixels, p.channels}))
                         .sum(0),
                     color_groups);
  at::Tensor grad_x_image = new_image(grad_out, p, p.channels);
  at::Tensor grad_x = pixel_matrix(grad_x_image);
  at::mm_out(grad_x, grad_hidden_in, pointwise_matrix(w_in, color_groups));
  relu_backward_(grad_x, relu_x);
  grad_x.add_(grad_out);
  return {grad_x_image, grad_w_in,  grad_b_in,  grad_w,
          grad_b,       grad_w_out, grad_b_out, grad_image_bias};
}

}  // namespace residual_block
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("residual_block", &pixelfast::residual_block::forward);
  m.impl("residual_block_backward", &pixelfast::residual_block::backward);
}
