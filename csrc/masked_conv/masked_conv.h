// Tap math of the masked convolution, shared by the CPU and CUDA kernels (no torch in here).
//
// A k x k mask (k odd, c = k / 2) lets through the taps of the rows above the centre (r < c), the
// left part of the centre row (r == c, s < c) and, per colour group, the centre tap. Off-centre
// taps t = 0 .. T-1 are numbered in raster order, T = c * k + c: they are exactly the first T
// entries of the flattened k * k kernel, and the centre is entry T. Colour groups are contiguous
// channel blocks, so the centre tap of output group g reads a prefix of the input channels.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace pixelfast {
namespace masked_conv {

// The largest kernel size the op takes (odd sizes 1 .. kMaxKernelSize).
constexpr int64_t kMaxKernelSize = 11;

// One small params struct per op (shapes of one call).
struct Params {
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t height;
  int64_t width;
  int64_t kernel_size;
  int64_t color_groups;
  bool mask_b;  // false: mask A
};

// Number of off-centre taps the mask lets through.
PF_HD int64_t offcentre_taps(int64_t k) {
  const int64_t c = k / 2;
  return c * k + c;
}

// Kernel row r and column s of off-centre tap t (raster order).
PF_HD void tap_position(int64_t t, int64_t k, int64_t* r, int64_t* s) {
  const int64_t c = k / 2;
  if (t < c * k) {
    *r = t / k;
    *s = t % k;
  } else {
    *r = c;
    *s = t - c * k;
  }
}

// Input channels [0, prefix) that the centre tap connects to output group g.
PF_HD int64_t centre_prefix(int64_t in_channels, int64_t groups, bool mask_b, int64_t g) {
  return (in_channels / groups) * (mask_b ? g + 1 : g);
}

// The taps the mask lets through form three dense blocks of the kernel, each computed by the
// backend's own convolution (oneDNN on CPU, cuDNN on CUDA) so no masked tap is ever multiplied:
//   kTop:  rows [0, c) x columns [0, k)        every row above the centre
//   kLeft: row c x columns [0, c)               the left part of the centre row
//   centre tap (c, c), per output colour group, over its input-channel prefix (a 1x1 product).
// A 3x3 kernel instead runs as one convolution over kHalf, rows [0, c] x columns [0, k) with the
// masked taps of the centre row zeroed: it multiplies 1 (and part of the centre) of its 6 taps in
// vain, but makes one pass over the input and the output where the three blocks make four (and
// two padded copies); measured, it is as fast at 192 channels and up to twice as fast at 16.
enum Block { kTop = 0, kLeft = 1, kHalf = 2 };

// A dense 1x1 (one colour group, mask B) is kHalf too, with nothing masked.
PF_HD bool single_block(int64_t k, int64_t color_groups, bool mask_b) {
  return k == 3 || (k == 1 && color_groups == 1 && mask_b);
}

struct BlockShape {
  int64_t row0, rows, col0, cols;  // the block's place in the k x k kernel
};

PF_HD BlockShape block_shape(Block block, int64_t k) {
  const int64_t c = k / 2;
  return block == kTop ? BlockShape{0, c, 0, k}
                       : (block == kLeft ? BlockShape{c, 1, 0, c} : BlockShape{0, c + 1, 0, k});
}

// Zero padding (left, right, top, bottom; negative crops) that makes a *valid* convolution with
// the block's kernel produce, at output (h, w), the sum over the block's taps (r, s) of
// weight[r, s] * x[h + r - c, w + s - c]: the input row/column a tap reads is offset by c - row0.
PF_HD void block_padding(Block block, int64_t k, int64_t pad[4]) {
  const int64_t c = k / 2;
  const BlockShape b = block_shape(block, k);
  pad[0] = c - b.col0;           // left
  pad[1] = b.cols - 1 - pad[0];  // right: the padded width is W + cols - 1
  pad[2] = c - b.row0;           // top
  pad[3] = b.rows - 1 - pad[2];  // bottom: the padded height is H + rows - 1
}

}  // namespace masked_conv
}  // namespace pixelfast
