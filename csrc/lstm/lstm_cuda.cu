// The CUDA registration of the LSTM scan ops: the device-generic drivers (lstm_scan.cpp) with a
// Kernels table that runs each scan as one launch of lstm_kernels.cuh on the current stream; the
// backward's weight gradient is one product through ATen (cuBLAS) on the same stream.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "../common/cluster_launch.h"
#include "lstm_backend.h"
#include "lstm_kernels.cuh"
#include "lstm_op.h"

namespace pixelfast {
namespace lstm {
namespace {

// Each scan in one launch on the current stream: clusters of blocks, each a tile of the images
// (common/cluster_launch.h).
struct CudaBackend : ScanLaunches<CudaBackend> {
  static at::Tensor channels_last(const at::Tensor& t) {
    return t.contiguous(at::MemoryFormat::ChannelsLast);
  }
  template <typename T>
  static void launch(void (*kernel)(ScanParams<T>), ScanParams<T>& a) {
    if (a.step.batch == 0) return;  // no images: nothing to launch
    const ClusterLayout layout = cluster_layout(kernel, a.step.batch, kScanThreads, 0);
    a.tile = layout.tile;
    launch_clusters(kernel, layout, kScanThreads, 0, c10::cuda::getCurrentCUDAStream().stream(), a);
  }
};

const Kernels& cuda_kernels() {
  static const Kernels kernels = make_scan_kernels<CudaBackend>();
  return kernels;
}

// The scans' tensors: CUDA tensors on one device (common/checks.h), checked before the device guard
// so that a tensor elsewhere gets the op's message rather than c10's; the drivers then check the
// rest (lstm_scan.cpp).
c10::Device forward_device(const char* op, const at::Tensor& gates, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  check_cuda_tensors(op,
                     {{"gates", &gates}, {"weight", &weight}, {"bias", bias ? &*bias : nullptr}});
  return gates.device();
}

c10::Device backward_device(const char* op, const at::Tensor& grad_h, const at::Tensor& weight,
                            const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts) {
  check_cuda_tensors(
      op, {{"acts", &acts}, {"grad_h", &grad_h}, {"weight", &weight}, {"h", &h}, {"c", &c}});
  return acts.device();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_forward_cuda(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  const c10::cuda::CUDAGuard guard(forward_device("row_lstm", gates, weight, bias));
  return row_forward(cuda_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  const c10::cuda::CUDAGuard guard(
      backward_device("row_lstm_backward", grad_h, weight, h, c, acts));
  return row_backward(cuda_kernels(), grad_h, weight, h, c, acts, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_forward_cuda(
    const at::Tensor& gates, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t groups) {
  const c10::cuda::CUDAGuard guard(forward_device("diagonal_lstm", gates, weight, bias));
  return diagonal_forward(cuda_kernels(), gates, weight, bias, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& weight, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& acts, int64_t groups) {
  const c10::cuda::CUDAGuard guard(
      backward_device("diagonal_lstm_backward", grad_h, weight, h, c, acts));
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
