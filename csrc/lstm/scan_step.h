// One step of a LSTM scan: which pixels it visits, and which neighbours each pixel reads (forward)
// and is read by (backward). Plain host/device functions, shared by the CPU chunks (lstm_cpu.cpp)
// and the CUDA kernels (lstm_kernels.cuh); no torch in here.
//
// Row LSTM, step = image row i: scan row n = b * W + j is pixel (i, j) of image b; X's block s
// (s = 0 .. k - 1) is h(i - 1, j + s - k/2).
// Diagonal LSTM, step = skewed column t: scan row n = (i - first_row(t)) * B + b is pixel
// (i, t - i); X's block 0 is h(i - 1, j) (above), block 1 is h(i, j - 1) (left).
// The cell path runs down a column (Row LSTM: c_prev = c(i - 1, j)) or along a row (Diagonal:
// c_prev = c(i, j - 1)). Everything outside the image is zero.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace pixelfast {
namespace lstm {

enum class ScanKind : int { kRow, kDiagonal };

// Diagonal scan geometry. Skewing shifts image row i right by i, so skewed column t holds the
// pixels (i, t - i): an anti-diagonal. Steps t = 0 .. H + W - 2; at step t the rows
// first_row(t) .. last_row(t) are inside the image.
PF_HD int64_t diag_steps(int64_t height, int64_t width) { return height + width - 1; }
PF_HD int64_t first_row(int64_t t, int64_t width) { return t - width + 1 > 0 ? t - width + 1 : 0; }
PF_HD int64_t last_row(int64_t t, int64_t height) { return t < height - 1 ? t : height - 1; }
PF_HD int64_t diag_len(int64_t t, int64_t height, int64_t width) {
  return last_row(t, height) - first_row(t, width) + 1;
}

// Filled once on the host per step and passed whole to every kernel of the step.
struct Step {
  ScanKind kind;
  int64_t batch, hidden, height, width;
  int64_t index;   // the image row i (Row LSTM) or the skewed column t (Diagonal LSTM)
  int64_t taps;    // blocks of `hidden` channels in a row of X: k (Row LSTM) or 2 (Diagonal)
  int64_t groups;  // colour groups of the gate layout (cell.h)
};

// Pixels visited by the step: the rows of its scan buffers.
PF_HD int64_t scan_rows(const Step& s) {
  return s.kind == ScanKind::kRow ? s.batch * s.width
                                  : diag_len(s.index, s.height, s.width) * s.batch;
}

// Steps of the scan: image rows, or skewed columns.
PF_HD int64_t scan_steps(const Step& s) {
  return s.kind == ScanKind::kRow ? s.height : diag_steps(s.height, s.width);
}

// The most rows any step has (the size of the scan buffers).
PF_HD int64_t max_scan_rows(const Step& s) {
  return s.kind == ScanKind::kRow ? s.batch * s.width
                                  : s.batch * (s.height < s.width ? s.height : s.width);
}

// A pixel of image b; offset = (b * H + i) * W + j, its place in a channels-last image.
struct Pixel {
  int64_t b, i, j, offset;
};

PF_HD Pixel pixel(const Step& s, int64_t n) {
  Pixel p;
  if (s.kind == ScanKind::kRow) {
    p.b = n / s.width;
    p.i = s.index;
    p.j = n % s.width;
  } else {
    p.i = first_row(s.index, s.width) + n / s.batch;
    p.b = n % s.batch;
    p.j = s.index - p.i;
  }
  p.offset = (p.b * s.height + p.i) * s.width + p.j;
  return p;
}

// The pixel whose h is block `tap` of p's row of X, or -1 if that lies outside the image.
PF_HD int64_t source(const Step& s, const Pixel& p, int64_t tap) {
  if (s.kind == ScanKind::kRow) {
    const int64_t shift = tap - s.taps / 2, jj = p.j + shift;
    return p.i > 0 && jj >= 0 && jj < s.width ? p.offset - s.width + shift : -1;
  }
  if (tap == 0) return p.i > 0 ? p.offset - s.width : -1;  // above
  return p.j > 0 ? p.offset - 1 : -1;                      // left
}

// The pixel whose c is p's c_prev, or -1 (c_prev = 0).
PF_HD int64_t cell_source(const Step& s, const Pixel& p) {
  if (s.kind == ScanKind::kRow) return p.i > 0 ? p.offset - s.width : -1;
  return p.j > 0 ? p.offset - 1 : -1;
}

// Scan row, in step index + 1, of the Diagonal LSTM's pixel (i, t + 1 - i).
PF_HD int64_t diag_next_row(const Step& s, int64_t i, int64_t b) {
  return (i - first_row(s.index + 1, s.width)) * s.batch + b;
}

// Backward: the scan row, in step index + 1, of the pixel that read p's h as block `tap` of its
// row of X; -1 if none (outside the image, or p is in the last step).
PF_HD int64_t reader(const Step& s, const Pixel& p, int64_t tap) {
  if (s.kind == ScanKind::kRow) {
    const int64_t jn = p.j - tap + s.taps / 2;
    return p.i + 1 < s.height && jn >= 0 && jn < s.width ? p.b * s.width + jn : -1;
  }
  if (tap == 0) return p.i + 1 < s.height ? diag_next_row(s, p.i + 1, p.b) : -1;  // the one below
  return p.j + 1 < s.width ? diag_next_row(s, p.i, p.b) : -1;                     // to the right
}

// Backward: the scan row, in step index + 1, of the pixel whose c_prev is p's c, or -1.
PF_HD int64_t cell_reader(const Step& s, const Pixel& p) {
  if (s.kind == ScanKind::kRow) return p.i + 1 < s.height ? p.b * s.width + p.j : -1;
  return p.j + 1 < s.width ? diag_next_row(s, p.i, p.b) : -1;
}

// The same readers as image pixels (their offsets), for the one-launch scans that keep the
// gradients in image layout: the pixel that read p's h as block `tap`, or -1.
PF_HD int64_t reader_pixel(const Step& s, const Pixel& p, int64_t tap) {
  if (s.kind == ScanKind::kRow) {
    const int64_t jn = p.j - tap + s.taps / 2;
    return p.i + 1 < s.height && jn >= 0 && jn < s.width ? p.offset + s.width - p.j + jn : -1;
  }
  if (tap == 0) return p.i + 1 < s.height ? p.offset + s.width : -1;  // the one below
  return p.j + 1 < s.width ? p.offset + 1 : -1;                       // to the right
}

// The pixel whose c_prev is p's c, or -1.
PF_HD int64_t cell_reader_pixel(const Step& s, const Pixel& p) {
  if (s.kind == ScanKind::kRow) return p.i + 1 < s.height ? p.offset + s.width : -1;
  return p.j + 1 < s.width ? p.offset + 1 : -1;
}

}  // namespace lstm
}  // namespace pixelfast
