// The CUDA engine's conv epilogues (engine_kernel.cuh): the pointwise ops right after a
// pixel-phase conv that only carry its output on, channel by channel, run in the conv's stage,
// with no barrier of their own. The thread that finishes channel t of the conv's output for
// colour group g applies them to it in order and writes each result where the op would: a chain
// of ReLUs, ELUs, residual adds (of a map finished before the conv) and class and position biases,
// as in the residual blocks of PixelCNN (conv, add, relu) and the Gated PixelCNN (conv, add, class
// bias).
// The chain stops at an op that reads other channels (a gate) or another position, or that
// writes the conv's source, which other threads of the stage may still be reading.
//
// Which ops fuse depends on the plan alone: the host works it out once per call (epilogue_table)
// and the kernel reads it per op.
#pragma once

#include <cstdint>
#include <vector>

#include "plan.h"

namespace pixelfast {
namespace sampler {

constexpr int64_t kMaxEpilogueOps = 8;  // the longest chain of ops a conv's epilogue runs

// Whether `next` carries the chain of `conv` on from buffer `*current` (and moves *current to its
// output).
inline bool carries_chain(const Buffer* buffers, const Op& conv, const Op& next, int32_t* current) {
  const bool same_place = next.phase == kPixelPhase && next.period == conv.period &&
                          next.row_residue == conv.row_residue &&
                          next.col_residue == conv.col_residue && next.groups == conv.groups &&
                          next.dst != conv.src &&
                          buffers[next.dst].channels == buffers[conv.dst].channels;
  if (!same_place) return false;
  bool carries = false;
  switch (next.code) {
    case kRelu:
    case kElu:
      carries = next.src == *current;
      break;
    case kAdd:  // dst += another map (accumulate), or dst = the chain (a copy)
      carries =
          next.src_dy == 0 && (next.accumulate != 0 ? next.dst == *current && next.src != *current
                                                    : next.src == *current);
      break;
    case kClassBias:
    case kPositionBias:
    case kClassPositionBias:
      carries = next.dst == *current;
      break;
    default:
      break;
  }
  if (carries) *current = next.dst;
  return carries;
}

// Per pixel op: for a conv, how many of the ops after it run in its epilogue; -1 for an op that
// runs in a conv's epilogue; 0 otherwise.
inline std::vector<int32_t> epilogue_table(const std::vector<Buffer>& buffers,
                                           const std::vector<Op>& pixel_ops) {
  const int64_t count = static_cast<int64_t>(pixel_ops.size());
  std::vector<int32_t> table(pixel_ops.size(), 0);
  for (int64_t o = 0; o < count; ++o) {
    const Op& conv = pixel_ops[o];
    if (conv.code != kConv || conv.phase != kPixelPhase) continue;
    int32_t current = conv.dst;
    int32_t chain = 0;
    while (chain < kMaxEpilogueOps && o + chain + 1 < count &&
           carries_chain(buffers.data(), conv, pixel_ops[o + chain + 1], &current)) {
      ++chain;
      table[o + chain] = -1;
    }
    table[o] = chain;
  }
  return table;
}

}  // namespace sampler
}  // namespace pixelfast
