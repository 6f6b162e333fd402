// The incremental-cache sampling engine, CPU: plan decoding (shared with CUDA) and the CPU loop.
//
// A team of threads runs the whole raster loop over the whole batch, each computing its share of
// every op's output channels (the categorical draws: its share of the images), meeting at a
// barrier after every op. Per position every op computes only the new activations at (i, j) from
// the cached rows, as small matrix products over the batch (BLAS gemm straight on the buffers: no
// allocation, no tensor per step); the pointwise ops are loops over the shared math of
// pointwise.h, which vectorise.

// The pointwise loops vectorise only if gcc may if-convert the float compares of the activations
// (see common/activations.h); torch itself is built with -fno-trapping-math too.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "../common/cpu_isa.h"
#include "engine.h"
#include "pointwise.h"

// Fortran BLAS, as exported by libtorch (MKL or OpenBLAS, LP64).
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
}

namespace pixelfast {
namespace sampler {

namespace {

constexpr int64_t kOpHeader = 18;

void check_conv(const Op& op, const Plan& plan, const std::vector<at::Tensor>& weights) {
  const Buffer& src = plan.buffers[op.src];
  const Buffer& dst = plan.buffers[op.dst];
  TORCH_CHECK(dst.channels % op.groups == 0, "sample_cached: conv output channels ", dst.channels,
              " not divisible by its groups ", op.groups);
  TORCH_CHECK(op.num_segments >= 0 && op.num_segments <= kMaxSegments,
              "sample_cached: a conv has ", op.num_segments, " segments (at most ", kMaxSegments, ")");
  for (int64_t s = 0; s < op.num_segments; ++s) {
    const Segment& seg = op.segments[s];
    TORCH_CHECK(seg.dy <= 0 && src.rows >= 1 - seg.dy - op.row_offset,
                "sample_cached: segment row offset ", seg.dy, " is outside its source's ring of ",
                src.rows, " rows");
    TORCH_CHECK(seg.cols >= 1 && seg.dx >= -src.pad && seg.dx + seg.cols - 1 <= src.pad,
                "sample_cached: segment columns [", seg.dx, ", ", seg.dx + seg.cols,
                ") exceed the source's padding ", src.pad);
    TORCH_CHECK(op.phase == kRowPhase || seg.dy < 0 || seg.dx + seg.cols <= 0,
                "sample_cached: a pixel-phase conv may not read the current pixel or later ones");
    TORCH_CHECK(seg.weight >= 0 && seg.weight < static_cast<int64_t>(weights.size()),
                "sample_cached: weight index out of range");
    const at::Tensor& w = weights[seg.weight];
    TORCH_CHECK(w.dim() == 2 && w.size(0) == seg.cols * src.channels && w.size(1) == dst.channels,
                "sample_cached: segment weight has shape ", w.sizes(), ", expected [",
                seg.cols * src.channels, ", ", dst.channels, "]");
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
    TORCH_CHECK(op.bias < static_cast<int64_t>(weights.size()), "sample_cached: bias index out of range");
    const at::Tensor& b = weights[op.bias];
    TORCH_CHECK(b.dim() == 1 && b.size(0) == dst.channels, "sample_cached: bias has shape ",
                b.sizes(), ", expected [", dst.channels, "]");
  }
}

}  // namespace

Plan decode_plan(c10::ArrayRef<int64_t> buffers, c10::ArrayRef<int64_t> program,
                 const std::vector<at::Tensor>& weights, int64_t channels, int64_t levels,
                 bool has_labels) {
  Plan plan;
  TORCH_CHECK(buffers.size() % 3 == 0 && !buffers.empty(),
              "sample_cached: buffers must be (channels, rows, pad) triples");
  for (size_t b = 0; b < buffers.size(); b += 3) {
    Buffer buffer{buffers[b], buffers[b + 1], buffers[b + 2]};
    TORCH_CHECK(buffer.channels >= 1 && buffer.rows >= 1 && buffer.pad >= 0,
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
    TORCH_CHECK(length >= kOpHeader && at + length <= program.size(),
                "sample_cached: truncated op at position ", at, " of the program");
    const int64_t* f = program.data() + at;
    Op op{};
    op.code = static_cast<int32_t>(f[1]);
    op.phase = static_cast<int32_t>(f[2]);
    op.dst = f[3];
    op.src = f[4];
    op.groups = f[5];
    op.centre = static_cast<int32_t>(f[6]);
    op.centre_weight = f[7];
    op.bias = f[8];
    op.table = f[9];
    op.accumulate = static_cast<int32_t>(f[10]);
    op.src_dy = f[11];
    op.row_offset = f[12];
    op.reverse = static_cast<int32_t>(f[13]);
    op.cell = f[14];
    op.prev_dy = f[15];
    op.prev_dx = f[16];
    op.num_segments = f[17];
    TORCH_CHECK(op.num_segments >= 0 && op.num_segments <= kMaxSegments &&
                    length == kOpHeader + 4 * op.num_segments,
                "sample_cached: op at position ", at, " has a bad length");
    for (int64_t s = 0; s < op.num_segments; ++s) {
      const int64_t* g = f + kOpHeader + 4 * s;
      op.segments[s] = Segment{g[0], g[1], g[2], g[3]};
    }
    TORCH_CHECK(op.phase == kRowPhase || op.phase == kPixelPhase, "sample_cached: bad phase ", op.phase);
    TORCH_CHECK(op.dst >= 0 && op.dst < num_buffers, "sample_cached: op destination out of range");
    TORCH_CHECK(op.code == kClassBias || (op.src >= 0 && op.src < num_buffers),
                "sample_cached: op source out of range");
    TORCH_CHECK(op.groups >= 1, "sample_cached: groups must be >= 1");
    TORCH_CHECK(op.phase == kRowPhase || op.groups == channels,
                "sample_cached: a pixel-phase op must have one group per colour (", channels, "), got ",
                op.groups);
    TORCH_CHECK(op.row_offset <= 0 && (op.phase == kRowPhase || (op.row_offset == 0 && op.reverse == 0)),
                "sample_cached: only row-phase ops may run on an earlier row or in reverse");
    TORCH_CHECK(op.src_dy <= 0 && (op.code == kAdd || op.src_dy == 0),
                "sample_cached: only add may read its source on an earlier row");
    if (op.code != kClassBias && op.src >= 0) {
      TORCH_CHECK(plan.buffers[op.src].rows >= 1 - op.row_offset - op.src_dy,
                  "sample_cached: an op reads rows its source's ring does not keep");
    }
    const Buffer& dst = plan.buffers[op.dst];
    switch (op.code) {
      case kConv:
        check_conv(op, plan, weights);
        break;
      case kRelu:
      case kAdd:
        TORCH_CHECK(plan.buffers[op.src].channels == dst.channels && dst.channels % op.groups == 0,
                    "sample_cached: relu/add needs equal channel counts divisible by groups");
        break;
      case kGate:
        TORCH_CHECK(plan.buffers[op.src].channels == 2 * dst.channels && dst.channels % op.groups == 0,
                    "sample_cached: gate needs a source of twice the destination's channels");
        break;
      case kClassBias: {
        TORCH_CHECK(has_labels, "sample_cached: the plan has class biases but no labels were given");
        TORCH_CHECK(op.table >= 0 && op.table < static_cast<int64_t>(weights.size()),
                    "sample_cached: class table index out of range");
        const at::Tensor& t = weights[op.table];
        TORCH_CHECK(t.dim() == 2 && t.size(1) == dst.channels && dst.channels % op.groups == 0,
                    "sample_cached: class table has shape ", t.sizes(), ", expected [classes, ",
                    dst.channels, "]");
        break;
      }
      case kLstmCell: {
        TORCH_CHECK(op.cell >= 0 && op.cell < num_buffers, "sample_cached: cell buffer out of range");
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
        break;
      }
      case kSample:
        TORCH_CHECK(op.phase == kPixelPhase && op.dst == plan.input_buffer,
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
  return plan;
}

Plan check_arguments(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                     c10::ArrayRef<int64_t> program, const at::Tensor& image,
                     const at::Tensor& known, const at::Tensor& uniforms,
                     const std::optional<at::Tensor>& labels, double temperature, int64_t levels) {
  TORCH_CHECK(image.dim() == 4 && image.scalar_type() == at::kLong,
              "sample_cached: image must be int64 [B, C, H, W], got ", image.scalar_type(), " ",
              image.sizes());
  TORCH_CHECK(known.sizes() == image.sizes() && known.scalar_type() == at::kBool,
              "sample_cached: known must be bool with the image's shape");
  TORCH_CHECK(uniforms.sizes() == image.sizes() && uniforms.scalar_type() == at::kDouble,
              "sample_cached: uniforms must be float64 with the image's shape");
  TORCH_CHECK(temperature > 0, "sample_cached: temperature must be > 0, got ", temperature);
  TORCH_CHECK(levels >= 2, "sample_cached: levels must be >= 2, got ", levels);
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
  Plan plan = decode_plan(buffers, program, weights, image.size(1), levels, labels.has_value());
  if (labels.has_value() && labels->numel() > 0) {
    for (const auto* ops : {&plan.row_ops, &plan.pixel_ops}) {
      for (const Op& op : *ops) {
        if (op.code != kClassBias) continue;
        const int64_t classes = weights[op.table].size(0);
        const at::Tensor l = labels->cpu();
        const int64_t* p = l.const_data_ptr<int64_t>();
        for (int64_t b = 0; b < l.numel(); ++b) {
          TORCH_CHECK(p[b] >= 0 && p[b] < classes, "sample_cached: label ", p[b],
                      " out of range 0..", classes - 1);
        }
      }
    }
  }
  return plan;
}

namespace {

// row-major C[m, n] += A[m, k] . B[k, n] with leading dimensions: column-major BLAS computing
// C^T += B^T . A^T, straight on the buffers (the BLAS that libtorch links, called per position).
template <typename T, typename Gemm>
inline void gemm_rows(Gemm gemm, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                      const T* b, int64_t ldb, T* c, int64_t ldc) {
  const char no = 'N';
  const int mm = static_cast<int>(n), nn = static_cast<int>(m), kk = static_cast<int>(k);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const T one = T(1);
  gemm(&no, &no, &mm, &nn, &kk, &one, b, &la, a, &lb, &one, c, &lc);
}

inline void gemm_rows(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc) {
  gemm_rows(sgemm_, m, n, k, a, lda, b, ldb, c, ldc);
}

inline void gemm_rows(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
                      const double* b, int64_t ldb, double* c, int64_t ldc) {
  gemm_rows(dgemm_, m, n, k, a, lda, b, ldb, c, ldc);
}

// This thread's involuntary context switches so far (Linux; elsewhere 0: the team never shrinks).
int64_t involuntary_switches() {
#if defined(RUSAGE_THREAD)
  struct rusage usage;
  if (getrusage(RUSAGE_THREAD, &usage) == 0) return usage.ru_nivcsw;
#endif
  return 0;
}

// A row in which the team was preempted this often is one in which other programs hold the cores.
constexpr int64_t kPreemptions = 4;

// The barrier of the engine's thread team: one wait per op, a few hundred thousand per image, so it
// spins (well under a microsecond when every thread has a core). A waiter that spins too long
// sleeps on the generation counter instead (a futex), leaving the core to whoever needs it.
class TeamBarrier {
 public:
  explicit TeamBarrier(int threads) : threads_(threads) {}

  void wait() {
    const int generation = generation_.load();
    if (arrived_.fetch_add(1) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1);  // seq_cst: ordered before the sleepers_ load below
      if (sleepers_.load() > 0) generation_.notify_all();
      return;
    }
    for (int spins = 0; spins < kSpins; ++spins) {
      if (generation_.load(std::memory_order_acquire) != generation) return;
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
    sleepers_.fetch_add(1);  // seq_cst: ordered before the generation_ loads below
    while (generation_.load() == generation) generation_.wait(generation);
    sleepers_.fetch_sub(1);
  }

 private:
  static constexpr int kSpins = 4096;  // a few tens of microseconds
  const int threads_;
  std::atomic<int> arrived_{0};
  std::atomic<int> generation_{0};
  std::atomic<int> sleepers_{0};
};

// dst[t0, t1) = (accumulate ? dst : 0) + (src ? src : 0): the conv's bias and the add op. The
// branches sit outside the loops, so that each loop vectorises.
template <typename T>
void add_into(T* dst, const T* src, bool accumulate, int64_t t0, int64_t t1) {
  if (!accumulate) {
    if (src != nullptr) {
      std::copy(src + t0, src + t1, dst + t0);
    } else {
      std::fill(dst + t0, dst + t1, T(0));
    }
  } else if (src != nullptr) {
    for (int64_t t = t0; t < t1; ++t) dst[t] += src[t];
  }
}

// The two pointwise ops that are dominated by exp and division, over a channel range [t0, t1),
// compiled for the baseline ISA and for AVX2 + FMA (common/cpu_isa.h).
template <typename T>
struct PointwiseArgs {
  const T* in;     // gate: [a | b] halves n apart; LSTM cell: gates [i | f | o | g], n apart
  const T* prev;   // LSTM cell: the previous cell state (nullptr: zero)
  T* out;          // gate: the output; LSTM cell: the hidden state
  T* cell;         // LSTM cell: the new cell state
  int64_t n;
};

template <typename Args>
PF_ALWAYS_INLINE void gate_loop_impl(const Args& a, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) a.out[t] = gate(a.in[t], a.in[a.n + t]);
}
PF_ISA_DISPATCH(gate_loop)

template <typename Args>
PF_ALWAYS_INLINE void lstm_cell_loop_impl(const Args& a, int64_t t0, int64_t t1) {
  using T = std::remove_pointer_t<decltype(a.out)>;
  if (a.prev != nullptr) {
    for (int64_t t = t0; t < t1; ++t) a.cell[t] = lstm_cell(a.in + t, a.n, a.prev[t], a.out + t);
  } else {
    for (int64_t t = t0; t < t1; ++t) a.cell[t] = lstm_cell(a.in + t, a.n, T(0), a.out + t);
  }
}
PF_ISA_DISPATCH(lstm_cell_loop)

template <typename scalar_t>
struct CpuEngine {
  const Plan& plan;
  std::vector<const scalar_t*> weights;
  std::vector<scalar_t*> data;   // per buffer: [B][rows][Wp][channels]
  std::vector<int64_t> strides;  // per buffer: values per image
  EngineIO<scalar_t> io;
  // The thread team: every op's output channels are split over the team (each thread streams
  // its share of the weights once per position, with the whole batch as the rows of its matrix
  // products), and the team meets at a barrier after every op.
  int rank = 0, team = 1;
  TeamBarrier* barrier = nullptr;
  std::atomic<bool>* solo = nullptr;  // set when the team goes on with rank 0 alone
  std::atomic<int64_t>* preemptions = nullptr;  // the team's, in the current row so far
  int64_t switches_seen = 0;                    // this thread's, at the last check
  std::atomic<bool>* non_finite = nullptr;
  // This thread's categorical draws keep their exponentials here (one per level).
  mutable std::vector<double> scratch;

  // This thread's share [first, last) of the channel range [lo, hi).
  std::pair<int64_t, int64_t> share(int64_t lo, int64_t hi) const {
    return {lo + (hi - lo) * rank / team, lo + (hi - lo) * (rank + 1) / team};
  }

  scalar_t* at(int64_t buffer, int64_t image, int64_t row, int64_t column) const {
    return data[buffer] + image * strides[buffer] +
           position_offset(plan.buffers[buffer], io.width, row, column);
  }

  // The off-centre taps do not depend on the current pixel: colour sub-step 0 computes them (and
  // the bias) for every output group in one product; each sub-step g then adds only group g's
  // centre tap, over its input prefix.
  void conv(const Op& op, int64_t b0, int64_t b1, int64_t i, int64_t j, int64_t g) const {
    const Buffer& src = plan.buffers[op.src];
    const Buffer& dst = plan.buffers[op.dst];
    const int64_t n = dst.channels / op.groups;
    const int64_t m = b1 - b0;
    scalar_t* out = at(op.dst, b0, i, j);
    if (g == 0) {
      const auto [c0, c1] = share(0, dst.channels);
      const scalar_t* bias = op.bias >= 0 ? weights[op.bias] : nullptr;
      for (int64_t b = 0; b < m; ++b) add_into(out + b * strides[op.dst], bias, op.accumulate, c0, c1);
      for (int64_t s = 0; s < op.num_segments && c1 > c0; ++s) {
        const Segment& seg = op.segments[s];
        if (i + seg.dy < 0) continue;  // rows above the image are zero padding
        gemm_rows(m, c1 - c0, seg.cols * src.channels, at(op.src, b0, i + seg.dy, j + seg.dx),
                  strides[op.src], weights[seg.weight] + c0, dst.channels, out + c0, strides[op.dst]);
      }
    }
    const int64_t prefix = centre_prefix(src.channels, op.groups, op.centre, g);
    // At sub-step 0 a thread adds the centre only to the columns it just initialised (no barrier
    // between the two); later sub-steps split group g's columns evenly.
    auto [c0, c1] = share(g * n, (g + 1) * n);
    if (g == 0) {
      const auto [own0, own1] = share(0, dst.channels);
      c0 = std::max<int64_t>(own0, 0);
      c1 = std::min<int64_t>(own1, n);
    }
    if (prefix > 0 && c1 > c0) {
      gemm_rows(m, c1 - c0, prefix, at(op.src, b0, i, j), strides[op.src],
                weights[op.centre_weight] + c0, dst.channels, out + c0, strides[op.dst]);
    }
  }

  void pointwise(const Op& op, int64_t b0, int64_t b1, int64_t i, int64_t j, int64_t g) const {
    const int64_t n = plan.buffers[op.dst].channels / op.groups;
    const auto [t0, t1] = share(0, n);
    for (int64_t b = b0; b < b1; ++b) {
      scalar_t* out = at(op.dst, b, i, j) + g * n;
      switch (op.code) {
        case kRelu: {
          const scalar_t* in = at(op.src, b, i, j) + g * n;
          for (int64_t t = t0; t < t1; ++t) out[t] = relu(in[t]);
          break;
        }
        case kAdd: {  // dst (+)= src, src from row i + src_dy (rows above the image are zero)
          const scalar_t* in = i + op.src_dy >= 0 ? at(op.src, b, i + op.src_dy, j) + g * n : nullptr;
          add_into(out, in, op.accumulate, t0, t1);
          break;
        }
        case kLstmCell: {
          const scalar_t* gates = at(op.src, b, i, j) + g * 4 * n;
          scalar_t* cell = at(op.cell, b, i, j) + g * n;
          const scalar_t* prev =
              i + op.prev_dy >= 0 ? at(op.cell, b, i + op.prev_dy, j + op.prev_dx) + g * n : nullptr;
          lstm_cell_loop(PointwiseArgs<scalar_t>{gates, prev, out, cell, n}, t0, t1);
          break;
        }
        case kGate: {
          const scalar_t* in = at(op.src, b, i, j) + g * 2 * n;
          gate_loop(PointwiseArgs<scalar_t>{in, nullptr, out, nullptr, n}, t0, t1);
          break;
        }
        case kClassBias: {
          const int64_t channels_total = plan.buffers[op.dst].channels;
          const scalar_t* row = weights[op.table] + io.labels[b] * channels_total + g * n;
          for (int64_t t = t0; t < t1; ++t) out[t] += row[t];
          break;
        }
        default:
          break;
      }
    }
  }

  // Colour g of pixel (i, j): draw it (or take the known value), record the logits if asked, and
  // write the level into the output and its scaled value into the image buffer.
  void sample(const Op& op, int64_t b0, int64_t b1, int64_t i, int64_t j, int64_t g) const {
    const int64_t hw = io.height * io.width;
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* logits = at(op.src, b, i, j) + g * io.levels;
      const int64_t index = ((b * io.channels + g) * io.height + i) * io.width + j;
      int64_t level = io.known[index] ? io.image_in[index]
                                            : categorical(logits, io.levels, 1, io.temperature,
                                                          io.uniforms[index], scratch.data());
      if (level < 0) {  // reported after the loop: a throw here would strand the team at a barrier
        non_finite->store(true, std::memory_order_relaxed);
        level = 0;
      }
      io.image_out[index] = level;
      *(at(op.dst, b, i, j) + g) = scale_level<scalar_t>(level, io.levels);
      if (io.logits_out != nullptr) {
        scalar_t* record = io.logits_out + ((b * io.levels) * io.channels + g) * hw + i * io.width + j;
        for (int64_t l = 0; l < io.levels; ++l) record[l * io.channels * hw] = logits[l];
      }
    }
  }

  void run(const Op& op, int64_t b0, int64_t b1, int64_t i, int64_t j, int64_t g) const {
    if (op.code == kConv) {
      conv(op, b0, b1, i, j, g);
    } else if (op.code == kSample) {  // the team splits the images
      const auto [s0, s1] = share(b0, b1);
      sample(op, s0, s1, i, j, g);
    } else {
      pointwise(op, b0, b1, i, j, g);
    }
    if (team > 1) barrier->wait();  // the next op reads what this one wrote
  }

  // After each pixel: when other programs hold the cores, the team's threads are preempted
  // (involuntary context switches) and every barrier waits for a thread without a core. After
  // kPreemptions of them within one image row, rank 0 goes on alone and the others leave (returns
  // false). The images do not depend on the team's size.
  bool keep_going(bool row_end) {
    if (team == 1) return true;
    const int64_t switches = involuntary_switches();
    preemptions->fetch_add(switches - switches_seen);
    switches_seen = switches;
    barrier->wait();
    if (rank == 0) {
      solo->store(preemptions->load() >= kPreemptions);
      if (row_end) preemptions->store(0);
    }
    barrier->wait();
    if (!solo->load()) return true;
    team = 1;
    return rank == 0;
  }

  void run_images(int64_t b0, int64_t b1) {
    const int64_t num_row_ops = static_cast<int64_t>(plan.row_ops.size());
    for (int64_t i = 0; i < io.height; ++i) {
      run_row_phase(plan.row_ops.data(), num_row_ops, i, io.width,
                    [&](const Op& op, int64_t r, int64_t j, int64_t g) { run(op, b0, b1, r, j, g); });
      for (int64_t j = 0; j < io.width; ++j) {
        for (int64_t g = 0; g < io.channels; ++g) {
          for (const Op& op : plan.pixel_ops) run(op, b0, b1, i, j, g);
        }
        if (!keep_going(j == io.width - 1)) return;
      }
    }
  }
};

// All threads run the whole raster loop over the whole batch, each computing its share of every
// op's channels. (Splitting the batch instead makes every thread stream all the weights per
// position: slower here than one thread.) Outside AT_DISPATCH: a pragma cannot sit in a macro.
template <typename scalar_t>
void run_team(const CpuEngine<scalar_t>& engine, int64_t batch) {
  const int wanted = static_cast<int>(std::max<int64_t>(1, at::get_num_threads()));
  TeamBarrier barrier(wanted);
  std::atomic<bool> solo{false};
  std::atomic<int64_t> preemptions{0};
#pragma omp parallel num_threads(wanted)
  {
    CpuEngine<scalar_t> mine = engine;
    mine.rank = omp_get_thread_num();
    mine.team = omp_get_num_threads();
    mine.barrier = &barrier;
    mine.solo = &solo;
    mine.preemptions = &preemptions;
    mine.switches_seen = involuntary_switches();
    mine.scratch.resize(static_cast<size_t>(engine.io.levels));
    if (mine.team == wanted) {
      mine.run_images(0, batch);
    } else if (mine.rank == 0) {  // a smaller team than asked for (nested parallelism): one thread
      mine.team = 1;
      mine.run_images(0, batch);
    }
  }
}

}  // namespace

Prepared prepare(const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
                 c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
                 const at::Tensor& uniforms, const std::optional<at::Tensor>& labels,
                 double temperature, int64_t levels, bool record_logits) {
  Prepared p;
  p.plan = check_arguments(weights, buffers, program, image, known, uniforms, labels, temperature,
                           levels);
  p.image = image.contiguous();
  p.known = known.contiguous();
  p.uniforms = uniforms.contiguous();
  p.labels = labels.has_value() ? labels->contiguous() : at::Tensor();
  p.temperature = temperature;
  p.levels = levels;
  const int64_t batch = image.size(0), channels = image.size(1);
  const int64_t height = image.size(2), width = image.size(3);
  const auto options = weights[0].options();
  p.out = at::empty_like(p.image);
  p.logits = record_logits ? at::empty({batch, levels, channels, height, width}, options)
                           : at::empty({0}, options);
  for (const Buffer& b : p.plan.buffers) {
    p.strides.push_back(image_stride(b, width));
    p.storage.push_back(at::zeros({batch * p.strides.back()}, options));
  }
  return p;
}

std::tuple<at::Tensor, at::Tensor> sample_cached_cpu(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits) {
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits);
  if (p.empty()) return {p.out, p.logits};
  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_cpu", [&] {
    CpuEngine<scalar_t> engine{p.plan};
    for (const auto& w : weights) engine.weights.push_back(w.const_data_ptr<scalar_t>());
    engine.data = buffer_data<scalar_t>(p);
    engine.strides = p.strides;
    engine.io = io_of<scalar_t>(p);
    std::atomic<bool> non_finite{false};
    engine.non_finite = &non_finite;
    run_team(engine, p.image.size(0));
    TORCH_CHECK(!non_finite.load(), "sample_cached: the model produced non-finite logits (NaN or inf)");
  });
  return {p.out, p.logits};
}

}  // namespace sampler
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("sample_cached", &pixelfast::sampler::sample_cached_cpu);
}
