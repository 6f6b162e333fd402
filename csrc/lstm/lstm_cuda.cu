// CUDA kernels of the LSTM scans: the pointwise steps of lstm_op.h (channels-last tensors, one
// thread per element), over the math of cell.h. The drivers (lstm.cpp) are device-generic: they launch these per step and do
// the state-to-state GEMMs through ATen (cuBLAS), all on the current stream.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "cell.h"
#include "lstm_op.h"

namespace pixelfast {
namespace lstm {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

#define PF_GRID_STRIDE(index, n) \
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < (n); \
       index += int64_t(blockDim.x) * gridDim.x)

// ---- the cell of one hidden channel `ch` of pixel `pix` (scan row `n`), shared by both scans

// Forward: pre-activations gates + pre, c_prev from the previous pixel on the cell path.
template <typename T>
__device__ __forceinline__ void forward_cell(const T* __restrict__ gates, const T* __restrict__ pre,
                                             T* __restrict__ h, T* __restrict__ c,
                                             T* __restrict__ acts, int64_t pix, int64_t n,
                                             int64_t ch, int64_t hidden, int64_t groups, T c_prev) {
  T a[4];
  int64_t g[4];
  for (int q = 0; q < 4; ++q) {
    g[q] = gate_index(q, ch, hidden, groups);
    a[q] = gates[pix * 4 * hidden + g[q]] + pre[n * 4 * hidden + g[q]];
  }
  T* act = acts + pix * 4 * hidden;
  cell_forward(a[kI], a[kF], a[kO], a[kG], c_prev, &act[g[kI]], &act[g[kF]], &act[g[kO]],
               &act[g[kG]], &c[pix * hidden + ch], &h[pix * hidden + ch]);
}

// Backward: dh and dc_next already summed from the next step; writes dc * f to *dc_out and the
// pre-activation gradients to dpre (scan row n) and grad_gates (image layout).
template <typename T>
__device__ __forceinline__ void backward_cell(const T* __restrict__ acts, const T* __restrict__ c,
                                              T c_prev, T dh, T dc_next, T* __restrict__ dc_out,
                                              T* __restrict__ dpre, T* __restrict__ grad_gates,
                                              int64_t pix, int64_t n, int64_t ch, int64_t hidden,
                                              int64_t groups) {
  const T* act = acts + pix * 4 * hidden;
  int64_t g[4];
  for (int q = 0; q < 4; ++q) g[q] = gate_index(q, ch, hidden, groups);
  T da[4];
  cell_backward(act[g[kI]], act[g[kF]], act[g[kO]], act[g[kG]], c[pix * hidden + ch], c_prev, dh,
                dc_next, &da[kI], &da[kF], &da[kO], &da[kG], dc_out);
  for (int q = 0; q < 4; ++q) {
    dpre[n * 4 * hidden + g[q]] = da[q];
    grad_gates[pix * 4 * hidden + g[q]] = da[q];
  }
}

// ---- Row LSTM (channels-last; scan buffers [B * W, C], row b * W + j)

template <typename T>
__global__ void row_gather_kernel(const T* __restrict__ h, T* __restrict__ x,
                                     const T* __restrict__ bias, T* __restrict__ pre,
                                     int64_t batch, int64_t hidden, int64_t height, int64_t width,
                                     int64_t i, int64_t k) {
  const int64_t rows = batch * width, p = k / 2;
  const int64_t cols = k * hidden > 4 * hidden ? k * hidden : 4 * hidden;
  PF_GRID_STRIDE(e, rows * cols) {
    const int64_t n = e / cols, col = e % cols;
    if (pre != nullptr && col < 4 * hidden) pre[n * 4 * hidden + col] = bias[col];
    if (col < k * hidden) {
      const int64_t b = n / width, j = n % width, s = col / hidden, ch = col % hidden;
      const int64_t jj = j + s - p;
      x[n * k * hidden + col] = (i > 0 && jj >= 0 && jj < width)
                                    ? h[((b * height + i - 1) * width + jj) * hidden + ch]
                                    : T(0);
    }
  }
}

template <typename T>
__global__ void row_cell_forward_kernel(const T* __restrict__ gates, const T* __restrict__ pre,
                                           T* __restrict__ h, T* __restrict__ c,
                                           T* __restrict__ acts, int64_t batch, int64_t hidden,
                                           int64_t height, int64_t width, int64_t i,
                                           int64_t groups) {
  PF_GRID_STRIDE(e, batch * width * hidden) {
    const int64_t n = e / hidden, ch = e % hidden, b = n / width, j = n % width;
    const int64_t pix = (b * height + i) * width + j;
    const T c_prev = i > 0 ? c[(pix - width) * hidden + ch] : T(0);
    forward_cell(gates, pre, h, c, acts, pix, n, ch, hidden, groups, c_prev);
  }
}

template <typename T>
__global__ void row_cell_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ dx,
                                            bool has_next, const T* __restrict__ acts,
                                            const T* __restrict__ c, const T* __restrict__ dc_in,
                                            T* __restrict__ dc_out, T* __restrict__ dpre,
                                            T* __restrict__ grad_gates, int64_t batch,
                                            int64_t hidden, int64_t height, int64_t width,
                                            int64_t i, int64_t k, int64_t groups) {
  const int64_t p = k / 2;
  PF_GRID_STRIDE(e, batch * width * hidden) {
    const int64_t n = e / hidden, ch = e % hidden, b = n / width, j = n % width;
    const int64_t pix = (b * height + i) * width + j;
    T dh = grad_h[pix * hidden + ch];
    T dc_next = T(0);
    if (has_next) {
      for (int64_t s = 0; s < k; ++s) {  // row i + 1's pixel jn = j - s + p read h(i, j) via tap s
        const int64_t jn = j - s + p;
        if (jn >= 0 && jn < width) dh += dx[(b * width + jn) * k * hidden + s * hidden + ch];
      }
      dc_next = dc_in[e];
    }
    const T c_prev = i > 0 ? c[(pix - width) * hidden + ch] : T(0);
    backward_cell(acts, c, c_prev, dh, dc_next, &dc_out[e], dpre, grad_gates, pix, n, ch, hidden,
                  groups);
  }
}

// ---- Diagonal LSTM (channels-last; scan buffers [rows, C], row (i - first_row(t)) * B + b)

template <typename T>
__global__ void diag_gather_kernel(const T* __restrict__ h, T* __restrict__ x,
                                   const T* __restrict__ bias, T* __restrict__ pre, int64_t batch,
                                   int64_t hidden, int64_t height, int64_t width, int64_t t) {
  const int64_t rows = diag_len(t, height, width) * batch, i0 = first_row(t, width);
  PF_GRID_STRIDE(e, rows * 4 * hidden) {
    const int64_t n = e / (4 * hidden), ch = e % (4 * hidden);
    if (pre != nullptr) pre[e] = bias[ch];
    if (ch < 2 * hidden) {
      const int64_t i = i0 + n / batch, b = n % batch, j = t - i;
      const int64_t pix = (b * height + i) * width + j;
      T v = T(0);
      if (ch < hidden) {
        if (i > 0) v = h[(pix - width) * hidden + ch];  // the pixel above
      } else if (j > 0) {
        v = h[(pix - 1) * hidden + ch - hidden];  // the pixel to the left
      }
      x[n * 2 * hidden + ch] = v;
    }
  }
}

template <typename T>
__global__ void diag_cell_forward_kernel(const T* __restrict__ gates, const T* __restrict__ pre,
                                         T* __restrict__ h, T* __restrict__ c,
                                         T* __restrict__ acts, int64_t batch, int64_t hidden,
                                         int64_t height, int64_t width, int64_t t,
                                         int64_t groups) {
  const int64_t rows = diag_len(t, height, width) * batch, i0 = first_row(t, width);
  PF_GRID_STRIDE(e, rows * hidden) {
    const int64_t n = e / hidden, ch = e % hidden;
    const int64_t i = i0 + n / batch, b = n % batch, j = t - i;
    const int64_t pix = (b * height + i) * width + j;
    const T c_prev = j > 0 ? c[(pix - 1) * hidden + ch] : T(0);
    forward_cell(gates, pre, h, c, acts, pix, n, ch, hidden, groups, c_prev);
  }
}

template <typename T>
__global__ void diag_cell_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ dx,
                                          bool has_next, const T* __restrict__ acts,
                                          const T* __restrict__ c, const T* __restrict__ dc_in,
                                          T* __restrict__ dc_out, T* __restrict__ dpre,
                                          T* __restrict__ grad_gates, int64_t batch,
                                          int64_t hidden, int64_t height, int64_t width,
                                          int64_t t, int64_t groups) {
  const int64_t rows = diag_len(t, height, width) * batch;
  const int64_t i0 = first_row(t, width), i0_next = first_row(t + 1, width);
  PF_GRID_STRIDE(e, rows * hidden) {
    const int64_t n = e / hidden, ch = e % hidden;
    const int64_t i = i0 + n / batch, b = n % batch, j = t - i;
    const int64_t pix = (b * height + i) * width + j;
    T dh = grad_h[pix * hidden + ch];
    T dc_next = T(0);
    // Column t + 1 read h(i, j) as "above" of (i + 1, j) and as "left" of (i, j + 1).
    if (has_next && i + 1 < height) dh += dx[((i + 1 - i0_next) * batch + b) * 2 * hidden + ch];
    if (has_next && j + 1 < width) {
      const int64_t row = (i - i0_next) * batch + b;
      dh += dx[row * 2 * hidden + hidden + ch];
      dc_next = dc_in[row * hidden + ch];
    }
    const T c_prev = j > 0 ? c[(pix - 1) * hidden + ch] : T(0);
    backward_cell(acts, c, c_prev, dh, dc_next, &dc_out[e], dpre, grad_gates, pix, n, ch, hidden,
                  groups);
  }
}

// ---- launchers (the Kernels table)

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

at::Tensor channels_last_cuda(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

// `kernel` over n elements on the current stream; nothing to do for n == 0.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), int64_t n, Args... args) {
  if (n == 0) return;
  kernel<<<blocks_for(n), kThreads, 0, stream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
T* maybe_mutable_data(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

void row_gather_cuda(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                     const at::Tensor& pre, int64_t i, int64_t k) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "row_lstm_gather_cuda", [&] {
    const int64_t n = h.size(0) * h.size(3) * std::max<int64_t>(k, 4) * h.size(1);
    launch(row_gather_kernel<scalar_t>, n,
           h.const_data_ptr<scalar_t>(), x.mutable_data_ptr<scalar_t>(),
           pre.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
           maybe_mutable_data<scalar_t>(pre), h.size(0), h.size(1), h.size(2), h.size(3), i, k);
  });
}

void row_cell_forward_cuda(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                           const at::Tensor& c, const at::Tensor& acts, int64_t i, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "row_lstm_cell_cuda", [&] {
    launch(row_cell_forward_kernel<scalar_t>, h.size(0) * h.size(3) * h.size(1),
           gates.const_data_ptr<scalar_t>(), pre.const_data_ptr<scalar_t>(),
           h.mutable_data_ptr<scalar_t>(), c.mutable_data_ptr<scalar_t>(),
           acts.mutable_data_ptr<scalar_t>(), h.size(0), h.size(1), h.size(2), h.size(3), i,
           groups);
  });
}

void row_cell_backward_cuda(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                            const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                            const at::Tensor& dc_out, const at::Tensor& dpre,
                            const at::Tensor& grad_gates, int64_t i, int64_t k, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "row_lstm_cell_backward_cuda", [&] {
    launch(row_cell_backward_kernel<scalar_t>, c.size(0) * c.size(3) * c.size(1),
           grad_h.const_data_ptr<scalar_t>(), dx.const_data_ptr<scalar_t>(), has_next,
           acts.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
           dc_in.const_data_ptr<scalar_t>(), dc_out.mutable_data_ptr<scalar_t>(),
           dpre.mutable_data_ptr<scalar_t>(), grad_gates.mutable_data_ptr<scalar_t>(), c.size(0),
           c.size(1), c.size(2), c.size(3), i, k, groups);
  });
}

void diag_gather_cuda(const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
                      const at::Tensor& pre, int64_t t) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diagonal_lstm_gather_cuda", [&] {
    const int64_t n = diag_len(t, h.size(2), h.size(3)) * h.size(0) * 4 * h.size(1);
    launch(diag_gather_kernel<scalar_t>, n,
           h.const_data_ptr<scalar_t>(), x.mutable_data_ptr<scalar_t>(),
           pre.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
           maybe_mutable_data<scalar_t>(pre), h.size(0), h.size(1), h.size(2), h.size(3), t);
  });
}

void diag_cell_forward_cuda(const at::Tensor& gates, const at::Tensor& pre, const at::Tensor& h,
                            const at::Tensor& c, const at::Tensor& acts, int64_t t,
                            int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diagonal_lstm_cell_cuda", [&] {
    const int64_t n = diag_len(t, h.size(2), h.size(3)) * h.size(0) * h.size(1);
    launch(diag_cell_forward_kernel<scalar_t>, n,
           gates.const_data_ptr<scalar_t>(), pre.const_data_ptr<scalar_t>(),
           h.mutable_data_ptr<scalar_t>(), c.mutable_data_ptr<scalar_t>(),
           acts.mutable_data_ptr<scalar_t>(), h.size(0), h.size(1), h.size(2), h.size(3), t,
           groups);
  });
}

void diag_cell_backward_cuda(const at::Tensor& grad_h, const at::Tensor& dx, bool has_next,
                             const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                             const at::Tensor& dc_out, const at::Tensor& dpre,
                             const at::Tensor& grad_gates, int64_t t, int64_t groups) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "diagonal_lstm_cell_backward_cuda", [&] {
    const int64_t n = diag_len(t, c.size(2), c.size(3)) * c.size(0) * c.size(1);
    launch(diag_cell_backward_kernel<scalar_t>, n,
           grad_h.const_data_ptr<scalar_t>(), dx.const_data_ptr<scalar_t>(), has_next,
           acts.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
           dc_in.const_data_ptr<scalar_t>(), dc_out.mutable_data_ptr<scalar_t>(),
           dpre.mutable_data_ptr<scalar_t>(), grad_gates.mutable_data_ptr<scalar_t>(), c.size(0),
           c.size(1), c.size(2), c.size(3), t, groups);
  });
}

const Kernels& cuda_kernels() {
  static const Kernels kernels{channels_last_cuda,     row_gather_cuda,
                               row_cell_forward_cuda,  row_cell_backward_cuda,
                               diag_gather_cuda,       diag_cell_forward_cuda,
                               diag_cell_backward_cuda};
  return kernels;
}

// ---- op registrations

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward_cuda(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  const c10::cuda::CUDAGuard guard(gates.device());
  return row_forward(cuda_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  const c10::cuda::CUDAGuard guard(acts.device());
  return row_backward(cuda_kernels(), grad_h, weight, h, c, acts, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward_cuda(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  const c10::cuda::CUDAGuard guard(gates.device());
  return diagonal_forward(cuda_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  const c10::cuda::CUDAGuard guard(acts.device());
  return diagonal_backward(cuda_kernels(), grad_h, weight, h, c, acts, groups);
}

}  // namespace
}  // namespace lstm
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CUDA, m) {
  m.impl("row_lstm", &pixelfast::lstm::row_forward_cuda);
  m.impl("row_lstm_backward", &pixelfast::lstm::row_backward_cuda);
  m.impl("diagonal_lstm", &pixelfast::lstm::diagonal_forward_cuda);
  m.impl("diagonal_lstm_backward", &pixelfast::lstm::diagonal_backward_cuda);
}
