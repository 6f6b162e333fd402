// A Kernels table (lstm_op.h) from a backend's typed kernels: each entry picks the dtype and fills
// the kernel's params (lstm_params.h) from the tensors once; the backend (CPU chunks, CUDA
// launches, or the test-only emulated launches) gets them whole. Host only.
//
// A step-by-step Backend has: static at::Tensor channels_last(const at::Tensor&), and for T =
// float, double: static void gather(const GatherParams<T>&), cell_forward(const
// CellForwardParams<T>&), cell_backward(const CellBackwardParams<T>&).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include "lstm_op.h"
#include "lstm_params.h"

namespace pixelfast {
namespace lstm {
namespace backend {

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

template <typename Backend>
void gather(const Step& step, const at::Tensor& h, const at::Tensor& x, const at::Tensor& bias,
            const at::Tensor& pre) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lstm_gather", [&] {
    Backend::gather(GatherParams<scalar_t>{
        step, h.const_data_ptr<scalar_t>(), x.mutable_data_ptr<scalar_t>(),
        pre.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, data_or_null<scalar_t>(pre)});
  });
}

template <typename Backend>
void cell_forward(const Step& step, const at::Tensor& gates, const at::Tensor& pre,
                  const at::Tensor& h, const at::Tensor& c, const at::Tensor& acts) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lstm_cell_forward", [&] {
    Backend::cell_forward(CellForwardParams<scalar_t>{
        step, gates.const_data_ptr<scalar_t>(), pre.const_data_ptr<scalar_t>(),
        h.mutable_data_ptr<scalar_t>(), c.mutable_data_ptr<scalar_t>(),
        acts.mutable_data_ptr<scalar_t>()});
  });
}

template <typename Backend>
void cell_backward(const Step& step, const at::Tensor& grad_h, const at::Tensor& dx,
                   const at::Tensor& acts, const at::Tensor& c, const at::Tensor& dc_in,
                   const at::Tensor& dc_out, const at::Tensor& dpre, const at::Tensor& grad_gates) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "lstm_cell_backward", [&] {
    Backend::cell_backward(CellBackwardParams<scalar_t>{
        step, grad_h.const_data_ptr<scalar_t>(), dx.const_data_ptr<scalar_t>(),
        acts.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
        dc_in.const_data_ptr<scalar_t>(), dc_out.mutable_data_ptr<scalar_t>(),
        dpre.mutable_data_ptr<scalar_t>(), grad_gates.mutable_data_ptr<scalar_t>()});
  });
}

template <typename Backend>
void scan_forward(const Step& scan, const at::Tensor& gates, const at::Tensor& wm,
                  const at::Tensor& bias, const at::Tensor& h, const at::Tensor& c,
                  const at::Tensor& acts) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lstm_scan_forward", [&] {
    ScanParams<scalar_t> a{};
    a.step = scan;
    a.gates = gates.const_data_ptr<scalar_t>();
    a.weight = wm.const_data_ptr<scalar_t>();
    a.bias = bias.const_data_ptr<scalar_t>();
    a.h = h.mutable_data_ptr<scalar_t>();
    a.c = c.mutable_data_ptr<scalar_t>();
    a.acts = acts.mutable_data_ptr<scalar_t>();
    Backend::scan_forward(a);
  });
}

template <typename Backend>
void scan_backward(const Step& scan, const at::Tensor& grad_h, const at::Tensor& wm_t,
                   const at::Tensor& c, const at::Tensor& acts, const at::Tensor& grad_gates,
                   const at::Tensor& dc_flow) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "lstm_scan_backward", [&] {
    ScanParams<scalar_t> a{};
    a.step = scan;
    a.weight = wm_t.const_data_ptr<scalar_t>();
    // read only, but the params hold one pointer for both directions
    a.c = const_cast<scalar_t*>(c.const_data_ptr<scalar_t>());
    a.acts = const_cast<scalar_t*>(acts.const_data_ptr<scalar_t>());
    a.grad_h = grad_h.const_data_ptr<scalar_t>();
    a.grad_gates = grad_gates.mutable_data_ptr<scalar_t>();
    a.dc_flow = dc_flow.mutable_data_ptr<scalar_t>();
    Backend::scan_backward(a);
  });
}

}  // namespace backend

// A backend that runs the scans step by step (the CPU's).
template <typename Backend>
Kernels make_kernels() {
  return Kernels{&Backend::channels_last, &backend::gather<Backend>,
                 &backend::cell_forward<Backend>, &backend::cell_backward<Backend>};
}

// A backend that runs each scan in one launch (CUDA's). Backend: channels_last, and for T =
// float, double: static void scan_forward(ScanParams<T>&), scan_backward(ScanParams<T>&), which
// set the params' tile.
template <typename Backend>
Kernels make_scan_kernels() {
  Kernels kernels{&Backend::channels_last, nullptr, nullptr, nullptr};
  kernels.scan_forward = &backend::scan_forward<Backend>;
  kernels.scan_backward = &backend::scan_backward<Backend>;
  return kernels;
}

}  // namespace lstm
}  // namespace pixelfast
