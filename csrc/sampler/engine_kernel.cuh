// The incremental-cache sampling engine's CUDA kernel: ONE launch samples the whole batch
// (docs/gpu_engine.md, design B).
//
// A thread-block cluster (up to 8 blocks on neighbouring SMs, Hopper; one block on older GPUs) owns
// a tile of consecutive images and runs the raster loop of engine_ops.h over the same plan, buffer
// layout and per-op logic as the CPU engine. The cluster's threads are one team: every op is split
// over all of them, and the cluster barrier orders the ops. Clusters never wait for each other.
//
// - A convolution: each block of the cluster owns a slice of the output channels that change at
//   this sub-step; within the block, lanes take channels and the rest of the threads split the
//   reduction (K); a block barrier and a sum over shared memory finish each output. Every thread
//   keeps kTileImages images' sums in registers, so a weight is read once per kTileImages images of
//   the tile, not once per image.
// - The pointwise ops that only carry a conv's output on (ReLU, residual add, class bias) run in
//   the conv's epilogue, with no stage or barrier of their own.
// - A pointwise op: the team strides over (image, channel).
// - A draw: one warp per image; a logistic mixture: one block per image.
// - A row-phase op runs its whole row in one stage where the positions do not read each other.
//
// Device code only (no ATen/c10): engine_cuda.cu launches it, and the tests compile it on the host
// under the CUDA emulation (tests/emulation).
//
// Launch: grid = clusters x cluster blocks (along x), any block size, dynamic shared memory =
// engine_shared_bytes(block); `scratch` holds Plan::scratch_doubles per image (the draw's
// exponentials, then the mixture's components).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/cluster.cuh"
#include "../common/host_device.h"
#include "engine_mma.cuh"
#include "engine_ops.h"
#include "epilogue.h"

namespace pixelfast {
namespace sampler {

// Threads per block on a GPU (the emulated tests launch other sizes too); one block per SM, so
// the kernel may keep up to 255 registers per thread (154 float, 168 double on sm_90: no spills).
constexpr int kEngineThreads = 256;
constexpr int kTileImages = 4;     // images whose sums a thread keeps in registers
constexpr int kChannelLanes = 32;  // a block's output channels per pass: one warp wide
constexpr int kMaxSplits = 32;     // threads sharing one output's K
constexpr int kWarp = 32;          // warpSize, as a constant the shuffle loops unroll over

// The float path's split sums, or the tensor-core path's per-warp tiles (engine_mma.cuh).
template <typename T>
PF_HD size_t engine_shared_bytes(int64_t threads, int precision = kFmaProducts) {
  if (precision != kFmaProducts) return static_cast<size_t>(threads / kWarp) * kMmaWarpBytes;
  return static_cast<size_t>(threads) * kTileImages * sizeof(T);
}

// Applies the epilogue's ops (epilogue.h: those after `conv`, `count` of them) to `value`, channel
// `t` of conv's output for image b at (i, j), writing each op's output.
template <typename T>
PF_HD void run_epilogue(const EngineView<T>& v, const Op& conv, int64_t count, T value, int64_t b,
                        int64_t i, int64_t j, int64_t t) {
  for (int64_t k = 1; k <= count; ++k) {
    const Op& op = (&conv)[k];
    switch (op.code) {
      case kRelu:
        value = relu(value);
        break;
      case kElu:
        value = elu(value);
        break;
      case kAdd:
        if (op.accumulate != 0) value += v.at(op.src, b, i, j)[t];
        break;
      case kClassBias:
        value += v.weights[op.table][v.io.labels[b] * v.buffers[op.dst].channels + t];
        break;
      case kPositionBias:
        value += v.weights[op.table][(i * v.io.width + j) * v.buffers[op.dst].channels + t];
        break;
      case kClassPositionBias:
        value += v.weights[op.table][((v.io.labels[b] * v.io.height + i) * v.io.width + j) *
                                         v.buffers[op.dst].channels +
                                     t];
        break;
      default:
        break;
    }
    v.at(op.dst, b, i, j)[t] = value;
  }
}

// Finishes outputs c0 + c (c < lanes) of images b + m (m < count) at (i, j), sub-step g, from
// add_products(c, m, sum), which adds this stage's products to sum: at sub-step 0 to the bias (and
// dst's value when accumulating), later to dst's value; then the epilogue's ops for group g's
// channels. One thread per (channel, image).
template <typename T, typename Products>
__device__ void finish_outputs(const EngineView<T>& v, const Op& op, int64_t b, int64_t i,
                               int64_t j, int64_t g, int64_t epilogue, int64_t c0, int64_t lanes,
                               int64_t count, Products&& add_products) {
  const int64_t n = group_width(v, op);
  const T* bias = conv_bias(v, op);
  const bool accumulate = op.accumulate != 0;
  for (int64_t e = threadIdx.x; e < lanes * count; e += blockDim.x) {
    const int64_t c = e % lanes, m = e / lanes;
    const int64_t channel = c0 + c;
    T* out = v.at(op.dst, b, i, j) + m * v.strides[op.dst];
    T sum = g == 0 ? (accumulate ? out[channel] : T(0)) + (bias != nullptr ? bias[channel] : T(0))
                   : out[channel];
    sum = add_products(c, m, sum);
    out[channel] = sum;
    if (epilogue > 0 && channel >= g * n && channel < (g + 1) * n)
      run_epilogue(v, op, epilogue, sum, b + m, i, j, channel);
  }
}

// The channels of op's output that change at sub-step g, and this block's slice of them.
struct ChannelSlice {
  int64_t begin, end;
};

template <typename T>
__device__ ChannelSlice block_slice(const EngineView<T>& v, const Op& op, const Team& team,
                                    int64_t g) {
  const int64_t channels = v.buffers[op.dst].channels;
  const int64_t n = group_width(v, op);
  const int64_t begin = g == 0 ? 0 : g * n, end = g == 0 ? channels : (g + 1) * n;
  const int64_t per_block = (end - begin + team.blocks - 1) / team.blocks;
  const int64_t slice_begin = begin + team.block * per_block;
  return ChannelSlice{slice_begin, slice_begin + per_block < end ? slice_begin + per_block : end};
}

// One position of conv_op (below); `epilogue`: the ops after it that run in its epilogue.
template <typename T>
__device__ void conv_at(const EngineView<T>& v, const Op& op, const Team& team, int64_t i,
                        int64_t j, int64_t g, int64_t epilogue, T* partial) {
  const int64_t channels = v.buffers[op.dst].channels;
  const int64_t n = group_width(v, op);
  const ChannelSlice slice = block_slice(v, op, team, g);
  const int64_t slice_begin = slice.begin, slice_end = slice.end;
  const int64_t src_stride = v.strides[op.src];
  // Block-uniform loops (their barriers are met by every thread of the block): channel passes of
  // up to kChannelLanes (at most the block's threads), then image tiles.
  const int64_t pass = blockDim.x < kChannelLanes ? int64_t(blockDim.x) : int64_t(kChannelLanes);
  for (int64_t c0 = slice_begin; c0 < slice_end; c0 += pass) {
    const int64_t lanes = slice_end - c0 < pass ? slice_end - c0 : pass;
    // threads per channel, each a share of K (at most kMaxSplits: their sum is serial)
    const int64_t splits =
        blockDim.x / lanes < kMaxSplits ? int64_t(blockDim.x / lanes) : int64_t(kMaxSplits);
    const int64_t lane = threadIdx.x % lanes, split = threadIdx.x / lanes;
    const int64_t t = c0 + lane;
    for (int64_t m0 = 0; m0 < team.images; m0 += kTileImages) {
      const int64_t b = team.first_image + m0;
      const int64_t count = team.images - m0 < kTileImages ? team.images - m0 : kTileImages;
      T acc[kTileImages];
      for (int m = 0; m < kTileImages; ++m) acc[m] = T(0);
      if (split < splits) {
        auto product = [&](const T* a, const T* w, int64_t k) {
          for (int64_t q = split; q < k; q += splits) {
            const T wq = w[q * channels + t];
#pragma unroll
            for (int m = 0; m < kTileImages; ++m) {
              if (m < count) acc[m] += a[m * src_stride + q] * wq;
            }
          }
        };
        if (g == 0) off_centre_products(v, op, b, i, j, product);
        if (t >= g * n && t < (g + 1) * n) centre_product(v, op, b, i, j, g, product);
      }
      for (int m = 0; m < kTileImages; ++m) partial[threadIdx.x * kTileImages + m] = acc[m];
      __syncthreads();
      finish_outputs(v, op, b, i, j, g, epilogue, c0, lanes, count,
                     [&](int64_t c, int64_t m, T sum) {  // the splits' sums, in split order
                       for (int64_t s = 0; s < splits; ++s)
                         sum += partial[(s * lanes + c) * kTileImages + m];
                       return sum;
                     });
      __syncthreads();  // partial is rewritten next
    }
  }
}

#if defined(PF_TENSOR_CORES)
// conv_at on tensor cores (precision P: engine_mma.cuh), float32 only: tiles of 16 channels of
// the block's slice by 16 images of the cluster's, the block's warps splitting each tile's K.
// Needs whole warps (the launchers check).
template <int P>
__device__ void conv_at_mma(const EngineView<float>& v, const Op& op, const Team& team, int64_t i,
                            int64_t j, int64_t g, int64_t epilogue, unsigned char* shared) {
  const int64_t channels = v.buffers[op.dst].channels;
  const int64_t n = group_width(v, op);
  const ChannelSlice slice = block_slice(v, op, team, g);
  const int64_t src_stride = v.strides[op.src];
  const int warps = int(blockDim.x) / kWarp;
  for (int64_t c0 = slice.begin; c0 < slice.end; c0 += kMmaChannels) {
    const int64_t lanes = slice.end - c0 < kMmaChannels ? slice.end - c0 : kMmaChannels;
    for (int64_t m0 = 0; m0 < team.images; m0 += kMmaImages) {
      const int64_t b = team.first_image + m0;
      const int64_t count = team.images - m0 < kMmaImages ? team.images - m0 : kMmaImages;
      MmaTile<P> tile(shared, int(threadIdx.x) / kWarp, warps, int(threadIdx.x) % kWarp);
      // a product reaches the tile's columns in [lo, hi) only
      auto product_to = [&](int64_t lo, int64_t hi) {
        lo = lo > c0 ? lo : c0;
        hi = hi < c0 + lanes ? hi : c0 + lanes;
        return [&tile, lo, hi, b, count, src_stride, channels, c0](const float* a, const float* w,
                                                                   int64_t k) {
          if (lo < hi) tile.add(a, src_stride, count, w, channels, c0, lo, hi, k);
        };
      };
      if (g == 0) off_centre_products(v, op, b, i, j, product_to(0, channels));
      centre_product(v, op, b, i, j, g, product_to(g * n, (g + 1) * n));
      tile.store();
      __syncthreads();
      finish_outputs(
          v, op, b, i, j, g, epilogue, c0, lanes, count,
          [&](int64_t c, int64_t m, float sum) { return sum + mma_tile_sum(shared, warps, m, c); });
      __syncthreads();  // the warps' tiles are rewritten next
    }
  }
}

#endif  // PF_TENSOR_CORES

// The columns an op runs at in one stage: one position (the pixel phase, a right-to-left scan,
// an op that reads its own row), or every position of a row-phase op's row.
struct Columns {
  int64_t begin, end, step;
};

// Convolution at (i, j) for j in `cols`, sub-step g, for the cluster's images. Sub-step 0 sets
// every output channel to its bias (added to dst when accumulating) plus the off-centre taps, and
// group 0's channels get their centre tap; sub-step g > 0 adds group g's centre tap to group g's
// channels.
// P: the products' precision (engine_mma.cuh; not kFmaProducts only for float32).
template <int P, typename T>
__device__ void conv_op(const EngineView<T>& v, const Op& op, const Team& team, int64_t i,
                        const Columns& cols, int64_t g, int64_t epilogue, T* partial) {
  for (int64_t j = cols.begin; j < cols.end; j += cols.step) {
    if constexpr (P == kFmaProducts) {
      conv_at(v, op, team, i, j, g, epilogue, partial);
    } else {
#if defined(PF_TENSOR_CORES)
      conv_at_mma<P>(v, op, team, i, j, g, epilogue, reinterpret_cast<unsigned char*>(partial));
#else
      __trap();  // bf16 / tf32 tensor cores need sm_80: the launcher refuses older GPUs
#endif
    }
  }
}

// Any pointwise op: the team strides over the columns, the cluster's images and the group's
// channels.
template <typename T>
__device__ void pointwise_op(const EngineView<T>& v, const Op& op, const Team& team, int64_t i,
                             const Columns& cols, int64_t g) {
  const int64_t n = group_width(v, op);
  const int64_t columns = (cols.end - cols.begin + cols.step - 1) / cols.step;
  for (int64_t e = team.rank; e < columns * team.images * n; e += team.size) {
    const int64_t t = e % n, m = e / n % team.images;
    const int64_t j = cols.begin + e / (n * team.images) * cols.step;
    pointwise_elements(pointwise_operands(v, op, team.first_image + m, i, j, g), t, t + 1, 1);
  }
}

// The draw of one image by one warp: categorical() (pointwise.h) with the levels split into 32
// contiguous runs, one per lane, and the sums done as warp reductions and a warp prefix sum (the
// same exponentials). The same level as categorical() up to the order of the sums (a level can
// differ only where u lands within rounding of a boundary between two levels). -1 for non-finite
// logits.
template <typename T>
__device__ int64_t warp_categorical(const T* logits, int64_t levels, double temperature, double u,
                                    double* exps, int64_t lane) {
  const int64_t run = (levels + kWarp - 1) / kWarp;
  const int64_t first = lane * run < levels ? lane * run : levels;
  const int64_t last = first + run < levels ? first + run : levels;
  double top = -INFINITY;
  for (int64_t l = first; l < last; ++l) top = fmax(top, double(logits[l]));
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    top = fmax(top, __shfl_xor_sync(0xffffffffu, top, offset));
  double own = 0.0;
  for (int64_t l = first; l < last; ++l) {
    exps[l] = exp_nonpositive((double(logits[l]) - top) / temperature);
    own += exps[l];
  }
  double total = own;  // the same on every lane: each step adds the same two values
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  if (!(total < INFINITY) || !(top == top)) return -1;
  double inclusive = own;  // the lanes' runs summed up to this lane's
  for (int offset = 1; offset < kWarp; offset *= 2) {
    const double before =
        __shfl_sync(0xffffffffu, inclusive, lane >= offset ? lane - offset : lane);
    if (lane >= offset) inclusive += before;
  }
  const double before = __shfl_sync(0xffffffffu, inclusive, lane > 0 ? lane - 1 : 0);
  double cumulative = lane > 0 ? before : 0.0;
  const double target = u * total;
  int64_t found = levels;
  for (int64_t l = first; l < last; ++l) {
    cumulative += exps[l];
    if (exps[l] > 0 && cumulative > target) {  // never a level of probability 0
      found = l;
      break;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const int64_t other = __shfl_xor_sync(0xffffffffu, found, offset);
    found = other < found ? other : found;
  }
  return found < levels ? found : levels - 1;  // u * total rounded up to total
}

// The draw: one warp per image (one thread per image where the block is not whole warps) records
// the logits and draws, its exponentials in the image's scratch. A non-finite draw sets *error.
template <typename T>
__device__ void sample_op(const EngineView<T>& v, const Op& op, const Team& team, int64_t i,
                          int64_t j, int64_t g, double* scratch, int64_t scratch_stride,
                          int* error) {
  const bool warps = blockDim.x % kWarp == 0;
  const int64_t lanes = warps ? kWarp : 1;
  const int64_t lane = team.rank % lanes;
  for (int64_t m = team.rank / lanes; m < team.images; m += team.size / lanes) {
    const int64_t b = team.first_image + m;
    T* record = logits_record(v.io, b, g, i, j);
    const T* logits = sample_logits(v, op, b, i, j, g);
    if (record != nullptr) {
      const int64_t stride = record_stride(v.io);
      for (int64_t l = lane; l < v.io.levels; l += lanes) record[l * stride] = logits[l];
    }
    const int64_t index = sub_pixel_index(v.io, b, g, i, j);
    int64_t level;
    if (v.io.known[index]) {
      level = v.io.image_in[index];
    } else if (warps) {
      level = warp_categorical(logits, v.io.levels, v.io.temperature, v.io.uniforms[index],
                               scratch + b * scratch_stride, lane);
    } else {
      level = draw_level(v, op, b, i, j, g, scratch + b * scratch_stride);
    }
    if (lane == 0) {
      if (level < 0) {
        atomicExch(error, 1);
        level = 0;
      }
      store_level(v, op, b, i, j, g, level);
    }
  }
}

// The mixture of colour g: each block of the cluster takes images in turn; in a block, thread 0
// computes the components' weights (in the image's scratch, after the draw's exponentials), every
// thread its share of the levels, thread 0 the normaliser.
template <typename T>
__device__ void mixture_op(const EngineView<T>& v, const Op& op, const Team& team, int64_t i,
                           int64_t j, int64_t g, double* scratch, int64_t scratch_stride) {
  for (int64_t m = team.block; m < team.images; m += team.blocks) {
    const int64_t b = team.first_image + m;
    const MixtureAt<T> mix = mixture_at(v, op, b, i, j, g);
    T* out = mixture_out(v, op, b, i, j, g);
    double* own = scratch + b * scratch_stride;
    double* weights = own + v.io.levels;
    if (threadIdx.x == 0) mixture_weights(mix, weights);
    __syncthreads();
    mixture_joint(mix, weights, out, threadIdx.x, v.io.levels, blockDim.x);
    __syncthreads();
    if (threadIdx.x == 0) own[0] = double(log_sum_exp(out, v.io.levels));
    __syncthreads();
    const T norm = T(own[0]);
    for (int64_t l = threadIdx.x; l < v.io.levels; l += blockDim.x) out[l] -= norm;
    __syncthreads();  // own[0] is rewritten by the block's next image
  }
}

// batch: the images of the call; tile: images per cluster (the grid has ceil(batch / tile)
// clusters); P: the convolutions' products (engine_mma.cuh; other than kFmaProducts only for
// float32, with whole warps and engine_shared_bytes(threads, P)). The raster loop of engine_ops.h;
// every stage ends at the cluster barrier.
template <typename T, int P = kFmaProducts>
__global__ void __launch_bounds__(kEngineThreads, 1)
    engine_kernel(EngineView<T> v, int64_t batch, int64_t tile, double* scratch,
                  int64_t scratch_stride, int* error) {
  PF_DYNAMIC_SHARED(T, partial);
  const Team team = make_team(batch, tile);
  auto run_at = [&](const Op& op, int64_t r, const Columns& cols, int64_t g) {
    // the ops after a pixel-phase conv that its epilogue runs (epilogue.h); -1: one of those
    const int32_t epilogue = op.phase == kPixelPhase ? v.epilogue[&op - v.pixel_ops] : 0;
    if (epilogue < 0) return;  // ran in a conv's stage
    // a conv with no centre tap changes nothing after sub-step 0 (unless its epilogue runs)
    if (op.code == kConv && g > 0 && op.centre == kNoCentre && epilogue == 0) return;
    if (op.code == kConv) {
      conv_op<P>(v, op, team, r, cols, g, epilogue, partial);
    } else if (op.code == kSample) {
      for (int64_t j = cols.begin; j < cols.end; j += cols.step)
        sample_op(v, op, team, r, j, g, scratch, scratch_stride, error);
    } else if (op.code == kMixture) {
      for (int64_t j = cols.begin; j < cols.end; j += cols.step)
        mixture_op(v, op, team, r, j, g, scratch, scratch_stride);
    } else {
      pointwise_op(v, op, team, r, cols, g);
    }
    cluster_sync();  // the next stage reads what this one wrote, in any block of the cluster
  };
  // A row-phase op runs its whole row in one stage where its positions do not read each other:
  // not a conv of its own output (each position reads the one to its left), not an LSTM cell
  // (its previous cell state may lie on the same row). run_row_phase runs right-to-left scans
  // column by column itself.
  run_raster(
      v,
      [&](const Op& op, int64_t r, int64_t j, int64_t g) {
        run_at(op, r, Columns{j, j + 1, 1}, g);
      },
      [&](const Op& op, int64_t r) {
        if ((op.code == kConv && op.src == op.dst) || op.code == kLstmCell) return false;
        for (int64_t g = 0; g < op.groups; ++g)
          run_at(op, r, Columns{op.col_residue, v.io.width, op.period}, g);
        return true;
      },
      [](int64_t, int64_t) { return true; });
}

}  // namespace sampler
}  // namespace pixelfast
