// Host side of the sampling engine, shared by the CPU and CUDA engines: the op's argument checks,
// decoding and validating the plan (TORCH_CHECK on anything inconsistent), the plan format's
// report, and the zero-filled buffer storage of one call. No kernels and no op registrations here.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "engine.h"

namespace pixelfast {
namespace sampler {

namespace {

#define PIXELFAST_COUNT(...) +1
constexpr int64_t kOpHeader =
    1 PIXELFAST_OP_FIELDS(PIXELFAST_COUNT);  // the length, then the fields
constexpr int64_t kSegmentFields = 0 PIXELFAST_SEGMENT_FIELDS(PIXELFAST_COUNT);
#undef PIXELFAST_COUNT

// Every plan field (sizes, offsets, codes, indices) lies in [-kMaxField, kMaxField], so that no
// product of a few of them overflows int64 and no code is truncated on its way to int32.
constexpr int64_t kMaxField = int64_t(1) << 24;
constexpr int64_t kMaxInt = std::numeric_limits<int>::max();  // BLAS dimensions are int

void check_conv(const Op& op, const Plan& plan, const std::vector<at::Tensor>& weights) {
  const Buffer& src = plan.buffers[op.src];
  const Buffer& dst = plan.buffers[op.dst];
  TORCH_CHECK(dst.channels % op.groups == 0, "sample_cached: conv output channels ", dst.channels,
              " not divisible by its groups ", op.groups);
  TORCH_CHECK(op.num_segments >= 0 && op.num_segments <= kMaxSegments, "sample_cached: a conv has ",
              op.num_segments, " segments (at most ", kMaxSegments, ")");
  for (int64_t s = 0; s < op.num_segments; ++s) {
    const Segment& seg = op.segments[s];
    TORCH_CHECK(seg.dy <= 0 && src.rows >= 1 - seg.dy - op.row_offset,
                "sample_cached: segment row offset ", seg.dy, " is outside its source's ring of ",
                src.rows, " rows");
    TORCH_CHECK(seg.cols >= 1 && seg.dx >= -src.pad && seg.dx + seg.cols - 1 <= src.pad,
                "sample_cached: segment columns [", seg.dx, ", ", seg.dx + seg.cols,
                ") exceed the source's padding ", src.pad);
    // One that runs once per pixel (one group) may read the current position of a map the ops
    // before it wrote; the image's current pixel is drawn after it.
    const bool reads_current = op.groups == 1 && op.src != kInputBuffer;
    TORCH_CHECK(op.phase == kRowPhase || seg.dy < 0 || seg.dx + seg.cols <= (reads_current ? 1 : 0),
                "sample_cached: a pixel-phase conv may not read ",
                reads_current ? "later pixels" : "the current pixel or later ones");
    TORCH_CHECK(seg.weight >= 0 && seg.weight < static_cast<int64_t>(weights.size()),
                "sample_cached: weight index out of range");
    TORCH_CHECK(seg.cols * src.channels <= kMaxInt, "sample_cached: a segment of ",
                seg.cols * src.channels, " values is too long");
    const at::Tensor& w = weights[seg.weight];
    TORCH_CHECK(w.dim() == 2 && w.size(0) == seg.cols * src.channels && w.size(1) == dst.channels,
                "sample_cached: segment weight has shape ", w.sizes(), ", expected [",
                seg.cols * src.channels, ", ", dst.channels, "]");
  }
  // A conv of its own output reads only positions it wrote before (the engines' threads write
  // the position's channels while others read it): on rows above, or to the left on its own row
  // (to the right in a right-to-left scan).
  if (op.src == op.dst) {
    bool earlier = op.centre == kNoCentre;
    for (int64_t s = 0; s < op.num_segments; ++s) {
      const Segment& seg = op.segments[s];
      earlier = earlier && (seg.dy < 0 || (op.reverse ? seg.dx >= 1 : seg.dx + seg.cols <= 0));
    }
    TORCH_CHECK(earlier,
                "sample_cached: a conv of its own output may read only the positions "
                "before the one it writes");
  }
  if (op.centre != kNoCentre) {
    TORCH_CHECK(op.centre == kCentreA || op.centre == kCentreB, "sample_cached: bad centre mask");
    TORCH_CHECK(src.channels % op.groups == 0, "sample_cached: conv input channels ", src.channels,
                " not divisible by its groups ", op.groups);
    TORCH_CHECK(op.centre_weight >= 0 && op.centre_weight < static_cast<int64_t>(weights.size()),
                "sample_cached: centre weight index out of range");
    const at::Tensor& w = weights[op.centre_weight];
    TORCH_CHECK(w.dim() == 2 && w.size(0) == src.channels && w.size(1) == dst.channels,
                "sample_cached: centre weight has shape ", w.sizes(), ", expected [", src.channels,
                ", ", dst.channels, "]");
  }
  if (op.bias >= 0) {
    TORCH_CHECK(op.bias < static_cast<int64_t>(weights.size()),
                "sample_cached: bias index out of range");
    const at::Tensor& b = weights[op.bias];
    TORCH_CHECK(b.dim() == 1 && b.size(0) == dst.channels, "sample_cached: bias has shape ",
                b.sizes(), ", expected [", dst.channels, "]");
  }
}

// Buffer.local: a buffer of one row and no padding that no row-phase op touches, that every op
// touching it touches at every pixel (period 1), and that no op reads at another position (the
// off-centre taps of a conv, an add from an earlier row, an LSTM cell's previous state).
void mark_local_buffers(Plan& plan) {
  std::vector<bool> local(plan.buffers.size(), true);
  local[kInputBuffer] = false;  // the image: the draws write it, the network reads it everywhere
  // Fields an op does not use (a class bias's src, a relu's cell) are not range-checked: skip any
  // value outside the buffers.
  const int64_t count = static_cast<int64_t>(local.size());
  auto touch = [&](int64_t b, bool keep) {
    if (b >= 0 && b < count && !keep) local[b] = false;
  };
  for (const Op& op : plan.row_ops) {
    touch(op.src, false);
    touch(op.dst, false);
    touch(op.cell, false);
  }
  for (const Op& op : plan.pixel_ops) {
    const bool every_pixel = op.period == 1;
    const bool reads_here = !(op.code == kConv && op.num_segments > 0) &&
                            !(op.code == kAdd && op.src_dy != 0) && op.code != kLstmCell;
    touch(op.src, every_pixel && reads_here);
    touch(op.dst, every_pixel);
    touch(op.cell, every_pixel && op.code != kLstmCell);
  }
  for (size_t b = 0; b < plan.buffers.size(); ++b) {
    Buffer& buffer = plan.buffers[b];
    if (local[b] && buffer.rows == 1 && buffer.pad == 0) buffer.local = 1;
  }
}

}  // namespace

Plan decode_plan(c10::ArrayRef<int64_t> buffers, c10::ArrayRef<int64_t> program,
                 const std::vector<at::Tensor>& weights, int64_t channels, int64_t height,
                 int64_t width, int64_t levels, bool has_labels, int64_t condition_channels) {
  Plan plan;
  TORCH_CHECK(buffers.size() % 3 == 0 && !buffers.empty(),
              "sample_cached: buffers must be (channels, rows, pad) triples");
  for (size_t b = 0; b < buffers.size(); b += 3) {
    Buffer buffer{buffers[b], buffers[b + 1], buffers[b + 2]};
    TORCH_CHECK(buffer.channels >= 1 && buffer.rows >= 1 && buffer.pad >= 0 &&
                    buffer.channels <= kMaxField && buffer.rows <= kMaxField &&
                    buffer.pad <= kMaxField,
                "sample_cached: buffer ", b / 3, " has bad shape (", buffer.channels, ", ",
                buffer.rows, ", ", buffer.pad, ")");
    plan.buffers.push_back(buffer);
  }
  TORCH_CHECK(plan.buffers[0].channels == channels, "sample_cached: buffer 0 (the image) has ",
              plan.buffers[0].channels, " channels, the image ", channels);
  const int64_t num_buffers = static_cast<int64_t>(plan.buffers.size());
  bool samples = false;
  size_t at = 0;
  while (at < program.size()) {
    const int64_t length = program[at];
    TORCH_CHECK(length >= kOpHeader && length <= static_cast<int64_t>(program.size() - at),
                "sample_cached: truncated op at position ", at, " of the program");
    const int64_t* f = program.data() + at;
    for (int64_t q = 1; q < length; ++q) {
      TORCH_CHECK(f[q] >= -kMaxField && f[q] <= kMaxField, "sample_cached: field ", q,
                  " of the op at position ", at, " is out of range: ", f[q]);
    }
    Op op{};
    const int64_t* next = f + 1;
#define PIXELFAST_DECODE(type, field) op.field = static_cast<type>(*next++);
    PIXELFAST_OP_FIELDS(PIXELFAST_DECODE)
#undef PIXELFAST_DECODE
    TORCH_CHECK(op.num_segments >= 0 && op.num_segments <= kMaxSegments &&
                    length == kOpHeader + kSegmentFields * op.num_segments,
                "sample_cached: op at position ", at, " has a bad length");
    for (int64_t s = 0; s < op.num_segments; ++s) {
      Segment& segment = op.segments[s];
#define PIXELFAST_DECODE_SEGMENT(type, field) segment.field = static_cast<type>(*next++);
      PIXELFAST_SEGMENT_FIELDS(PIXELFAST_DECODE_SEGMENT)
#undef PIXELFAST_DECODE_SEGMENT
    }
    TORCH_CHECK(op.phase == kRowPhase || op.phase == kPixelPhase, "sample_cached: bad phase ",
                op.phase);
    TORCH_CHECK(op.dst >= 0 && op.dst < num_buffers, "sample_cached: op destination out of range");
    const bool reads_source = op.code != kClassBias && op.code != kPositionBias &&
                              op.code != kClassPositionBias &&
                              op.code != kCondition;  // else a table or input
    TORCH_CHECK(!reads_source || (op.src >= 0 && op.src < num_buffers),
                "sample_cached: op source out of range");
    TORCH_CHECK(op.groups >= 1, "sample_cached: groups must be >= 1");
    TORCH_CHECK(op.phase == kRowPhase || op.groups == channels || op.groups == 1,
                "sample_cached: a pixel-phase op must have one group per colour (", channels,
                ") or one group (once per pixel), got ", op.groups);
    const bool per_colour = op.code == kSample || op.code == kMixture || op.code == kCondition;
    TORCH_CHECK(op.phase == kRowPhase || op.groups == channels || !per_colour,
                "sample_cached: sample, mixture and condition ops must have one group per colour (",
                channels, "), got ", op.groups);
    TORCH_CHECK(op.phase == kRowPhase || op.groups == channels || op.centre == kNoCentre,
                "sample_cached: a conv run once per pixel may not read the pixel's colours (a "
                "centre tap)");
    TORCH_CHECK(op.period >= 1 && op.row_residue >= 0 && op.row_residue < op.period &&
                    op.col_residue >= 0 && op.col_residue < op.period,
                "sample_cached: bad period ", op.period, " with residues ", op.row_residue, ", ",
                op.col_residue);
    TORCH_CHECK(op.period == 1 || op.reverse == 0,
                "sample_cached: a right-to-left scan runs at every position (period 1)");
    TORCH_CHECK(
        op.row_offset <= 0 && (op.phase == kRowPhase || (op.row_offset == 0 && op.reverse == 0)),
        "sample_cached: only row-phase ops may run on an earlier row or in reverse");
    TORCH_CHECK(op.src_dy <= 0 && (op.code == kAdd || op.src_dy == 0),
                "sample_cached: only add may read its source on an earlier row");
    if (reads_source) {
      TORCH_CHECK(plan.buffers[op.src].rows >= 1 - op.row_offset - op.src_dy,
                  "sample_cached: an op reads rows its source's ring does not keep");
    }
    const Buffer& dst = plan.buffers[op.dst];
    switch (op.code) {
      case kConv:
        check_conv(op, plan, weights);
        break;
      case kRelu:
      case kElu:
      case kAdd:
      case kMul:
        TORCH_CHECK(
            plan.buffers[op.src].channels == dst.channels && dst.channels % op.groups == 0,
            "sample_cached: relu/elu/add/mul needs equal channel counts divisible by groups");
        break;
      case kConcatElu:
        TORCH_CHECK(op.groups == 1 && dst.channels == 2 * plan.buffers[op.src].channels,
                    "sample_cached: concat_elu needs one group and twice its source's channels");
        break;
      case kCat: {
        TORCH_CHECK(op.cell >= 0 && op.cell < num_buffers,
                    "sample_cached: cat's second source out of range");
        const Buffer& second = plan.buffers[op.cell];
        TORCH_CHECK(
            op.groups == 1 && dst.channels == plan.buffers[op.src].channels + second.channels,
            "sample_cached: cat needs one group and its sources' channels in all");
        TORCH_CHECK(second.rows >= 1 - op.row_offset,
                    "sample_cached: cat reads rows its second source's ring does not keep");
        break;
      }
      case kGate:
      case kSigmoidGate:
        TORCH_CHECK(
            plan.buffers[op.src].channels == 2 * dst.channels && dst.channels % op.groups == 0,
            "sample_cached: gate needs a source of twice the destination's channels");
        break;
      case kMixture: {
        const int64_t per_component = mixture_channels(channels, 1);
        const int64_t params = plan.buffers[op.src].channels;
        TORCH_CHECK(op.phase == kPixelPhase && params % per_component == 0,
                    "sample_cached: a mixture is a pixel-phase op whose source holds ",
                    per_component, " channels per component for ", channels, " colour(s), got ",
                    params);
        TORCH_CHECK(dst.channels == channels * levels && op.dst != kInputBuffer,
                    "sample_cached: a mixture writes channels * levels = ", channels * levels,
                    " logits, its destination has ", dst.channels);
        plan.mixture_components = std::max(plan.mixture_components, params / per_component);
        break;
      }
      case kClassBias: {
        TORCH_CHECK(has_labels,
                    "sample_cached: the plan has class biases but no labels were given");
        TORCH_CHECK(op.table >= 0 && op.table < static_cast<int64_t>(weights.size()),
                    "sample_cached: class table index out of range");
        const at::Tensor& t = weights[op.table];
        TORCH_CHECK(t.dim() == 2 && t.size(1) == dst.channels && dst.channels % op.groups == 0,
                    "sample_cached: class table has shape ", t.sizes(), ", expected [classes, ",
                    dst.channels, "]");
        break;
      }
      case kPositionBias:
      case kClassPositionBias: {
        // [height, width, channels], or per class [classes, height, width, channels]
        const bool per_class = op.code == kClassPositionBias;
        const char* what = per_class ? "class position bias" : "position bias";
        const int64_t lead = per_class ? 1 : 0;
        TORCH_CHECK(
            !per_class || has_labels,
            "sample_cached: the plan has position biases per class but no labels were given");
        TORCH_CHECK(op.table >= 0 && op.table < static_cast<int64_t>(weights.size()),
                    "sample_cached: ", what, " table index out of range");
        const at::Tensor& t = weights[op.table];
        TORCH_CHECK(t.dim() == 3 + lead && t.size(2 + lead) == dst.channels &&
                        dst.channels % op.groups == 0,
                    "sample_cached: ", what, " table has shape ", t.sizes(), ", expected [",
                    per_class ? "classes, " : "", "height, width, ", dst.channels, "]");
        TORCH_CHECK(t.size(lead) == height && t.size(lead + 1) == width,
                    "sample_cached: the plan's position biases are for ", t.size(lead), " x ",
                    t.size(lead + 1), " images, the image is ", height, " x ", width);
        TORCH_CHECK(op.period == 1,
                    "sample_cached: a position bias runs at every position (period 1)");
        break;
      }
      case kLstmCell: {
        TORCH_CHECK(op.cell >= 0 && op.cell < num_buffers,
                    "sample_cached: cell buffer out of range");
        const Buffer& cell = plan.buffers[op.cell];
        TORCH_CHECK(plan.buffers[op.src].channels == 4 * dst.channels &&
                        cell.channels == dst.channels && dst.channels % op.groups == 0,
                    "sample_cached: an LSTM cell needs gates of 4x the hidden channels and a cell "
                    "buffer of the hidden channels");
        TORCH_CHECK(op.prev_dy <= 0 && cell.rows >= 1 - op.prev_dy - op.row_offset &&
                        op.prev_dx >= -cell.pad && op.prev_dx <= cell.pad,
                    "sample_cached: the previous cell state lies outside the cell buffer");
        TORCH_CHECK(op.phase == kRowPhase || op.prev_dy < 0 || op.prev_dx < 0,
                    "sample_cached: a pixel-phase cell may only read an earlier cell state");
        // The cell loop's pointers are restrict (engine_ops.h): the states apart, the previous
        // cell state at another position.
        TORCH_CHECK(op.cell != op.dst && (op.prev_dy != 0 || op.prev_dx != 0),
                    "sample_cached: an LSTM cell's hidden and cell buffers must differ and its "
                    "previous cell state lie at another position");
        break;
      }
      case kCondition:
        TORCH_CHECK(condition_channels >= 0,
                    "sample_cached: the plan adds a condition but no condition was given");
        TORCH_CHECK(op.phase == kPixelPhase && condition_channels == dst.channels &&
                        dst.channels % op.groups == 0,
                    "sample_cached: the condition has ", condition_channels,
                    " channels, its op's destination ", dst.channels);
        break;
      case kSample:
        TORCH_CHECK(op.phase == kPixelPhase && op.dst == kInputBuffer,
                    "sample_cached: sample must be a pixel-phase op writing buffer 0");
        TORCH_CHECK(plan.buffers[op.src].channels == channels * levels,
                    "sample_cached: the logits buffer has ", plan.buffers[op.src].channels,
                    " channels, expected channels * levels = ", channels * levels);
        samples = true;
        break;
      default:
        TORCH_CHECK(false, "sample_cached: unknown op code ", op.code);
    }
    (op.phase == kRowPhase ? plan.row_ops : plan.pixel_ops).push_back(op);
    at += length;
  }
  TORCH_CHECK(samples, "sample_cached: the program never samples");
  mark_local_buffers(plan);
  return plan;
}

std::string plan_format() {
  std::string text = "op fields:";
#define PIXELFAST_NAME(type, field) text += " " #field;
  PIXELFAST_OP_FIELDS(PIXELFAST_NAME)
  text += "\nsegment fields:";
  PIXELFAST_SEGMENT_FIELDS(PIXELFAST_NAME)
#undef PIXELFAST_NAME
#define PIXELFAST_NAME_VALUE(enumerator, name, value) text += " " #name "=" + std::to_string(value);
  text += "\nop codes:";
  PIXELFAST_OP_CODES(PIXELFAST_NAME_VALUE)
  text += "\nphases:";
  PIXELFAST_PHASES(PIXELFAST_NAME_VALUE)
  text += "\ncentres:";
  PIXELFAST_CENTRES(PIXELFAST_NAME_VALUE)
#undef PIXELFAST_NAME_VALUE
  return text + "\nmax segments: " + std::to_string(kMaxSegments);
}

namespace {

Plan check_arguments(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                     c10::ArrayRef<int64_t> program, const at::Tensor& image,
                     const at::Tensor& known, const at::Tensor& uniforms,
                     const std::optional<at::Tensor>& labels, double temperature, int64_t levels,
                     const std::optional<at::Tensor>& condition) {
  TORCH_CHECK(image.dim() == 4 && image.scalar_type() == at::kLong,
              "sample_cached: image must be int64 [B, C, H, W], got ", image.scalar_type(), " ",
              image.sizes());
  TORCH_CHECK(known.sizes() == image.sizes() && known.scalar_type() == at::kBool,
              "sample_cached: known must be bool with the image's shape");
  TORCH_CHECK(uniforms.sizes() == image.sizes() && uniforms.scalar_type() == at::kDouble,
              "sample_cached: uniforms must be float64 with the image's shape");
  TORCH_CHECK(temperature > 0, "sample_cached: temperature must be > 0, got ", temperature);
  TORCH_CHECK(levels >= 2 && levels <= kMaxField, "sample_cached: levels must be in 2..", kMaxField,
              ", got ", levels);
  TORCH_CHECK(image.size(0) <= kMaxInt && image.size(3) <= kMaxField, "sample_cached: at most ",
              kMaxInt, " images of width at most ", kMaxField, ", got ", image.sizes());
  TORCH_CHECK(!weights.empty(), "sample_cached: no weights");
  const auto dtype = weights[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "sample_cached: weights must be float32 or float64, got ", dtype);
  for (const auto& w : weights) {
    TORCH_CHECK(w.scalar_type() == dtype && w.device() == image.device() && w.is_contiguous(),
                "sample_cached: every weight must be a contiguous ", dtype, " tensor on ",
                image.device());
  }
  TORCH_CHECK(known.device() == image.device() && uniforms.device() == image.device(),
              "sample_cached: image, known and uniforms must be on one device");
  if (labels.has_value()) {
    TORCH_CHECK(labels->dim() == 1 && labels->size(0) == image.size(0) &&
                    labels->scalar_type() == at::kLong && labels->device() == image.device(),
                "sample_cached: labels must be int64 [B] on the image's device");
  }
  if (condition.has_value()) {
    const auto& c = *condition;
    TORCH_CHECK(c.dim() == 4 && c.size(0) == image.size(0) && c.size(1) == image.size(2) &&
                    c.size(2) == image.size(3),
                "sample_cached: condition must be [B, H, W, K] = [", image.size(0), ", ",
                image.size(2), ", ", image.size(3), ", K], got ", c.sizes());
    TORCH_CHECK(c.scalar_type() == dtype && c.device() == image.device(),
                "sample_cached: condition must be a ", dtype, " tensor on ", image.device(),
                ", got ", c.scalar_type(), " on ", c.device());
  }
  Plan plan =
      decode_plan(buffers, program, weights, image.size(1), image.size(2), image.size(3), levels,
                  labels.has_value(), condition.has_value() ? condition->size(3) : -1);
  if (labels.has_value() && labels->numel() > 0) {
    // The labels' range, read once (on CUDA each read is a copy to the host and a sync).
    const at::Tensor l = labels->cpu();
    const int64_t* p = l.const_data_ptr<int64_t>();
    const auto [lowest, highest] = std::minmax_element(p, p + l.numel());
    for (const auto* ops : {&plan.row_ops, &plan.pixel_ops}) {
      for (const Op& op : *ops) {
        if (op.code != kClassBias && op.code != kClassPositionBias) continue;
        const int64_t classes = weights[op.table].size(0);
        TORCH_CHECK(*lowest >= 0 && *highest < classes, "sample_cached: label ",
                    *lowest < 0 ? *lowest : *highest, " out of range 0..", classes - 1);
      }
    }
  }
  return plan;
}

}  // namespace

Prepared prepare(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                 c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
                 const at::Tensor& uniforms, const std::optional<at::Tensor>& labels,
                 double temperature, int64_t levels, bool record_logits,
                 const std::optional<at::Tensor>& condition) {
  Prepared p;
  p.plan = check_arguments(weights, buffers, program, image, known, uniforms, labels, temperature,
                           levels, condition);
  p.image = image.contiguous();
  p.known = known.contiguous();
  p.uniforms = uniforms.contiguous();
  p.labels = labels.has_value() ? labels->contiguous() : at::Tensor();
  p.condition = condition.has_value() ? condition->contiguous() : at::Tensor();
  p.temperature = temperature;
  p.levels = levels;
  const int64_t batch = image.size(0), channels = image.size(1);
  const int64_t height = image.size(2), width = image.size(3);
  const auto options = weights[0].options();
  p.out = at::empty_like(p.image);
  p.logits = record_logits ? at::empty({batch, levels, channels, height, width}, options)
                           : at::empty({0}, options);
  for (const Buffer& b : p.plan.buffers) {
    // Fields and width <= 2^24: rows x columns fits in int64, and so does the stride once that
    // is <= 2^31; the gemms need the stride in an int.
    TORCH_CHECK(b.rows * (width + 2 * b.pad) <= kMaxInt && image_stride(b, width) <= kMaxInt,
                "sample_cached: a buffer of ", b.rows, " rows x ", width + 2 * b.pad, " columns x ",
                b.channels, " channels per image is too large");
    p.strides.push_back(image_stride(b, width));
    p.storage.push_back(at::zeros({batch * p.strides.back()}, options));
  }
  return p;
}

}  // namespace sampler
}  // namespace pixelfast
