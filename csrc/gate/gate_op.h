// The gated activation op, device-generic parts: the CPU and CUDA registrations both call these.
#pragma once

#include <ATen/core/Tensor.h>

#include "gate.h"

namespace pixelfast {
namespace gate {

// The op's argument rules, in the words of the Python API (the only copy of them); each returns
// the call's shapes. The CUDA registration runs them before it touches the device.
Params check_forward(const at::Tensor& x, int64_t color_groups);
Params check_backward(const at::Tensor& grad_out, const at::Tensor& x, int64_t color_groups);

// The op's layout: channels-last when x is a dense channels-last tensor that is not also a
// contiguous one (the fake kernel, pixelfast/ops/gate.py, states the same rule), else contiguous.
bool channels_last(const at::Tensor& x);

// A tensor in the call's layout (the backward's grad_out in the input's).
at::Tensor in_layout(const at::Tensor& t, const Params& p);

// x in that layout, and an empty tensor of `channels` channels in it.
at::Tensor in_own_format(const at::Tensor& x);
at::Tensor empty_like_format(const at::Tensor& x, int64_t channels);

}  // namespace gate
}  // namespace pixelfast
