// The CUDA registration of the LSTM scan ops: the device-generic drivers (lstm_scan.cpp) with a
// Kernels table that launches the kernels of lstm_kernels.cuh on the current stream; the drivers
// do the state-to-state GEMMs through ATen (cuBLAS) on the same stream.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lstm_backend.h"
#include "lstm_kernels.cuh"
#include "lstm_op.h"

namespace pixelfast {
namespace lstm {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

struct CudaLauncher {
  // `kernel` over n elements on the current stream; nothing to do for n == 0.
  template <typename Params>
  static void launch(void (*kernel)(Params), int64_t n, const Params& params) {
    if (n == 0) return;
    kernel<<<blocks_for(n, kThreads, kMaxBlocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct CudaBackend : KernelLaunches<CudaLauncher> {
  static at::Tensor channels_last(const at::Tensor& t) {
    return t.contiguous(at::MemoryFormat::ChannelsLast);
  }
};

const Kernels& cuda_kernels() {
  static const Kernels kernels = make_kernels<CudaBackend>();
  return kernels;
}

// The device of the op's tensors, which must be CUDA tensors. Checked before the device guard, so
// that a tensor on another device gets the op's message rather than c10's; the drivers' checks
// then require every other tensor to be on the same device as this one.
c10::Device cuda_device(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " is on ", t.device(),
              ", but this is the op's CUDA kernel: every tensor must be on a CUDA device");
  return t.device();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward_cuda(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  const c10::cuda::CUDAGuard guard(cuda_device("row_lstm", "gates", gates));
  return row_forward(cuda_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  const c10::cuda::CUDAGuard guard(cuda_device("row_lstm_backward", "acts", acts));
  return row_backward(cuda_kernels(), grad_h, weight, h, c, acts, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward_cuda(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  const c10::cuda::CUDAGuard guard(cuda_device("diagonal_lstm", "gates", gates));
  return diagonal_forward(cuda_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  const c10::cuda::CUDAGuard guard(cuda_device("diagonal_lstm_backward", "acts", acts));
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
