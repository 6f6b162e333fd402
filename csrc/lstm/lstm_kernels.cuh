// The CUDA kernels of the LSTM scans: each direction of a layer in ONE launch (docs/gpu_engine.md,
// "The LSTM scans"). A thread-block cluster (common/cluster.cuh) owns a tile of images and walks
// all their steps (image rows, or skewed columns), a cluster barrier between steps; the
// state-to-state product and the cell update of a step are one pass: a thread takes one hidden
// channel of up to kScanPixels pixels, computes its four gates' products (each weight loaded
// once for those pixels) and updates the cell. The step geometry is scan_step.h's and the cell
// math cell.h's, as on the CPU. No c10 or ATen here, so that g++ compiles these under the
// test-only CUDA emulation (tests/emulation/cuda_emulation.h); lstm_cuda.cu launches them.
#pragma once

#include <cstdint>

#include "../common/cluster.cuh"
#include "cell.h"
#include "lstm_params.h"
#include "scan_step.h"

namespace pixelfast {
namespace lstm {

constexpr int kScanThreads = 256;  // threads per block on a GPU
constexpr int kScanPixels = 4;     // pixels whose sums a thread keeps in registers

// The step's pixels among the cluster's images, and the k-th of them.
__device__ inline int64_t team_pixels(const Step& s, const Team& team) {
  return (s.kind == ScanKind::kRow ? s.width : diag_len(s.index, s.height, s.width)) * team.images;
}

__device__ inline Pixel team_pixel(const Step& s, const Team& team, int64_t k) {
  if (s.kind == ScanKind::kRow) return pixel(s, team.first_image * s.width + k);
  return pixel(s, k / team.images * s.batch + team.first_image + k % team.images);
}

// A thread's work item of a step: hidden channel ch of up to kScanPixels pixels.
struct ScanItem {
  int64_t ch, count, gate[4];
  Pixel p[kScanPixels];
};

__device__ inline ScanItem scan_item(const Step& s, const Team& team, int64_t e, int64_t pixels) {
  ScanItem it;
  it.ch = e % s.hidden;
  const int64_t first = e / s.hidden * kScanPixels;
  it.count = pixels - first < kScanPixels ? pixels - first : kScanPixels;
  for (int q = 0; q < 4; ++q) it.gate[q] = gate_index(q, it.ch, s.hidden, s.groups);
  for (int u = 0; u < kScanPixels; ++u) {
    if (u < it.count) it.p[u] = team_pixel(s, team, first + u);
  }
  return it;
}

__device__ inline int64_t scan_items(const Step& s, int64_t pixels) {
  return (pixels + kScanPixels - 1) / kScanPixels * s.hidden;
}

// Forward: per step, pre = bias + X . Wm (X: the h of source(), scan_step.h) and the cell update
// from gates + pre, as the step-by-step drivers do (lstm_scan.cpp).
template <typename T>
__global__ void __launch_bounds__(kScanThreads, 1) scan_forward_kernel(const ScanParams<T> a) {
  const Team team = make_team(a.step.batch, a.tile);
  Step s = a.step;
  const int64_t hidden = s.hidden, width4 = 4 * hidden;
  const int64_t steps = scan_steps(s);
  for (int64_t t = 0; t < steps; ++t) {
    s.index = t;
    const int64_t pixels = team_pixels(s, team);
    for (int64_t e = team.rank; e < scan_items(s, pixels); e += team.size) {
      const ScanItem it = scan_item(s, team, e, pixels);
      T acc[kScanPixels][4];
      for (int u = 0; u < kScanPixels; ++u) {
        for (int q = 0; q < 4; ++q) acc[u][q] = a.bias[it.gate[q]];
      }
      for (int64_t tap = 0; tap < s.taps; ++tap) {
        int64_t src[kScanPixels];
        for (int u = 0; u < kScanPixels; ++u) src[u] = u < it.count ? source(s, it.p[u], tap) : -1;
        const T* w = a.weight + tap * hidden * width4;
        for (int64_t c = 0; c < hidden; ++c) {
          T wq[4];
          for (int q = 0; q < 4; ++q) wq[q] = w[c * width4 + it.gate[q]];
#pragma unroll
          for (int u = 0; u < kScanPixels; ++u) {
            if (src[u] < 0) continue;
            const T x = a.h[src[u] * hidden + c];
            for (int q = 0; q < 4; ++q) acc[u][q] += x * wq[q];
          }
        }
      }
      for (int u = 0; u < kScanPixels; ++u) {
        if (u >= it.count) continue;
        const Pixel& p = it.p[u];
        const int64_t prev = cell_source(s, p);
        const T c_prev = prev >= 0 ? a.c[prev * hidden + it.ch] : T(0);
        T pre_act[4];
        for (int q = 0; q < 4; ++q)
          pre_act[q] = a.gates[p.offset * width4 + it.gate[q]] + acc[u][q];
        T* act = a.acts + p.offset * width4;
        cell_forward(pre_act[kI], pre_act[kF], pre_act[kO], pre_act[kG], c_prev, &act[it.gate[kI]],
                     &act[it.gate[kF]], &act[it.gate[kO]], &act[it.gate[kG]],
                     &a.c[p.offset * hidden + it.ch], &a.h[p.offset * hidden + it.ch]);
      }
    }
    cluster_sync();  // the next step reads this step's h and c, in any block of the cluster
  }
}

// Backward, steps in reverse: dh = grad_h + (each reader's pre-activation gradient) . Wm^T, the
// cell's backward with dc_next from the cell reader; the pre-activation gradients (grad_gates)
// are what the next (earlier) step reads. The weight gradient is one product afterwards
// (lstm_scan.cpp).
template <typename T>
__global__ void __launch_bounds__(kScanThreads, 1) scan_backward_kernel(const ScanParams<T> a) {
  const Team team = make_team(a.step.batch, a.tile);
  Step s = a.step;
  const int64_t hidden = s.hidden, width4 = 4 * hidden, k = s.taps * hidden;
  for (int64_t t = scan_steps(s) - 1; t >= 0; --t) {
    s.index = t;
    const int64_t pixels = team_pixels(s, team);
    for (int64_t e = team.rank; e < scan_items(s, pixels); e += team.size) {
      const ScanItem it = scan_item(s, team, e, pixels);
      T dh[kScanPixels];
      for (int u = 0; u < kScanPixels; ++u)
        dh[u] = u < it.count ? a.grad_h[it.p[u].offset * hidden + it.ch] : T(0);
      for (int64_t tap = 0; tap < s.taps; ++tap) {
        int64_t reader[kScanPixels];
        T dx[kScanPixels];
        for (int u = 0; u < kScanPixels; ++u) {
          reader[u] = u < it.count ? reader_pixel(s, it.p[u], tap) : -1;
          dx[u] = T(0);
        }
        const T* w = a.weight + tap * hidden + it.ch;  // Wm^T [4h, k]: column tap * h + ch
        for (int64_t q = 0; q < width4; ++q) {
          const T wq = w[q * k];
#pragma unroll
          for (int u = 0; u < kScanPixels; ++u) {
            if (reader[u] >= 0) dx[u] += a.grad_gates[reader[u] * width4 + q] * wq;
          }
        }
        for (int u = 0; u < kScanPixels; ++u) {
          if (reader[u] >= 0) dh[u] += dx[u];
        }
      }
      for (int u = 0; u < kScanPixels; ++u) {
        if (u >= it.count) continue;
        const Pixel& p = it.p[u];
        const int64_t next = cell_reader_pixel(s, p);
        const T dc_next = next >= 0 ? a.dc_flow[next * hidden + it.ch] : T(0);
        const int64_t prev = cell_source(s, p);
        const T c_prev = prev >= 0 ? a.c[prev * hidden + it.ch] : T(0);
        const T* act = a.acts + p.offset * width4;
        T da[4];
        cell_backward(act[it.gate[kI]], act[it.gate[kF]], act[it.gate[kO]], act[it.gate[kG]],
                      a.c[p.offset * hidden + it.ch], c_prev, dh[u], dc_next, &da[kI], &da[kF],
                      &da[kO], &da[kG], &a.dc_flow[p.offset * hidden + it.ch]);
        for (int q = 0; q < 4; ++q) a.grad_gates[p.offset * width4 + it.gate[q]] = da[q];
      }
    }
    cluster_sync();  // the earlier step reads this step's gradients
  }
}

// The scan entries of a backend (lstm_backend.h's make_scan_kernels), each launching its kernel
// through Backend::launch(kernel, params), which sets the params' tile: lstm_cuda.cu's backend and
// the test-only emulated one share this pairing.
template <typename Backend>
struct ScanLaunches {
  template <typename T>
  static void scan_forward(ScanParams<T>& a) {
    Backend::launch(scan_forward_kernel<T>, a);
  }
  template <typename T>
  static void scan_backward(ScanParams<T>& a) {
    Backend::launch(scan_backward_kernel<T>, a);
  }
};

}  // namespace lstm
}  // namespace pixelfast
