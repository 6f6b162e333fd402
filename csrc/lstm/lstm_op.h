// The LSTM scan ops, device-generic. The drivers in lstm.cpp run the recurrence step by step:
// per step one GEMM (state-to-state product over the whole batch, through ATen: MKL on CPU,
// cuBLAS on CUDA, into preallocated buffers, no allocation per step) and the backend's pointwise
// kernels below (gathering the previous step's states, the cell update). The CPU kernels live in
// lstm.cpp, the CUDA ones in lstm_cuda.cu; both are thin loops over the math of cell.h.
//
// Layouts.
// * Row LSTM, channels-first (unless its gates are channels-last, see below): gates, h, c, acts
//   and the gradients are contiguous [B, C, H, W];
//   scan buffers are [channels, B * W] with column b * W + j, so one (channel, b) strip of a row is
//   contiguous everywhere and the cell loops vectorise along the row.
//     XT[s * h + c, b * W + j] = h[b, c, i - 1, j + s - k/2]   (zero outside the image)
//     pre = WmT . XT,   WmT[q, s * h + c] = weight[q, c, s]
// * Diagonal LSTM, channels-last: its [B, C, H, W] tensors are channels-last (memory [B][H][W][C])
//   because a step visits one anti-diagonal, whose pixels are contiguous in no image layout but a
//   pixel's channels are. Scan buffers are [rows, C], row (i - first_row(t)) * B + b for pixel
//   (i, t - i), so a step's rows are one contiguous block for the GEMM:
//     X[row, c] = h[b, c, i - 1, j],   X[row, h + c] = h[b, c, i, j - 1]
//     pre = bias + X . Wm,   Wm[s * h + c, q] = weight[q, c, s]
// * Row LSTM given channels-last gates (e.g. from a channels-last conv): the same pixel-major
//   scheme, buffers [B * W, C] with row b * W + j, X[row, s * h + c] = h[b, c, i - 1, j + s - k/2];
//   its outputs are channels-last then.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace pixelfast {
namespace lstm {

// One backend's pointwise kernels over the buffers described above. bias is [4h] (zeros if
// absent).
struct Kernels {
  // `t` as a channels-last tensor (itself if it already is one).
  at::Tensor (*channels_last)(const at::Tensor& t);
  // XT for image row i (i >= 1) from h's row i - 1.
  void (*row_gather)(const at::Tensor& h, const at::Tensor& xt, int64_t i, int64_t k);
  // Cell update of row i: pre-activations gates + bias (+ pre when has_prev); c_prev from row i - 1.
  void (*row_cell_forward)(const at::Tensor& gates, const at::Tensor& bias, const at::Tensor& pre,
                           bool has_prev, const at::Tensor& h, const at::Tensor& c,
                           const at::Tensor& acts, int64_t i, int64_t groups);
  // Backward of row i's cell. dh = grad_h + the state-to-state gradient from row i + 1, summed out
  // of dxt (row i + 1's dXT), and dc_in = row i + 1's dc * f, both only when has_next; dc_out
  // ([h, B * W]) receives row i's dc * f. Writes the pre-activation gradients to dpre (scan
  // buffer) and grad_gates.
  void (*row_cell_backward)(const at::Tensor& grad_h, const at::Tensor& dxt, bool has_next,
                            const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                            const at::Tensor& dc_out, const at::Tensor& dpre,
                            const at::Tensor& grad_gates, int64_t i, int64_t k, int64_t groups);
  // The Row LSTM's channels-last path (gates channels-last), buffers as the Diagonal LSTM's with
  // row b * W + j: X for row i (zero for i = 0) and, if pre is defined, pre's rows set to the bias;
  // the cell update; its backward (as row_cell_backward).
  void (*row_cl_gather)(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                        const at::Tensor& pre, int64_t i, int64_t k);
  void (*row_cl_cell_forward)(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                              const at::Tensor& c, const at::Tensor& acts, int64_t i,
                              int64_t groups);
  void (*row_cl_cell_backward)(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                               const at::Tensor& acts, const at::Tensor& c,
                               const at::Tensor& dc_in, const at::Tensor& dc_out,
                               const at::Tensor& dpre, const at::Tensor& grad_gates, int64_t i,
                               int64_t k, int64_t groups);
  // X for skewed column t from the pixels above and to the left, and, if pre is defined, pre's
  // rows set to the bias (the GEMM then accumulates onto it).
  void (*diag_gather)(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                      const at::Tensor& pre, int64_t t);
  // Cell update of skewed column t: pre-activations gates + pre; c_prev is the pixel to the left
  // (zero in column 0).
  void (*diag_cell_forward)(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                            const at::Tensor& c, const at::Tensor& acts, int64_t t, int64_t groups);
  // Backward of skewed column t: dx is column t + 1's dX; dc_in its dc * f (rows of column t + 1),
  // dc_out receives column t's (rows of column t).
  void (*diag_cell_backward)(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                             const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                             const at::Tensor& dc_out, const at::Tensor& dpre,
                             const at::Tensor& grad_gates, int64_t t, int64_t groups);
};

const Kernels& cpu_kernels();

// Forward: (h [B, h, H, W], c [B, h, H, W], acts [B, 4h, H, W]); c and acts (the activated
// gates i, f, o, g in the gate layout) are what the backward needs. Row LSTM outputs are
// channels-last if its gates are (channels-last and not contiguous), else contiguous; Diagonal
// LSTM outputs are always channels-last.
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward(const Kernels& kernels,
                                                           const at::Tensor& gates,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           int64_t color_groups);

// Backward: (grad_gates [B, 4h, H, W], grad_weight [4h, h, k], grad_bias [4h]).
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward(
    const Kernels& kernels, const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h,
    const at::Tensor& c, const at::Tensor& acts, int64_t color_groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward(
    const Kernels& kernels, const at::Tensor& gates, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t color_groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward(
    const Kernels& kernels, const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h,
    const at::Tensor& c, const at::Tensor& acts, int64_t color_groups);

}  // namespace lstm
}  // namespace pixelfast
