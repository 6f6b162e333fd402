// The engine kernel for a call's precision and weight type, the one choice both launchers make
// (engine_cuda.cu on a GPU, tests/emulation/engine_emulated.cpp on the host):
// with_engine_kernel(p, weights, precision, threads, launch) copies the engine's view to the
// weights' device and calls launch(kernel, view, shared_bytes) once. Include it after
// engine_kernel.cuh's prerequisites (under the emulation: after cuda_emulation.h).
#pragma once

#include <ATen/Dispatch.h>

#include <vector>

#include "engine.h"
#include "engine_kernel.cuh"

namespace pixelfast {
namespace sampler {

template <typename Launch>
void with_engine_kernel(Prepared& p, const std::vector<at::Tensor>& weights, Precision precision,
                        int64_t threads, Launch&& launch) {
  if (precision == Precision::kFp32) {
    AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_kernel", [&] {
      const DeviceView<scalar_t> d = device_view<scalar_t>(p, weights);
      launch(engine_kernel<scalar_t>, d.view, engine_shared_bytes<scalar_t>(threads));
    });
    return;
  }
  const DeviceView<float> d = device_view<float>(p, weights);  // float32 (parse_precision)
  if (precision == Precision::kBf16) {
    launch(engine_kernel<float, kBf16Products>, d.view,
           engine_shared_bytes<float>(threads, kBf16Products));
  } else {
    launch(engine_kernel<float, kTf32Products>, d.view,
           engine_shared_bytes<float>(threads, kTf32Products));
  }
}

}  // namespace sampler
}  // namespace pixelfast
