// The operands of each pointwise kernel of a scan step (lstm_op.h describes the buffers), filled
// once on the host (lstm_backend.h) and passed whole to the CPU chunks and the CUDA kernels.
// Image tensors are channels-last ([B, H, W, C] in memory); scan buffers have one row per pixel
// of the step (scan_step.h).
#pragma once

#include "scan_step.h"

namespace pixelfast {
namespace lstm {

// X and, if pre is set, pre's rows set to the bias (the GEMM then accumulates into pre).
template <typename T>
struct GatherParams {
  Step step;
  const T* h;     // [B, H, W, hidden]
  T* x;           // [rows, taps * hidden]
  const T* bias;  // [4 * hidden]; read only with pre
  T* pre;         // [rows, 4 * hidden], or nullptr: left alone
};

// The cell update: pre-activations gates + pre; c_prev from cell_source.
template <typename T>
struct CellForwardParams {
  Step step;
  const T* gates;  // [B, H, W, 4 * hidden]
  const T* pre;    // [rows, 4 * hidden]
  T* h;            // [B, H, W, hidden]
  T* c;            // [B, H, W, hidden]
  T* acts;         // [B, H, W, 4 * hidden]: the activated gates
};

// The cell's backward. dh = grad_h + the next step's dX through reader(); dc_next = the next
// step's dc * f through cell_reader().
template <typename T>
struct CellBackwardParams {
  Step step;
  const T* grad_h;  // [B, H, W, hidden]
  const T* dx;      // the next step's dX, [next rows, taps * hidden]
  const T* acts;    // [B, H, W, 4 * hidden]
  const T* c;       // [B, H, W, hidden]
  const T* dc_in;   // the next step's dc * f, [next rows, hidden]
  T* dc_out;        // this step's dc * f, [rows, hidden]
  T* dpre;          // [rows, 4 * hidden]
  T* grad_gates;    // [B, H, W, 4 * hidden]
};

// A whole scan in one launch (the CUDA kernels, lstm_kernels.cuh): the forward fills h, c and acts;
// the backward fills grad_gates (the pre-activation gradients) and dc_flow. Image layout only.
template <typename T>
struct ScanParams {
  Step step;        // the scan's geometry (index: unused)
  int64_t tile;     // images per cluster (common/cluster.cuh)
  const T* gates;   // forward: [B, H, W, 4 * hidden]
  const T* weight;  // forward: Wm [taps * hidden, 4 * hidden]; backward: its transpose
  const T* bias;    // forward: [4 * hidden]
  T* h;             // forward: [B, H, W, hidden]
  T* c;             // [B, H, W, hidden]: written forward, read backward
  T* acts;          // [B, H, W, 4 * hidden]: written forward, read backward
  const T* grad_h;  // backward: [B, H, W, hidden]
  T* grad_gates;    // backward: [B, H, W, 4 * hidden]
  T* dc_flow;       // backward: [B, H, W, hidden]: the dc * f each pixel sends to its c_prev
};

}  // namespace lstm
}  // namespace pixelfast
