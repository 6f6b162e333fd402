// Argument rules that several ops share, each written once, in the words of the Python API:
// TORCH_CHECK_VALUE raises Python's ValueError, TORCH_CHECK_TYPE its TypeError. The ops' checks
// (masked_conv.cpp, lstm_scan.cpp) are the only full copy of their argument rules: the Python
// faces call the ops unchecked, and the fake kernels repeat only the shape rules tracing needs.
// Host only; the CUDA registrations (.cu) include it too.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

namespace pixelfast {

// A tensor argument and its name in messages; `tensor` is null for an absent optional one.
struct Named {
  const char* name;
  const at::Tensor* tensor;
};

// A dtype as Python writes it: "torch.float32".
inline std::string dtype_name(at::ScalarType type) {
  return "torch." + std::string(c10::getDtypeNames(type).first);
}

// Colour groups: 1 (grey) or 3 (R, G, B: contiguous channel blocks).
inline void check_color_groups(const char* op, int64_t color_groups) {
  TORCH_CHECK_VALUE(color_groups == 1 || color_groups == 3, op,
                    ": color_groups must be 1 or 3, got ", color_groups);
}

// The kernels compute in float32 or float64.
inline void check_floating(const char* op, const Named& t) {
  const at::ScalarType type = t.tensor->scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kDouble, op, ": ", t.name,
                   " must be float32 or float64, got ", dtype_name(type));
}

// Every given tensor in the first one's dtype and on its device. The message names all of
// `tensors` ("input, weight and bias") and lists the given ones ("got input on cpu, weight on
// meta").
inline void check_one_dtype_and_device(const char* op, c10::ArrayRef<Named> tensors) {
  const at::Tensor& first = *tensors.begin()->tensor;
  std::string names, dtypes, devices;
  bool one_dtype = true, one_device = true;
  size_t index = 0;
  for (const Named& t : tensors) {
    names += c10::str(index == 0 ? "" : index + 1 == tensors.size() ? " and " : ", ", t.name);
    ++index;
    if (t.tensor == nullptr) continue;
    const char* separator = dtypes.empty() ? "" : ", ";
    dtypes += c10::str(separator, t.name, " ", dtype_name(t.tensor->scalar_type()));
    devices += c10::str(separator, t.name, " on ", t.tensor->device());
    one_dtype = one_dtype && t.tensor->scalar_type() == first.scalar_type();
    one_device = one_device && t.tensor->device() == first.device();
  }
  TORCH_CHECK_TYPE(one_dtype, op, ": ", names, " must share one dtype, got ", dtypes);
  TORCH_CHECK_VALUE(one_device, op, ": ", names, " must be on one device, got ", devices);
}

// The CUDA kernels' own rule: every given tensor a CUDA tensor, on the first one's device. A CUDA
// registration checks it before its device guard, so a tensor elsewhere gets the op's message
// rather than c10's "Expected a CUDA device".
inline void check_cuda_tensors(const char* op, c10::ArrayRef<Named> tensors) {
  const Named& first = *tensors.begin();
  TORCH_CHECK(first.tensor->is_cuda(), op, ": ", first.name, " is on ", first.tensor->device(),
              ", but this is the op's CUDA kernel: every tensor must be a CUDA tensor on one "
              "device");
  for (const Named& t : tensors) {
    if (t.tensor == nullptr) continue;
    TORCH_CHECK(t.tensor->device() == first.tensor->device(), op, ": ", t.name, " is on ",
                t.tensor->device(), " but ", first.name, " is on ", first.tensor->device(),
                "; every tensor must be a CUDA tensor on one device");
  }
}

}  // namespace pixelfast
