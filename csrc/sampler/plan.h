// The plan the sampling engine runs: buffers and a program of ops, decoded from the flat integer
// lists that pixelfast/sampling/plan.py writes. Plain structs, usable on host and device.
//
// A buffer holds one activation map as a ring of its last `rows` image rows, per image, laid out
// [image][ring row][pad + W + pad columns][channels]. Pad columns stay zero (the convolutions'
// zero padding); rows above the image are never read (their segments are skipped). So the cache is
//     sum over buffers of  rows x (W + 2 pad) x channels   values per image,
// i.e. O(layers x kernel rows x width x channels), independent of the image height (less where the
// decoder finds one-position buffers: Buffer::local).
//
// Ops run at one position (r, j) for one channel group g. Row-phase ops run once per image row i,
// before the row's pixels, for every column and group, at row r = i + row_offset (the Gated
// PixelCNN's vertical stack at r = i; a right-to-left LSTM scan of the finished row r = i - 1,
// columns in reverse); pixel-phase ops run per pixel (r = i) and per colour sub-step g.
#pragma once

#include <cstdint>

#include "../common/host_device.h"
#include "../masked_conv/masked_conv.h"

namespace pixelfast {
namespace sampler {

// The plan's wire format is defined once, by the lists below: the engine's enums and structs and
// the decoder (plan_decode.cpp) are generated from them, and the library reports them
// (sampler_plan_format) so that pixelfast/sampling/plan_format.py, which must write the same
// format even without the library, is checked against them.

constexpr int kMaxSegments = 8;

// X(enumerator, name, code); the name is the PlanBuilder method that writes the op.
// clang-format off: a table
#define PIXELFAST_OP_CODES(X)                                                                      \
  X(kConv, conv, 1)             /* dst[g] = bias[g] + sum over segments (+ centre tap) of W . src */ \
  X(kRelu, relu, 2)             /* dst[g] = max(src[g], 0) */                                        \
  X(kGate, gate, 3)             /* dst[g] = tanh(a) * sigmoid(b), src group g = [a, b] */            \
  X(kAdd, add, 4)               /* dst[g] += src[g] (or = src[g], a copy, when not accumulating) */  \
  X(kClassBias, class_bias, 5)  /* dst[g] += table[label][g] */                                      \
  X(kSample, sample, 6)         /* draw (or teacher-force) colour g from the logits in src[g] */     \
  X(kLstmCell, lstm_cell, 7)    /* gates src[g] = [i, f, o, g] x m, c = f c_prev + i g, dst[g] = o tanh(c) */ \
  X(kCondition, condition, 8)   /* dst[g] += condition[b, r, j][g]: the call's input map, K = dst channels */ \
  X(kElu, elu, 9)               /* dst[g] = elu(src[g]) (alpha 1: x, or exp(x) - 1 below zero) */    \
  X(kMul, mul, 10)              /* dst[g] *= src[g] */                                               \
  X(kConcatElu, concat_elu, 11) /* dst = elu([src, -src]), twice src's channels; one group */        \
  X(kCat, cat, 12)              /* dst = [src, cell]: src's channels, then buffer cell's; one group */ \
  X(kSigmoidGate, sigmoid_gate, 13) /* dst[g] = a * sigmoid(b), src group g = [a, b] */              \
  X(kMixture, mixture, 14)      /* dst[g] = colour g's level log-probabilities (mixture.h) */        \
  X(kPositionBias, position_bias, 15) /* dst[g] += table[r][j][g]: a bias per position */       \
  X(kClassPositionBias, class_position_bias, 16) /* dst[g] += table[label][r][j][g] */
// clang-format on

#define PIXELFAST_PHASES(X) X(kRowPhase, row, 0) X(kPixelPhase, pixel, 1)
#define PIXELFAST_CENTRES(X) X(kNoCentre, none, 0) X(kCentreA, a, 1) X(kCentreB, b, 2)

#define PIXELFAST_ENUMERATOR(enumerator, name, value) enumerator = value,
enum OpCode : int32_t { PIXELFAST_OP_CODES(PIXELFAST_ENUMERATOR) };
enum Phase : int32_t { PIXELFAST_PHASES(PIXELFAST_ENUMERATOR) };
enum CentreMask : int32_t { PIXELFAST_CENTRES(PIXELFAST_ENUMERATOR) };
#undef PIXELFAST_ENUMERATOR

// Buffer 0 holds the scaled image; only kSample writes it.
constexpr int64_t kInputBuffer = 0;

struct Buffer {
  int64_t channels;
  int64_t rows;  // ring length
  int64_t pad;   // zero columns on each side
  // 1: the buffer holds one position (decode_plan sets it where only pixel-phase ops touch the
  // buffer, each at the pixel being drawn): the same few cache lines at every pixel, not a new
  // part of a row that was last touched a row ago.
  int64_t local = 0;
};

// X(type, field), in wire order. A run of `cols` consecutive taps of one kernel row: input row
// i + dy, columns j + dx ... Its packed weight is [cols * in_channels, out_channels], row index
// = tap * in_channels + channel.
#define PIXELFAST_SEGMENT_FIELDS(X) \
  X(int64_t, dy) X(int64_t, dx) X(int64_t, cols) X(int64_t, weight)

// X(type, field): an op record is its length, these fields in this order, then num_segments
// segments.
// clang-format off: a table
#define PIXELFAST_OP_FIELDS(X)                                                                     \
  X(int32_t, code)          /* OpCode */                                                         \
  X(int32_t, phase)         /* Phase */                                                          \
  X(int64_t, dst)                                                                                \
  X(int64_t, src)                                                                                \
  X(int64_t, groups)                                                                             \
  X(int32_t, centre)        /* kConv: CentreMask */                                              \
  X(int64_t, centre_weight) /* kConv: [in_channels, out_channels], or -1 */                      \
  X(int64_t, bias)          /* kConv: [out_channels], or -1 */                                   \
  X(int64_t, table)         /* kClassBias: [classes, ch.]; k(Class)PositionBias: ([cl.,] H, W, ch.) */ \
  X(int32_t, accumulate)    /* kConv, kAdd: add into dst instead of overwriting it */            \
  X(int64_t, src_dy)        /* kAdd: src read at row r + src_dy (<= 0; none above the image) */  \
  X(int64_t, row_offset)    /* row-phase ops: run at row i + row_offset (<= 0) */                \
  X(int32_t, reverse)       /* row-phase ops: columns right to left, one scan (row_ops_end) */   \
  X(int64_t, cell)          /* kLstmCell: the cell-state buffer; kCat: the second source */      \
  X(int64_t, prev_dy)       /* kLstmCell: the previous cell state's row, relative to r */        \
  X(int64_t, prev_dx)       /* kLstmCell: and its column, relative to j */                       \
  X(int64_t, period)        /* runs only where r % period == row_residue and j % period == ... */ \
  X(int64_t, row_residue)                                                                        \
  X(int64_t, col_residue)   /* ... col_residue: a map at 1/period of the size (runs_at) */      \
  X(int64_t, num_segments)  /* kConv: how many of segments[] are used */
// clang-format on

#define PIXELFAST_MEMBER(type, field) type field;
struct Segment {
  PIXELFAST_SEGMENT_FIELDS(PIXELFAST_MEMBER)
};

struct Op {
  PIXELFAST_OP_FIELDS(PIXELFAST_MEMBER)
  Segment segments[kMaxSegments];
};
#undef PIXELFAST_MEMBER

// What one engine call reads and writes besides its buffers: sizes and raw tensor data, the same
// for the CPU and the CUDA engine.
template <typename T>
struct EngineIO {
  int64_t channels, height, width, levels;
  double temperature;
  const int64_t* labels;    // [B] or null
  const int64_t* image_in;  // [B, C, H, W]: the known levels
  const bool* known;        // [B, C, H, W]
  const double* uniforms;   // [B, C, H, W]: one uniform per sub-pixel
  const T* condition;       // [B, H, W, condition_channels], or null
  int64_t condition_channels;
  int64_t* image_out;  // [B, C, H, W]
  T* logits_out;       // [B, levels, C, H, W], or null
};

// Where an op runs. A map at 1/s of the image's size (PixelCNN++'s U-net) is stored at full-size
// coordinates, its position (i, j) at (s i, s j), and its ops have period s: they run at those
// positions only. A stride-2 transposed conv is four ops of period 2s, one per residue.
PF_HD bool runs_at(const Op& op, int64_t r, int64_t j) {
  return op.period == 1 || (r % op.period == op.row_residue && j % op.period == op.col_residue);
}

// Row-phase ops run in runs: a run of consecutive reversed ops is one right-to-left scan, executed
// column by column (each column's ops read the column to its right); any other op is a run of its
// own, executed for every column before the next op reads them. Returns the end of the run at o.
PF_HD int64_t row_ops_end(const Op* ops, int64_t count, int64_t o) {
  if (!ops[o].reverse) return o + 1;
  int64_t end = o + 1;
  while (end < count && ops[end].reverse && ops[end].row_offset == ops[o].row_offset) ++end;
  return end;
}

// The row phase of image row i, shared by the engines: every run of row-phase ops at its row
// r = i + row_offset (skipped above the image), calling run(op, r, j, g) in the order above. An
// op that is not part of a right-to-left scan goes to run_row(op, r) first: an engine that runs
// such an op over its whole row at once does so and returns true; false has it run column by
// column.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename Run, typename RunRow>
PF_HD void run_row_phase(const Op* ops, int64_t count, int64_t i, int64_t width, Run&& run,
                         RunRow&& run_row) {
  for (int64_t o = 0; o < count;) {
    const int64_t end = row_ops_end(ops, count, o);
    const Op& first = ops[o];
    const int64_t r = i + first.row_offset;
    if (r >= 0) {
      if (first.reverse) {  // a right-to-left scan: its ops column by column (period 1)
        for (int64_t j = width - 1; j >= 0; --j) {
          for (int64_t q = o; q < end; ++q) {
            for (int64_t g = 0; g < ops[q].groups; ++g) run(ops[q], r, j, g);
          }
        }
      } else if (r % first.period == first.row_residue && !run_row(first, r)) {
        // every column of one op before the next reads them
        for (int64_t j = first.col_residue; j < width; j += first.period) {
          for (int64_t g = 0; g < first.groups; ++g) run(first, r, j, g);
        }
      }
    }
    o = end;
  }
}

// Input channels [0, prefix) that the centre tap of output group g reads: the masked
// convolution's rule (contiguous colour groups), none without a centre tap.
PF_HD int64_t centre_prefix(int64_t in_channels, int64_t groups, int32_t centre, int64_t g) {
  return centre == kNoCentre
             ? 0
             : masked_conv::centre_prefix(in_channels, groups, centre == kCentreB, g);
}

// Offset of position (row, column) of one image in a buffer; `row` must be >= 0.
PF_HD int64_t position_offset(const Buffer& b, int64_t width, int64_t row, int64_t column) {
  if (b.local != 0) return 0;
  return ((row % b.rows) * (width + 2 * b.pad) + column + b.pad) * b.channels;
}

PF_HD int64_t image_stride(const Buffer& b, int64_t width) {
  if (b.local != 0) return b.channels;
  return b.rows * (width + 2 * b.pad) * b.channels;
}

}  // namespace sampler
}  // namespace pixelfast
