// LSTM scans: argument checks and the device-generic drivers (lstm_op.h), for every backend's
// Kernels table. Host only, no op registrations (the test-only emulated ops link it too).
//
// Row LSTM (one step per image row i, top to bottom):
//   a(i, j) = gates(i, j) + bias + sum_s weight[:, :, s] . h(i - 1, j + s - k/2)
//   c(i, j) = f * c(i - 1, j) + i * g,   h(i, j) = o * tanh(c(i, j))
// Diagonal LSTM (one step per skewed column t = i + j, left to right; the skewed map's 2x1
// state-to-state column conv reads rows i - 1 and i of column t - 1, i.e. pixels (i - 1, j) and
// (i, j - 1)):
//   a(i, j) = gates(i, j) + bias + weight[:, :, 0] . h(i - 1, j) + weight[:, :, 1] . h(i, j - 1)
//   c(i, j) = f * c(i, j - 1) + i * g,   h(i, j) = o * tanh(c(i, j))
// Everything outside the image (h and c of row -1, column -1) is zero. Skewing is only the index
// map pixel (i, j) <-> step t = i + j; nothing skewed is ever materialised.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <utility>
#include <vector>

#include "../common/checks.h"
#include "lstm_op.h"

namespace pixelfast {
namespace lstm {
namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

// A saved state in the dtype and on the device of the activations it was saved with.
void check_float_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                      const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but ", ref_name, " has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device());
}

// The scans' argument rules (lstm_op.h), in the words of the Python API; returns the scan's first
// step. `diagonal`: the weight must be [4h, h, 2]; else [4h, h, k] with k odd.
Step check_forward(const char* op, const at::Tensor& gates, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, int64_t groups, bool diagonal,
                   const char* gates_name = "gates") {
  TORCH_CHECK_VALUE(gates.dim() == 4, op, ": ", gates_name,
                    " must be a 4-D tensor [B, 4h, H, W], got ", gates.sizes());
  check_color_groups(op, groups);
  check_floating(op, {gates_name, &gates});
  check_one_dtype_and_device(
      op,
      {{gates_name, &gates}, {"weight", &weight}, {"bias", bias.has_value() ? &*bias : nullptr}});
  const int64_t channels = gates.size(1);
  TORCH_CHECK_VALUE(channels > 0 && channels % (4 * groups) == 0, op, ": ", gates_name,
                    " must have 4h channels (i, f, o, g per hidden channel) with h divisible by "
                    "color_groups=",
                    groups, ", got ", channels, " channels");
  TORCH_CHECK_VALUE(gates.size(2) >= 1 && gates.size(3) >= 1, op, ": ", gates_name,
                    " must have H, W >= 1, got shape ", gates.sizes());
  const int64_t hidden = channels / 4;
  const char* taps = diagonal ? "2" : "k";
  TORCH_CHECK_VALUE(weight.dim() == 3 && weight.size(0) == channels && weight.size(1) == hidden, op,
                    ": weight must be [4h, h, ", taps, "] = [", channels, ", ", hidden, ", ", taps,
                    "] for ", gates_name, " with ", channels, " channels, got ", weight.sizes());
  if (diagonal) {
    TORCH_CHECK_VALUE(weight.size(2) == 2, op,
                      ": weight must have 2 taps (pixel above, pixel to the left), got ",
                      weight.size(2));
  } else {
    TORCH_CHECK_VALUE(weight.size(2) % 2 == 1, op, ": kernel size must be odd, got ",
                      weight.size(2));
  }
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == channels, op, ": bias must have shape (",
                      channels, ",), got ", bias->sizes());
  }
  return Step{diagonal ? ScanKind::kDiagonal : ScanKind::kRow,
              gates.size(0),
              hidden,
              gates.size(2),
              gates.size(3),
              0,
              weight.size(2),
              groups};
}

// The backward's own checks (no Python face calls it): the saved states must fit the gates.
Step check_backward(const char* op, const at::Tensor& grad_h, const at::Tensor& weight,
                    const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts,
                    int64_t groups, bool diagonal) {
  const Step s = check_forward(op, acts, weight, std::nullopt, groups, diagonal, "acts");
  const std::vector<int64_t> state{s.batch, s.hidden, s.height, s.width};
  const auto check_state = [&](const char* name, const at::Tensor& t) {
    TORCH_CHECK(t.sizes() == at::IntArrayRef(state), op, ": ", name, " must have shape ",
                at::IntArrayRef(state), ", got ", t.sizes());
    check_float_like(op, name, t, acts, "acts");
  };
  check_state("grad_h", grad_h);
  check_state("h", h);
  check_state("c", c);
  return s;
}

// The GEMM's right operand: Wm[s * h + c, q] = weight[q, c, s], [taps * h, 4h].
at::Tensor weight_matrix(const at::Tensor& weight) {
  return weight.permute({2, 1, 0})
      .reshape({weight.size(2) * weight.size(1), weight.size(0)})
      .contiguous();
}

at::Tensor weight_from_matrix(const at::Tensor& wm, const Step& s) {
  return wm.view({s.taps, s.hidden, 4 * s.hidden}).permute({2, 1, 0}).contiguous();
}

// X of every pixel at once, [B H W, taps * h]: block `tap` of pixel p's row is the h of
// source(p, tap) (scan_step.h), zero outside the image.
at::Tensor sources_of_every_pixel(const at::Tensor& h, const Step& s) {
  std::vector<at::Tensor> blocks;
  if (s.kind == ScanKind::kRow) {  // the row above, shifted by tap - k / 2
    const int64_t half = s.taps / 2;
    const at::Tensor padded = at::constant_pad_nd(h, {half, half, 1, 0});
    for (int64_t tap = 0; tap < s.taps; ++tap)
      blocks.push_back(padded.narrow(2, 0, s.height).narrow(3, tap, s.width));
  } else {  // the pixel above, the pixel to the left
    blocks.push_back(at::constant_pad_nd(h, {0, 0, 1, 0}).narrow(2, 0, s.height));
    blocks.push_back(at::constant_pad_nd(h, {1, 0, 0, 0}).narrow(3, 0, s.width));
  }
  return at::cat(blocks, 1).permute({0, 2, 3, 1}).reshape({-1, s.taps * s.hidden});
}

// The first `n` elements of a flat buffer as a contiguous [rows, n / rows] matrix.
at::Tensor matrix(const at::Tensor& buffer, int64_t rows, int64_t cols) {
  return buffer.narrow(0, 0, rows * cols).view({rows, cols});
}

}  // namespace

// ------------------------------------------------------------------------------ drivers

namespace {

// The recurrence, one step (image row or skewed column) after another: per step the gather, one
// GEMM over the step's rows (the state-to-state product) and the cell update. Both scans alike.
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_forward(
    const Kernels& kernels, const char* op, bool diagonal, const at::Tensor& gates_in,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t groups) {
  Step s = check_forward(op, gates_in, weight, bias, groups, diagonal);
  const at::Tensor gates = kernels.channels_last(gates_in);
  const auto opts = gates.options();
  at::Tensor h =
      at::empty({s.batch, s.hidden, s.height, s.width}, opts.memory_format(kChannelsLast));
  at::Tensor c = at::empty_like(h, kChannelsLast);
  at::Tensor acts = at::empty_like(gates, kChannelsLast);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::zeros({4 * s.hidden}, opts);
  const at::Tensor wm = weight_matrix(weight);
  if (kernels.scan_forward != nullptr) {
    kernels.scan_forward(s, gates, wm, b, h, c, acts);
    return {h, c, acts};
  }
  const int64_t max_rows = max_scan_rows(s);
  at::Tensor x = at::empty({max_rows * s.taps * s.hidden}, opts);
  at::Tensor pre = at::empty({max_rows * 4 * s.hidden}, opts);
  for (s.index = 0; s.index < scan_steps(s); ++s.index) {
    const int64_t rows = scan_rows(s);
    kernels.gather(s, h, x, b, pre);  // pre = bias, then += X . Wm
    if (s.index > 0) {
      at::Tensor out = matrix(pre, rows, 4 * s.hidden);
      at::addmm_out(out, out, matrix(x, rows, s.taps * s.hidden), wm);
    }
    kernels.cell_forward(s, gates, pre, h, c, acts);
  }
  return {h, c, acts};
}

// Backward through the steps in reverse: the cell's backward, then (for every step but the first)
// the gradient w.r.t. X, i.e. the previous step's h, and the weight gradient from X.
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward(
    const Kernels& kernels, const char* op, bool diagonal, const at::Tensor& grad_h_in,
    const at::Tensor& weight, const at::Tensor& h_in, const at::Tensor& c_in,
    const at::Tensor& acts_in, int64_t groups) {
  Step s = check_backward(op, grad_h_in, weight, h_in, c_in, acts_in, groups, diagonal);
  const at::Tensor grad_h = kernels.channels_last(grad_h_in);
  const at::Tensor h = kernels.channels_last(h_in);
  const at::Tensor c = kernels.channels_last(c_in);
  const at::Tensor acts = kernels.channels_last(acts_in);
  const auto opts = acts.options();
  at::Tensor grad_gates = at::empty_like(acts, kChannelsLast);
  const at::Tensor wm = weight_matrix(weight);
  if (kernels.scan_backward != nullptr) {
    kernels.scan_backward(s, grad_h, wm.t().contiguous(), c, acts, grad_gates,
                          at::empty_like(c, kChannelsLast));
    // Sum over the steps of X^T . dpre = one product over every pixel (step 0's X is zero).
    const at::Tensor grad_wm = at::mm(sources_of_every_pixel(h, s).t(),
                                      grad_gates.permute({0, 2, 3, 1}).reshape({-1, 4 * s.hidden}));
    return {grad_gates, weight_from_matrix(grad_wm, s), grad_gates.sum({0, 2, 3})};
  }
  at::Tensor grad_wm = at::zeros_like(wm);
  const int64_t max_rows = max_scan_rows(s);
  at::Tensor x = at::empty({max_rows * s.taps * s.hidden}, opts);
  at::Tensor dx = at::empty({max_rows * s.taps * s.hidden}, opts);
  at::Tensor dpre = at::empty({max_rows * 4 * s.hidden}, opts);
  // dc * f flows from step t + 1 to step t (whose rows may be numbered differently): read one
  // buffer, write the other.
  at::Tensor dc_next = at::empty({max_rows, s.hidden}, opts);
  at::Tensor dc_this = at::empty({max_rows, s.hidden}, opts);
  for (s.index = scan_steps(s) - 1; s.index >= 0; --s.index) {
    kernels.cell_backward(s, grad_h, dx, acts, c, dc_next, dc_this, dpre, grad_gates);
    if (s.index > 0) {
      const int64_t rows = scan_rows(s);
      const at::Tensor dpre_rows = matrix(dpre, rows, 4 * s.hidden);
      at::Tensor dx_rows = matrix(dx, rows, s.taps * s.hidden);
      at::mm_out(dx_rows, dpre_rows, wm.t());
      kernels.gather(s, h, x, at::Tensor(), at::Tensor());
      at::addmm_out(grad_wm, grad_wm, matrix(x, rows, s.taps * s.hidden).t(), dpre_rows);
    }
    std::swap(dc_next, dc_this);
  }
  return {grad_gates, weight_from_matrix(grad_wm, s), grad_gates.sum({0, 2, 3})};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward(const Kernels& kernels,
                                                           const at::Tensor& gates,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           int64_t groups) {
  return scan_forward(kernels, "row_lstm", false, gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward(
    const Kernels& kernels, const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h,
    const at::Tensor& c, const at::Tensor& acts, int64_t groups) {
  return scan_backward(kernels, "row_lstm_backward", false, grad_h, weight, h, c, acts, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward(
    const Kernels& kernels, const at::Tensor& gates, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t groups) {
  return scan_forward(kernels, "diagonal_lstm", true, gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward(
    const Kernels& kernels, const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h,
    const at::Tensor& c, const at::Tensor& acts, int64_t groups) {
  return scan_backward(kernels, "diagonal_lstm_backward", true, grad_h, weight, h, c, acts, groups);
}

}  // namespace lstm
}  // namespace pixelfast
