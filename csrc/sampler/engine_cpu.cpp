// The incremental-cache sampling engine, CPU: the raster loop of engine_ops.h over the whole batch.
//
// A team of threads runs the whole raster loop. For a large network each thread computes its share
// of every op's output channels over the whole batch (the categorical draws: its share of the
// images), and the team meets at a barrier after every op. For a small one (its weights under
// split_images_below) each thread runs the whole network on its own share of the images, with no
// barrier: there the barriers, not the arithmetic, would set the pace. Per position every op
// computes only the new activations at (i, j) from the cached rows, as small matrix products over
// the batch, straight on the buffers (no allocation, no tensor per step); a row-phase conv runs
// once per row, as products whose rows are the row's positions. In float32 the products are
// small_gemm.h's kernels on weights packed once per call (precision bf16: small_gemm_bf16.h's,
// on AMX tiles where the CPU has them); in float64, BLAS. The pointwise ops are
// the shared loops of engine_ops.h, which vectorise. Plan decoding and argument checks:
// plan_decode.cpp.

// The pointwise loops vectorise only if gcc may if-convert the float compares of the activations
// (see common/activations.h); torch itself is built with -fno-trapping-math too.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <string>
#include <type_traits>
#include <tuple>
#include <vector>

#include "../common/cpu_isa.h"
#include "engine.h"
#include "engine_ops.h"
#include "small_gemm.h"
#include "small_gemm_bf16.h"

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
// Settable (sampler_solo_after) so that a test can make the fallback run on any machine.
std::atomic<int64_t> preemption_limit{4};

// How many engine calls have gone on with one thread since the library was loaded (see keep_going).
std::atomic<int64_t> solo_runs{0};

// Networks whose weights take fewer bytes than this are split by image, not by channel: each thread
// then streams all the weights per position (they stay in its cache) but never waits for the
// others. Settable (sampler_split_images_below) so that a test can force either way.
std::atomic<int64_t> split_images_below{int64_t{8} << 20};

// How many engine calls have split the batch by image since the library was loaded.
std::atomic<int64_t> image_split_runs{0};

// The float32 matrix-product kernel (small_gemm.h): kAuto, the widest the CPU runs, or one set by
// sampler_gemm_kernel (so that the tests run each on any machine that has it).
std::atomic<int> gemm_kernel_setting{static_cast<int>(GemmKernel::kAuto)};

constexpr const char* kGemmKernelNames[] = {"auto", "generic", "avx2", "avx512", "amx"};

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

// The pointwise ops over a channel range [t0, t1) (engine_ops.h), compiled for the baseline ISA,
// AVX2 + FMA and AVX-512 (common/cpu_isa.h): the gate and LSTM cell are dominated by exp and
// division.
template <typename Args>
PF_ALWAYS_INLINE void pointwise_loop_impl(const Args& p, int64_t t0, int64_t t1) {
  pointwise_elements(p, t0, t1, 1);
}
PF_ISA_DISPATCH(pointwise_loop)

// The draws of images [b0, b1) at one sub-pixel: each draws (or takes the known value), records
// the logits if asked, and writes the level. Compiled per ISA like the pointwise loops: the
// draw's exponentials vectorise (pointwise.h, categorical).
template <typename T>
struct Draws {
  const EngineView<T>* v;
  const Op* op;
  int64_t i, j, g;
  double* scratch;
  std::atomic<bool>* non_finite;
};

template <typename Args>
PF_ALWAYS_INLINE void draw_loop_impl(const Args& d, int64_t b0, int64_t b1) {
  const auto& v = *d.v;
  const Op& op = *d.op;
  const int64_t stride = record_stride(v.io);
  for (int64_t b = b0; b < b1; ++b) {
    int64_t level = draw_level(v, op, b, d.i, d.j, d.g, d.scratch);
    if (level < 0) {  // reported after the loop: a throw here would strand the team at a barrier
      d.non_finite->store(true, std::memory_order_relaxed);
      level = 0;
    }
    store_level(v, op, b, d.i, d.j, d.g, level);
    if (auto* record = logits_record(v.io, b, d.g, d.i, d.j)) {
      const auto* logits = sample_logits(v, op, b, d.i, d.j, d.g);
      for (int64_t l = 0; l < v.io.levels; ++l) record[l * stride] = logits[l];
    }
  }
}
PF_ISA_DISPATCH(draw_loop)

// The float32 conv weights packed into panels (small_gemm.h), once per engine call: per weight
// index, its panels as a segment weight (one column group) and as a centre weight (its conv's
// colour groups), or null where the plan uses it otherwise.
struct PackedWeights {
  at::Tensor storage;
  std::vector<const float*> segments, centres;
};

// How a weight's panels hold it: float32, float32 rounded to bf16, or bf16 pairs for AMX.
enum class Packing { kFloat, kRounded, kVnni };

// bf16 on AMX: the weights with enough rows as bf16 pairs, the others rounded (small_gemm_bf16.h).
Packing packing(Precision precision, bool amx, int64_t rows) {
  if (precision == Precision::kFp32) return Packing::kFloat;
  return amx && rows >= kVnniMinRows ? Packing::kVnni : Packing::kRounded;
}

// `live`: per column group, the rows its products read (a centre tap's), or null for all.
void pack(Packing how, const float* b, int64_t k, int64_t n, int64_t groups, float* out,
          const int64_t* live = nullptr) {
  if (how == Packing::kVnni) return pack_panels_vnni(b, k, n, groups, out, live);
  if (how == Packing::kRounded) return pack_panels_rounded(b, k, n, groups, out);
  pack_panels(b, k, n, groups, out);
}

PackedWeights pack_weights(const Plan& plan, const std::vector<at::Tensor>& weights,
                           Precision precision, bool amx) {
  const int64_t count = static_cast<int64_t>(weights.size());
  std::vector<int64_t> segment_at(count, -1), centre_at(count, -1), centre_groups(count, 0);
  std::vector<std::vector<int64_t>> centre_rows(count);  // per group, the most rows a conv reads
  int64_t total = 0;
  const auto place = [&](int64_t index, int64_t groups, std::vector<int64_t>& at) {
    if (at[index] >= 0) return;
    at[index] = total;
    const at::Tensor& w = weights[index];
    total += packed_size(w.size(0), w.size(1) / groups, groups);
  };
  for (const auto* ops : {&plan.row_ops, &plan.pixel_ops}) {
    for (const Op& op : *ops) {
      if (op.code != kConv) continue;
      for (int64_t s = 0; s < op.num_segments; ++s) place(op.segments[s].weight, 1, segment_at);
      if (op.centre == kNoCentre) continue;
      const int64_t w = op.centre_weight;
      TORCH_CHECK(centre_groups[w] == 0 || centre_groups[w] == op.groups, "sample_cached: weight ",
                  w, " is the centre tap of convs with ", centre_groups[w], " and ", op.groups,
                  " groups");
      centre_groups[w] = op.groups;
      centre_rows[w].resize(op.groups, 0);
      for (int64_t g = 0; g < op.groups; ++g) {
        centre_rows[w][g] =
            std::max(centre_rows[w][g], centre_prefix(weights[w].size(0), op.groups, op.centre, g));
      }
      place(w, op.groups, centre_at);
    }
  }
  PackedWeights packed;
  packed.storage = at::empty({total}, at::kFloat);
  float* base = packed.storage.mutable_data_ptr<float>();
  packed.segments.assign(count, nullptr);
  packed.centres.assign(count, nullptr);
  for (int64_t i = 0; i < count; ++i) {
    const at::Tensor& w = weights[i];
    const Packing how = packing(precision, amx, w.size(0));
    if (segment_at[i] >= 0) {
      pack(how, w.const_data_ptr<float>(), w.size(0), w.size(1), 1, base + segment_at[i]);
      packed.segments[i] = base + segment_at[i];
    }
    if (centre_at[i] >= 0) {
      const int64_t groups = centre_groups[i];
      pack(how, w.const_data_ptr<float>(), w.size(0), w.size(1) / groups, groups,
           base + centre_at[i], centre_rows[i].data());
      packed.centres[i] = base + centre_at[i];
    }
  }
  return packed;
}

template <typename scalar_t>
struct CpuEngine {
  EngineView<scalar_t> v;
  // float32: the view with the packed conv weights in place of the weights (segments, centres),
  // and the kernel that multiplies by them; float64 calls BLAS on the weights as they are.
  EngineView<scalar_t> segment_view, centre_view;
  GemmKernel kernel = GemmKernel::kGeneric;
  // bf16: the products' inputs rounded (small_gemm_bf16.h), on AMX tiles where amx.
  Precision precision = Precision::kFp32;
  bool amx = false;
  mutable std::vector<float> rounded;   // this thread's rounded copy of a product's A
  mutable std::vector<uint16_t> tiles;  // this thread's bf16 copy of a product's A, for AMX
  // The thread team: every op's output channels are split over the team (each thread streams
  // its share of the weights once per position, with the whole batch as the rows of its matrix
  // products), and the team meets at a barrier after every op; or, with by_image, each thread
  // runs every op over all channels for its images [b_lo, b_hi) alone.
  int rank = 0, team = 1;
  bool by_image = false;
  int64_t b_lo = 0, b_hi = 0;
  TeamBarrier* barrier = nullptr;
  std::atomic<bool>* solo = nullptr;            // set when the team goes on with rank 0 alone
  std::atomic<int64_t>* preemptions = nullptr;  // the team's, in the current row so far
  int64_t switches_seen = 0;                    // this thread's, at the last check
  std::atomic<bool>* non_finite = nullptr;
  int64_t batch = 0;
  int64_t scratch_doubles = 0;  // Plan::scratch_doubles
  // This thread's categorical draws keep their exponentials here (one per level), its mixtures
  // their components after them.
  mutable std::vector<double> scratch;

  // This thread's share [first, last) of the range [lo, hi).
  std::pair<int64_t, int64_t> share(int64_t lo, int64_t hi) const {
    return {lo + (hi - lo) * rank / team, lo + (hi - lo) * (rank + 1) / team};
  }

  // This thread's block of an op's work: channels [c0, c1) of [lo, hi), in whole panels of B's
  // columns from lo (a product starts at a panel), for images [b0, b1). By channel, and where the
  // channels have fewer panels than the team has threads, each panel's threads split the images
  // as well: a colour group of 64 channels (4 panels) keeps 16 threads busy at batch 64, not 4.
  // All the channels of this thread's images when split by image.
  struct Part {
    int64_t c0, c1, b0, b1;
    bool empty() const { return c1 <= c0 || b1 <= b0; }
  };
  Part part(int64_t lo, int64_t hi) const {
    if (by_image) return {lo, hi, b_lo, b_hi};
    const int64_t p = panels(hi - lo);
    const int64_t columns = std::clamp<int64_t>(p, 1, team);  // panel shares
    const int64_t splits = team / columns;                    // image shares per panel share
    if (rank >= columns * splits) return {lo, lo, b_lo, b_lo};
    const int64_t column = rank % columns, split = rank / columns, images = b_hi - b_lo;
    return {std::min(lo + p * column / columns * kPanel, hi),
            std::min(lo + p * (column + 1) / columns * kPanel, hi), b_lo + images * split / splits,
            b_lo + images * (split + 1) / splits};
  }

  // out[rows, c1 - c0] += a[rows, k] . w[k, c0:c1]: w a weight of `view` (packed: its panels
  // `panel_stride` floats apart, c0 at the start of one; else row-major with `ldw` columns).
  void product(int64_t rows, int64_t c0, int64_t c1, int64_t k, const scalar_t* a, int64_t lda,
               const scalar_t* w, int64_t panel_stride, int64_t ldw, scalar_t* out,
               int64_t ldc) const {
    if constexpr (std::is_same_v<scalar_t, float>) {
      const float* panel = w + c0 / kPanel * panel_stride;
      if (precision == Precision::kFp32) {
        gemm_packed(kernel, rows, c1 - c0, k, a, lda, panel, panel_stride, out + c0, ldc);
        return;
      }
      // The packed rows (panel_stride / kPanel) say how pack_weights packed this weight.
#if defined(PF_HAVE_AMX)
      if (packing(precision, amx, panel_stride / kPanel) == Packing::kVnni) {
        tiles.resize(std::max<size_t>(tiles.size(), bf16_rows_size(rows, k)));
        bf16_rows_amx(rows, k, a, lda, tiles.data());
        gemm_amx(rows, c1 - c0, k, tiles.data(), reinterpret_cast<const uint16_t*>(panel),
                 2 * panel_stride, out + c0, ldc);
        return;
      }
#endif
      rounded.resize(std::max<size_t>(rounded.size(), rows * k));
      round_rows(rows, k, a, lda, rounded.data());
      gemm_packed(kernel, rows, c1 - c0, k, rounded.data(), k, panel, panel_stride, out + c0, ldc);
    } else {
      gemm_rows(rows, c1 - c0, k, a, lda, w + c0, ldw, out + c0, ldc);
    }
  }

  // The images whose draws (and mixtures) this thread computes.
  std::pair<int64_t, int64_t> draw_images() const {
    return by_image ? std::pair<int64_t, int64_t>{b_lo, b_hi} : share(0, batch);
  }

  // The products of every image of this thread's part at once: the images are the rows of one
  // gemm, strides apart.
  void conv(const Op& op, int64_t i, int64_t j, int64_t g) const {
    const int64_t channels = v.buffers[op.dst].channels;
    const int64_t n = group_width(v, op);
    const int64_t in_stride = v.strides[op.src], out_stride = v.strides[op.dst];
    // At sub-step 0 a thread adds the centre only to the columns and images it just initialised
    // (no barrier between the two); later sub-steps split group g's columns (and the images).
    Part mine = part(g * n, (g + 1) * n);
    if (g == 0) {
      const Part own = part(0, channels);
      if (own.empty()) return;
      scalar_t* out = v.at(op.dst, own.b0, i, j);
      const scalar_t* bias = conv_bias(v, op);
      for (int64_t b = 0; b < own.b1 - own.b0; ++b)
        add_into(out + b * out_stride, bias, op.accumulate != 0, own.c0, own.c1, 1);
      off_centre_products(segment_view, op, own.b0, i, j,
                          [&](const scalar_t* a, const scalar_t* w, int64_t k) {
                            product(own.b1 - own.b0, own.c0, own.c1, k, a, in_stride, w, k * kPanel,
                                    channels, out, out_stride);
                          });
      mine = {std::max<int64_t>(own.c0, 0), std::min<int64_t>(own.c1, n), own.b0, own.b1};
    }
    if (!mine.empty()) {
      // Group g's panels start at g panels(n) (small_gemm.h); its columns at g n in `out`.
      const int64_t in_channels = v.buffers[op.src].channels;
      const int64_t panel_stride = in_channels * kPanel;
      scalar_t* out = v.at(op.dst, mine.b0, i, j);
      centre_product(
          centre_view, op, mine.b0, i, j, g, [&](const scalar_t* a, const scalar_t* w, int64_t k) {
            const scalar_t* group =
                std::is_same_v<scalar_t, float> ? w + g * panels(n) * panel_stride : w + g * n;
            product(mine.b1 - mine.b0, mine.c0 - g * n, mine.c1 - g * n, k, a, in_stride, group,
                    panel_stride, channels, out + g * n, out_stride);
          });
    }
  }

  // A row-phase conv of one group (or without a centre tap), at every position of row r at once:
  // per image and segment, one product whose rows are the row's positions (a segment's inputs at
  // consecutive positions overlap, `period` positions apart in the buffer). The pixel-phase convs'
  // taps on rows above go here (plan.py's PlanBuilder.conv), and the Gated PixelCNN's vertical
  // stack: one pass over their weights per row, not per pixel.
  // Not a conv of its own output (it would read the bias where the positions to its left were).
  // (run_row_phase asks only for row-phase ops outside a right-to-left scan.)
  static bool whole_row(const Op& op) {
    return op.code == kConv && op.src != op.dst && (op.centre == kNoCentre || op.groups == 1);
  }

  void conv_row(const Op& op, int64_t r) const {
    const int64_t channels = v.buffers[op.dst].channels;
    const int64_t in_channels = v.buffers[op.src].channels;
    const int64_t positions = (v.io.width - op.col_residue + op.period - 1) / op.period;
    // (one position: no stride, which BLAS would take as an int)
    const int64_t ldc = positions > 1 ? op.period * channels : channels;
    const int64_t lda = positions > 1 ? op.period * in_channels : in_channels;
    const Part mine = part(0, channels);
    const int64_t c0 = mine.c0, c1 = mine.c1;
    if (mine.empty() || positions <= 0) return;
    const scalar_t* bias = conv_bias(v, op);
    for (int64_t b = mine.b0; b < mine.b1; ++b) {
      scalar_t* out = v.at(op.dst, b, r, op.col_residue);
      for (int64_t t = 0; t < positions; ++t)
        add_into(out + t * ldc, bias, op.accumulate != 0, c0, c1, 1);
      for (int64_t s = 0; s < op.num_segments; ++s) {
        const Segment& seg = op.segments[s];
        if (r + seg.dy < 0) continue;  // rows above the image: zero padding
        const scalar_t* in = v.at(op.src, b, r + seg.dy, op.col_residue + seg.dx);
        const scalar_t* w = segment_view.weights[seg.weight];
        const int64_t k = seg.cols * in_channels;
        if constexpr (std::is_same_v<scalar_t, float>) {  // any row stride, overlapping rows too
          product(positions, c0, c1, k, in, lda, w, k * kPanel, channels, out, ldc);
        } else {  // BLAS wants lda >= k: one product per tap
          for (int64_t q = 0; q < seg.cols; ++q) {
            gemm_rows(positions, c1 - c0, in_channels, in + q * in_channels, lda,
                      w + q * in_channels * channels + c0, channels, out + c0, ldc);
          }
        }
      }
      const int64_t prefix = centre_prefix(in_channels, 1, op.centre, 0);  // one group
      if (prefix > 0) {
        product(positions, c0, c1, prefix, v.at(op.src, b, r, op.col_residue), lda,
                centre_view.weights[op.centre_weight], in_channels * kPanel, channels, out, ldc);
      }
    }
  }

  void pointwise(const Op& op, int64_t i, int64_t j, int64_t g) const {
    const Part mine = part(0, group_width(v, op));
    for (int64_t b = mine.b0; b < mine.b1; ++b)
      pointwise_loop(pointwise_operands(v, op, b, i, j, g), mine.c0, mine.c1);
  }

  // The team splits the images: each draws (or takes the known value), records the logits if
  // asked, and writes the level.
  void sample(const Op& op, int64_t i, int64_t j, int64_t g) const {
    const auto [b0, b1] = draw_images();
    draw_loop(Draws<scalar_t>{&v, &op, i, j, g, scratch.data(), non_finite}, b0, b1);
  }

  // The team splits the images: each thread computes its images' logits of colour g.
  void mixture(const Op& op, int64_t i, int64_t j, int64_t g) const {
    const auto [b0, b1] = draw_images();
    double* weights = scratch.data() + v.io.levels;
    for (int64_t b = b0; b < b1; ++b) {
      const MixtureAt<scalar_t> m = mixture_at(v, op, b, i, j, g);
      scalar_t* out = mixture_out(v, op, b, i, j, g);
      mixture_weights(m, weights);
      mixture_joint(m, weights, out, 0, v.io.levels, 1);
      const scalar_t norm = log_sum_exp(out, v.io.levels);
      for (int64_t l = 0; l < v.io.levels; ++l) out[l] -= norm;
    }
  }

  void run(const Op& op, int64_t i, int64_t j, int64_t g) const {
    if (op.code == kConv) {
      conv(op, i, j, g);
    } else if (op.code == kSample) {
      sample(op, i, j, g);
    } else if (op.code == kMixture) {
      mixture(op, i, j, g);
    } else {
      pointwise(op, i, j, g);
    }
    if (team > 1 && !by_image) barrier->wait();  // the next op reads what this one wrote
  }

  // After each pixel: when other programs hold the cores, the team's threads are preempted
  // (involuntary context switches) and every barrier waits for a thread without a core. After
  // preemption_limit of them within one image row, rank 0 goes on alone and the others leave
  // (returns false). The images do not depend on the team's size.
  bool keep_going(bool row_end) {
    if (team == 1 || by_image) return true;  // by image, a preempted thread delays only itself
    const int64_t switches = involuntary_switches();
    preemptions->fetch_add(switches - switches_seen);
    switches_seen = switches;
    barrier->wait();
    if (rank == 0) {
      solo->store(preemptions->load() >= preemption_limit.load());
      if (row_end) preemptions->store(0);
    }
    barrier->wait();
    if (!solo->load()) return true;
    team = 1;
    if (rank == 0) solo_runs.fetch_add(1);
    return rank == 0;
  }

  void run_images() {
    run_raster(
        v, [&](const Op& op, int64_t r, int64_t j, int64_t g) { run(op, r, j, g); },
        [&](const Op& op, int64_t r) {
          if (!whole_row(op)) return false;
          conv_row(op, r);
          if (team > 1 && !by_image) barrier->wait();
          return true;
        },
        [&](int64_t, int64_t j) { return keep_going(j == v.io.width - 1); });
  }
};

// float32: the weights packed (kept alive by the result) and the kernel; float64: BLAS.
// bf16 uses AMX where the products have at least a tile's rows (16; amx forces it at any size):
// below that, the half-empty tiles and converting A cost more than the float32 kernels (the
// PixelRNNs of h = 16 at batch 16 sampled 4-25% slower than in float32 on tiles).
// (bf16 needs float32 weights: parse_precision.)
template <typename scalar_t>
PackedWeights use_packed_weights(CpuEngine<scalar_t>&, const Plan&, const std::vector<at::Tensor>&,
                                 Precision, int64_t) {
  return {};
}

PackedWeights use_packed_weights(CpuEngine<float>& engine, const Plan& plan,
                                 const std::vector<at::Tensor>& weights, Precision precision,
                                 int64_t rows) {
  const auto setting = static_cast<GemmKernel>(gemm_kernel_setting.load());
  const bool automatic = setting == GemmKernel::kAuto || setting == GemmKernel::kAmx;
  const bool tiles_pay = setting == GemmKernel::kAmx || rows >= kTileRows;
  engine.kernel = automatic ? best_kernel() : setting;
  engine.precision = precision;
  engine.amx = precision == Precision::kBf16 && automatic && tiles_pay && amx_usable();
  PackedWeights packed = pack_weights(plan, weights, precision, engine.amx);
  engine.segment_view.weights = packed.segments.data();
  engine.centre_view.weights = packed.centres.data();
  return packed;
}

// All threads run the whole raster loop: over the whole batch, each computing its share of every
// op's channels, or (by_image: a small network, at least an image per thread) each over its share
// of the images. Splitting a large network's batch would make every thread stream all its weights
// per position, from memory: slower than one thread. Outside AT_DISPATCH: a pragma cannot sit in a
// macro.
// Built without OpenMP (Apple's clang), the team is the calling thread alone.
#ifndef _OPENMP
inline int omp_get_thread_num() { return 0; }
inline int omp_get_num_threads() { return 1; }
#endif

// The team for a batch: its threads, and whether they split the images (a small network, at least
// an image per thread) or every op's channels.
struct TeamShape {
  int threads;
  bool by_image;
  // The rows of a thread's pixel-phase products: its images, or the whole batch.
  int64_t rows(int64_t batch) const { return by_image ? (batch + threads - 1) / threads : batch; }
};

// The bytes of weights one position reads: every weight whole, except a position-bias table, of
// which a position reads its own row (the Gated PixelCNN's tables are 28 x 28 rows: counted whole,
// they pushed the guided shipped model over split_images_below, onto the slower channel split).
// Class tables, a row per image, are a few rows and counted whole; a position-bias table per class
// counts one row per class.
int64_t streamed_weight_bytes(const Plan& plan, const std::vector<at::Tensor>& weights) {
  std::vector<bool> per_position(weights.size(), false);
  for (const auto* ops : {&plan.row_ops, &plan.pixel_ops}) {
    for (const Op& op : *ops) {
      if (op.code == kPositionBias || op.code == kClassPositionBias) per_position[op.table] = true;
    }
  }
  int64_t bytes = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    // a table per class: each image reads its own label's row, one per class at most
    const int64_t rows = w.dim() == 4 ? w.size(0) : 1;
    bytes += (per_position[i] ? rows * w.size(-1) : w.numel()) * w.element_size();
  }
  return bytes;
}

TeamShape team_shape(int64_t batch, int64_t weight_bytes) {
#ifdef _OPENMP
  const int wanted = static_cast<int>(std::max<int64_t>(1, at::get_num_threads()));
#else
  const int wanted = 1;
#endif
  return {wanted, wanted > 1 && batch >= wanted && weight_bytes < split_images_below.load()};
}

template <typename scalar_t>
void run_team(const CpuEngine<scalar_t>& engine, TeamShape shape) {
  const int wanted = shape.threads;
  const bool by_image = shape.by_image;
  if (by_image) image_split_runs.fetch_add(1);
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
    mine.scratch.resize(static_cast<size_t>(engine.scratch_doubles));
    if (mine.team == wanted) {
      mine.by_image = by_image;
      if (by_image) std::tie(mine.b_lo, mine.b_hi) = mine.share(0, engine.batch);
      mine.run_images();
    } else if (mine.rank == 0) {  // a smaller team than asked for (nested parallelism): one thread
      mine.team = 1;
      mine.run_images();
    }
  }
}

}  // namespace

int64_t sampler_solo_runs() { return solo_runs.load(); }

std::string sampler_gemm_kernel(const std::string& kind) {
  int wanted = -1;
  for (int k = 0; k < static_cast<int>(std::size(kGemmKernelNames)); ++k)
    if (kind == kGemmKernelNames[k]) wanted = k;
  TORCH_CHECK_VALUE(wanted >= 0,
                    "sampler_gemm_kernel: kind must be auto, generic, avx2, avx512 or amx, got '",
                    kind, "'");
  const auto chosen = static_cast<GemmKernel>(wanted);
  TORCH_CHECK_VALUE(chosen == GemmKernel::kAmx ? amx_usable() : cpu_supports(chosen),
                    "sampler_gemm_kernel: this CPU cannot run the ", kind, " kernel");
  return kGemmKernelNames[gemm_kernel_setting.exchange(wanted)];
}

int64_t sampler_image_split_runs() { return image_split_runs.load(); }

int64_t sampler_split_images_below(int64_t bytes) {
  TORCH_CHECK_VALUE(bytes >= 0, "sampler_split_images_below: bytes must be >= 0, got ", bytes);
  return split_images_below.exchange(bytes);
}

int64_t sampler_solo_after(int64_t preemptions) {
  TORCH_CHECK_VALUE(preemptions >= 0, "sampler_solo_after: preemptions must be >= 0, got ",
                    preemptions);
  return preemption_limit.exchange(preemptions);
}

std::tuple<at::Tensor, at::Tensor> sample_cached_cpu(
    const std::vector<at::Tensor>& weights, c10::ArrayRef<int64_t> buffers,
    c10::ArrayRef<int64_t> program, const at::Tensor& image, const at::Tensor& known,
    const at::Tensor& uniforms, const std::optional<at::Tensor>& labels, double temperature,
    int64_t levels, bool record_logits, const std::optional<at::Tensor>& condition,
    const std::string& precision_name) {
  Prepared p = prepare(weights, buffers, program, image, known, uniforms, labels, temperature,
                       levels, record_logits, condition);
  const Precision precision = parse_precision(precision_name, weights[0]);
  TORCH_CHECK_VALUE(precision != Precision::kTf32,
                    "sample_cached: precision 'tf32' is the CUDA engine's (tensor cores); the CPU "
                    "engine computes in 'fp32' or 'bf16'");
  if (p.empty()) return {p.out, p.logits};
  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "sample_cached_cpu", [&] {
    const DeviceView<scalar_t> view = device_view<scalar_t>(p, weights);  // host pointers here
    CpuEngine<scalar_t> engine{view.view, view.view, view.view};
    engine.batch = p.image.size(0);
    engine.b_hi = engine.batch;  // every image, until a team splits them
    engine.scratch_doubles = p.plan.scratch_doubles(levels);
    std::atomic<bool> non_finite{false};
    engine.non_finite = &non_finite;
    const TeamShape shape = team_shape(engine.batch, streamed_weight_bytes(p.plan, weights));
    const PackedWeights packed =
        use_packed_weights(engine, p.plan, weights, precision, shape.rows(engine.batch));
    run_team(engine, shape);
    TORCH_CHECK(!non_finite.load(),
                "sample_cached: the model produced non-finite logits (NaN or inf)");
  });
  return {p.out, p.logits};
}

}  // namespace sampler
}  // namespace pixelfast

TORCH_LIBRARY_IMPL(pixelfast, CPU, m) {
  m.impl("sample_cached", &pixelfast::sampler::sample_cached_cpu);
}
