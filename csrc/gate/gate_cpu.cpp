// The gated activation's argument checks and CPU kernel: one pass over the input forward (read 2n
// channels, write n), one backward (recomputing tanh and sigmoid instead of storing them), where
// plain PyTorch makes several (a reshape's copy, tanh, sigmoid, the product, and in backward a
// zero-filled gradient per half).
// As in lstm_cpu.cpp: lets gcc vectorise the activations' selects (set before any include).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "../common/cpu_isa.h"
#include "gate.h"
#include "gate_op.h"

namespace pixelfast {
namespace gate {

Params check_forward(const at::Tensor& x, int64_t color_groups) {
  constexpr const char* op = "gated_activation";
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": input must be a 4-D tensor [B, C, H, W], got ", x.sizes());
  check_color_groups(op, color_groups);
  check_floating(op, {"input", &x});
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(c >= 2 && c % (2 * color_groups) == 0, op, ": input channels (", c,
                    ") must be a positive multiple of 2 * color_groups (", 2 * color_groups, ")");
  return Params{x.size(0), c / 2, color_groups, x.size(2) * x.size(3), channels_last(x)};
}

bool channels_last(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

Params check_backward(const at::Tensor& grad_out, const at::Tensor& x, int64_t color_groups) {
  const Params p = check_forward(x, color_groups);
  TORCH_CHECK_VALUE(
      grad_out.dim() == 4 && grad_out.size(0) == x.size(0) && grad_out.size(1) == p.channels &&
          grad_out.size(2) == x.size(2) && grad_out.size(3) == x.size(3),
      "gated_activation_backward: grad_out must have the output's shape [", x.size(0), ", ",
      p.channels, ", ", x.size(2), ", ", x.size(3), "], got ", grad_out.sizes());
  check_one_dtype_and_device("gated_activation_backward", {{"input", &x}, {"grad_out", &grad_out}});
  return p;
}

namespace {
at::MemoryFormat format_of(const Params& p) {
  return p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}
}  // namespace

at::Tensor in_layout(const at::Tensor& t, const Params& p) { return t.contiguous(format_of(p)); }

at::Tensor empty_in_layout(const at::Tensor& x, int64_t channels, const Params& p) {
  return at::empty({x.size(0), channels, x.size(2), x.size(3)},
                   x.options().memory_format(format_of(p)));
}

namespace {

// One run: restrict pointers, so that gcc vectorises it without alias checks.
template <typename T>
PF_ALWAYS_INLINE void forward_run(int64_t n, const T* __restrict__ xa, const T* __restrict__ xb,
                                  T* __restrict__ y) {
  for (int64_t i = 0; i < n; ++i) y[i] = gate_value(xa[i], xb[i]);
}

template <typename T>
PF_ALWAYS_INLINE void backward_run(int64_t n, const T* __restrict__ xa, const T* __restrict__ xb,
                                   const T* __restrict__ grad, T* __restrict__ ga,
                                   T* __restrict__ gb) {
  for (int64_t i = 0; i < n; ++i) {
    T da, db;
    gate_gradient(xa[i], xb[i], grad[i], &da, &db);
    ga[i] = da;
    gb[i] = db;
  }
}

template <typename T>
PF_ALWAYS_INLINE void forward_runs_impl(const Args<T>& a, int64_t begin, int64_t end) {
  const int64_t length = run_length(a.p), gap = b_distance(a.p);
  for (int64_t r = begin; r < end; ++r) {
    const T* xa = a.x + a_offset(a.p, r * length);
    forward_run(length, xa, xa + gap, a.out + r * length);
  }
}
PF_ISA_DISPATCH(forward_runs)

template <typename T>
PF_ALWAYS_INLINE void backward_runs_impl(const Args<T>& a, int64_t begin, int64_t end) {
  const int64_t length = run_length(a.p), gap = b_distance(a.p);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t offset = a_offset(a.p, r * length);
    backward_run(length, a.x + offset, a.x + offset + gap, a.grad_out + r * length, a.out + offset,
                 a.out + offset + gap);
  }
}
PF_ISA_DISPATCH(backward_runs)

// Runs of about 16k elements per task: enough to amortise the thread team, small enough to split.
int64_t grain(const Params& p) {
  const int64_t length = run_length(p) > 0 ? run_length(p) : 1;
  return std::max<int64_t>(1, 16384 / length);
}

int64_t runs(const Params& p) { return run_length(p) > 0 ? out_elements(p) / run_length(p) : 0; }

at::Tensor forward_cpu(const at::Tensor& x_in, int64_t color_groups) {
  const Params p = check_forward(x_in, color_groups);
  const at::Tensor x = in_layout(x_in, p);
  at::Tensor out = empty_in_layout(x, p.channels, p);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_activation", [&] {
    const Args<scalar_t> a{p, x.const_data_ptr<scalar_t>(), nullptr,
                           out.mutable_data_ptr<scalar_t>()};
    at::parallel_for(0, runs(p), grain(p),
                     [&](int64_t begin, int64_t end) { forward_runs(a, begin, end); });
  });
  return out;
}

at::Tensor backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                        int64_t color_groups) {
  const Params p = check_backward(grad_out_in, x_in, color_groups);
  const at::Tensor x = in_layout(x_in, p);
  const at::Tensor grad_out = in_layout(grad_out_in, p);
  at::Tensor grad_x = empty_in_layout(x, 2 * p.channels, p);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_activation_backward", [&] {
    const Args<scalar_t> a{p, x.const_data_ptr<scalar_t>(), grad_out.const_data_ptr<scalar_t>(),
                           grad_x.mutable_data_ptr<scalar_t>()};
    at::parallel_for(0, runs(p), grain(p),
                     [&](int64_t begin, int64_t end) { backward_runs(a, begin, end); });
  });
  return grad_x;
}

}  // namespace
}  // namespace gate
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("gated_activation", &pixelfast::gate::forward_cpu);
  m.impl("gated_activation_backward", &pixelfast::gate::backward_cpu);
}
