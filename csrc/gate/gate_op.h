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

// x in its own memory format (channels-last stays channels-last, anything else becomes
// contiguous), and an empty tensor of `channels` channels in that format.
at::Tensor in_own_format(const at::Tensor& x);
at::Tensor empty_like_format(const at::Tensor& x, int64_t channels);

}  // namespace gate
}  // namespace pixelfast
