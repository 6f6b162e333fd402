// The LSTM scan ops, device-generic. On the CPU the drivers in lstm_scan.cpp run the recurrence
// step by step: per step one GEMM (state-to-state product over the whole batch, through ATen into
// preallocated buffers, no allocation per step) and the backend's pointwise kernels below
// (gathering the previous step's states, the cell update; lstm_cpu.cpp). On CUDA each scan is one
// launch (lstm_kernels.cuh: scan_forward / scan_backward below). Both follow the step geometry of
// scan_step.h and the math of cell.h.
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

#include "scan_step.h"

namespace pixelfast {
namespace lstm {

// One backend's pointwise kernels over the buffers described above, for both scans (`step` says
// which, and where); image tensors are channels-last, bias is [4h] (zeros if absent).
struct Kernels {
  // `t` as a channels-last tensor (itself if it already is one).
  at::Tensor (*channels_last)(const at::Tensor& t);
  // X of the step (zero for step 0) and, if pre is defined, pre's rows set to the bias.
  void (*gather)(const Step& step, const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                 const at::Tensor& pre);
  // The step's cell update: pre-activations gates + pre.
  void (*cell_forward)(const Step& step, const at::Tensor& gates, const at::Tensor& pre,
                       const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts);
  // Its backward: dx and dc_in are the next step's dX and dc * f (never read in the last step),
  // dc_out receives this step's dc * f. Writes the pre-activation gradients to dpre (scan rows)
  // and grad_gates (image layout).
  void (*cell_backward)(const Step& step, const at::Tensor& grad_h, const at::Tensor& dx,
                        const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                        const at::Tensor& dc_out, const at::Tensor& dpre,
                        const at::Tensor& grad_gates);
  // Or the whole scan in one launch (the CUDA backend; the step kernels above are then null):
  // the forward writes h, c and acts from gates, Wm ([taps * h, 4h]) and bias; the backward
  // writes grad_gates and dc_flow (dc * f per pixel, [B, h, H, W]) from grad_h, Wm's transpose,
  // c and acts. Null on a backend that runs the steps.
  void (*scan_forward)(const Step& scan, const at::Tensor& gates, const at::Tensor& wm,
                       const at::Tensor& bias, const at::Tensor& h, const at::Tensor& c,
                       const at::Tensor& acts) = nullptr;
  void (*scan_backward)(const Step& scan, const at::Tensor& grad_h, const at::Tensor& wm_t,
                        const at::Tensor& c, const at::Tensor& acts, const at::Tensor& grad_gates,
                        const at::Tensor& dc_flow) = nullptr;
};

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
