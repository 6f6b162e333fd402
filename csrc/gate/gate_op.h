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

// A tensor in the call's layout (p.channels_last, from the input), and an empty one of x's batch
// and image size with `channels` channels in it.
at::Tensor in_layout(const at::Tensor& t, const Params& p);
at::Tensor empty_in_layout(const at::Tensor& x, int64_t channels, const Params& p);

}  // namespace gate
}  // namespace pixelfast
