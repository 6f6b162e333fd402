// The LSTM scan ops, device-generic. The drivers in lstm.cpp run the recurrence step by step:
// per step one GEMM (state-to-state product over the whole batch, through ATen: MKL on CPU,
// cuBLAS on CUDA, into preallocated buffers, no allocation per step) and the backend's pointwise
// kernels below (gathering the previous step's states, the cell update). The CPU kernels live in
// lstm.cpp, the CUDA ones in lstm_cuda.cu; both are thin loops over the math of cell.h.
//
// Layout: pixel-major. Both scans work on channels-last [B, C, H, W] tensors (memory
// [B][H][W][C]; inputs in another layout are converted once, outputs are channels-last): a step
// visits a row (Row LSTM) or an anti-diagonal (Diagonal LSTM) and needs each pixel's channels
// contiguous. Scan buffers are row-major [rows, C] matrices, one row per pixel of the step:
//   Row LSTM, step = image row i:          row b * W + j                      (pixel (i, j))
//   Diagonal LSTM, step = skewed column t:  row (i - first_row(t)) * B + b     (pixel (i, t - i))
// so a step's rows are one contiguous block for the GEMM. X, its left operand, holds the previous
// step's hidden states that reach each pixel:
//   Row LSTM:  X[row, s * h + c] = h[b, c, i - 1, j + s - k/2]   (zero outside the image)
//   Diagonal:  X[row, c] = h[b, c, i - 1, j],  X[row, h + c] = h[b, c, i, j - 1]
// and pre = bias + X . Wm with Wm[s * h + c, q] = weight[q, c, s] (the gather kernel sets pre to
// the bias, the GEMM accumulates).
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace pixelfast {
namespace lstm {

// One backend's pointwise kernels over the buffers described above; image tensors are
// channels-last, bias is [4h] (zeros if absent).
struct Kernels {
  // `t` as a channels-last tensor (itself if it already is one).
  at::Tensor (*channels_last)(const at::Tensor& t);
  // X for image row i (zero for i = 0) and, if pre is defined, pre's rows set to the bias.
  void (*row_gather)(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                     const at::Tensor& pre, int64_t i, int64_t k);
  // Cell update of row i: pre-activations gates + pre; c_prev from row i - 1 (zero for i = 0).
  void (*row_cell_forward)(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                           const at::Tensor& c, const at::Tensor& acts, int64_t i, int64_t groups);
  // Backward of row i's cell. dh = grad_h + the state-to-state gradient from row i + 1, summed out
  // of dx (row i + 1's dX), and dc_in = row i + 1's dc * f, both only when has_next; dc_out
  // receives row i's dc * f. Writes the pre-activation gradients to dpre (scan rows) and
  // grad_gates (image layout).
  void (*row_cell_backward)(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                            const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                            const at::Tensor& dc_out, const at::Tensor& dpre,
                            const at::Tensor& grad_gates, int64_t i, int64_t k, int64_t groups);
  // X for skewed column t from the pixels above and to the left, and, if pre is defined, pre's
  // rows set to the bias.
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
// gates i, f, o, g in the gate layout) are what the backward needs. All channels-last.
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
