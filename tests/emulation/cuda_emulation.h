// A test-only emulation of the CUDA built-ins on the host, so that g++ compiles pixelfast's device
// code (the csrc/**/*.cuh headers) unchanged and CI runs it without a GPU.
//
// What it does. `pf_emu::launch(grid, block, shared_bytes, kernel, args...)` runs `kernel` for
// every CUDA thread of the grid: the blocks one after another, and within a block one fiber
// (ucontext) per CUDA thread. Only one fiber runs at a time; a fiber runs until it reaches
// `__syncthreads()` (or a warp shuffle, or its end), then the next one runs.
// `pf_emu::launch_clusters` runs thread-block clusters (sm_90): the blocks of one cluster run
// together, as one set of fibers, and `pf_emu::cluster_sync()` is the barrier of all their threads
// (csrc/common/cluster.cuh maps the kernels' cluster calls onto these). The order in which
// the fibers of a block run between two barriers, and the order of the blocks, is the schedule:
// forward (thread 0 first), reverse, or a seeded random permutation. A kernel whose result
// changes with the schedule has a race; in particular a missing `__syncthreads()` between a
// write and a read by another thread makes the reader run before the writer in one of the
// schedules, so comparing the schedules against the CPU kernels catches it. A `__syncthreads()`
// that some threads of a block never reach (a barrier in divergent code, which deadlocks or
// misbehaves on a GPU) is reported as an error by the launch, not a hang.
//
// Built-ins: threadIdx, blockIdx, blockDim, gridDim (x, y, z), __syncthreads, __shared__
// (a static variable: blocks run one at a time), dynamic shared memory (PF_DYNAMIC_SHARED in
// csrc/common/host_device.h), atomicAdd / atomicExch / atomicMax / atomicCAS, __shfl_sync /
// __shfl_down_sync / __shfl_xor_sync and __syncwarp (lanes of a warp meet like a barrier), __ldg,
// and the tensor-core subset the engine uses (wmma_emulation.h: bf16 and tf32 fragments).
//
// What it does not model: the memory model (every write is visible at once to every later
// fiber, so a missing __threadfence or volatile goes unseen), timing of any kind (warp divergence,
// bank conflicts, occupancy: it checks logic and synchronisation, never speed), shuffle masks
// (every shuffle is a full-mask one: all 32 lanes of a whole warp must take part, or the launch
// reports an error), a grid-wide barrier (blocks never run at the same
// time), distributed shared memory (a block reads only its own), and launch limits (block size,
// shared memory size, cluster size).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#define PF_CUDA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace pf_emu {

enum Schedule : int { kForward = 0, kReverse = 1, kRandom = 2 };

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = 256 * 1024;  // per fiber, reserved lazily (mmap), with a guard page

// One fiber's stack: mmap'd so only the pages a kernel touches cost memory; the lowest page is a
// guard, so a stack overflow faults instead of corrupting a neighbour.
class Stack {
 public:
  Stack() {
    const size_t page = 4096;
    base_ = static_cast<char*>(mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base_ == MAP_FAILED) throw std::runtime_error("cuda emulation: cannot map a fiber stack");
    mprotect(base_, page, PROT_NONE);
    top_ = base_ + page;
  }
  ~Stack() { munmap(base_, kStackBytes + 4096); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  char* bottom() const { return top_; }

 private:
  char* base_;
  char* top_;
};

enum class State { kRunnable, kAtBarrier, kAtCluster, kAtWarp, kDone };

struct Fiber {
  ucontext_t context;
  State state = State::kRunnable;
  uint3 index{0, 0, 0};
  int64_t linear = 0;  // within its block
  int64_t block = 0;   // its block's rank in the cluster
};

// The launch and cluster being run (one launch at a time per host thread). Without clusters a
// cluster is one block.
struct Run {
  uint3 grid_dim{1, 1, 1}, block_dim{1, 1, 1};
  int64_t cluster_blocks = 1;
  std::vector<uint3> block_index;  // per block of the cluster
  std::vector<Fiber> fibers;       // block by block
  Fiber* current = nullptr;
  ucontext_t scheduler;
  std::function<void()> body;
  size_t shared_bytes = 0;
  std::vector<std::vector<unsigned char>> dynamic_shared;  // per block of the cluster
  std::vector<uint64_t> shuffle_slots;                     // one per fiber
  std::string error;

  int64_t threads_per_block() const { return int64_t(block_dim.x) * block_dim.y * block_dim.z; }
};

inline thread_local Run* active = nullptr;
inline thread_local Schedule schedule = kForward;
inline thread_local uint64_t schedule_seed = 0;

inline Run& run() {
  if (active == nullptr) throw std::logic_error("cuda emulation: a built-in used outside a launch");
  return *active;
}

inline uint3 thread_idx() { return run().current->index; }
inline uint3 block_idx() { return run().block_index[run().current->block]; }
inline uint3 block_dim() { return run().block_dim; }
inline uint3 grid_dim() { return run().grid_dim; }
// Aligned to 128 bytes, as a GPU's shared memory is at least (wmma's loads need 32).
constexpr size_t kSharedAlign = 128;
inline unsigned char* dynamic_shared() {
  unsigned char* raw = run().dynamic_shared[run().current->block].data();
  const uintptr_t address = reinterpret_cast<uintptr_t>(raw);
  return raw + (kSharedAlign - address % kSharedAlign) % kSharedAlign;
}
inline unsigned cluster_rank() { return static_cast<unsigned>(run().current->block); }
inline unsigned cluster_blocks() { return static_cast<unsigned>(run().cluster_blocks); }

// Leave the running fiber (it waits in `state`); the scheduler resumes it when it is released.
inline void park(State state) {
  Run& r = run();
  Fiber* self = r.current;
  self->state = state;
  swapcontext(&self->context, &r.scheduler);
}

inline void fiber_entry() {
  Run& r = run();
  r.body();
  r.current->state = State::kDone;  // uc_link returns to the scheduler
}

inline std::vector<int64_t> order(int64_t n, Schedule s, std::mt19937_64& random) {
  std::vector<int64_t> o(static_cast<size_t>(n));
  std::iota(o.begin(), o.end(), 0);
  if (s == kReverse) std::reverse(o.begin(), o.end());
  if (s == kRandom) std::shuffle(o.begin(), o.end(), random);
  return o;
}

// Releases the fibers in [begin, end) waiting in `state` if every fiber there waits so (none has
// exited: a barrier that some threads reach after others have exited is an error here); true if
// it released some.
inline bool release_group(Run& r, int64_t begin, int64_t end, State state) {
  for (int64_t t = begin; t < end; ++t) {
    if (r.fibers[t].state != state) return false;
  }
  for (int64_t t = begin; t < end; ++t) r.fibers[t].state = State::kRunnable;
  return end > begin;
}

// Releases the waiters whose barrier every participant has reached: a block's __syncthreads, the
// cluster's barrier, a warp's shuffle. False if none could be released although some fibers still
// wait (a barrier some threads never reach, or reach after others of the block have exited:
// undefined behaviour on a GPU, an error here).
//
// Under the random schedule a block whose __syncthreads is ready may be held back a round while
// the others of its cluster run on (as a slower SM would be): blocks drift apart between cluster
// barriers, so a kernel that orders two blocks' work with __syncthreads alone shows a race.
inline bool release(Run& r, std::mt19937_64& random) {
  const bool waiting = std::any_of(r.fibers.begin(), r.fibers.end(),
                                   [](const Fiber& f) { return f.state != State::kDone; });
  if (!waiting) return true;
  const int64_t n = r.threads_per_block(), total = static_cast<int64_t>(r.fibers.size());
  bool any = release_group(r, 0, total, State::kAtCluster);
  const bool skew = schedule == kRandom && r.cluster_blocks > 1;
  const int64_t held = skew ? static_cast<int64_t>(random() % (r.cluster_blocks + 1)) : -1;
  for (int64_t b = 0; b < r.cluster_blocks; ++b) {
    if (b != held) any = release_group(r, b * n, (b + 1) * n, State::kAtBarrier) || any;
    // A warp's shuffle (a full mask): all 32 lanes, none exited. A partial warp (a block that is
    // not whole warps) or an exited lane (or lanes that shuffle different numbers of times, which
    // ends so) is undefined behaviour on a GPU: never released here, so the launch reports it.
    for (int64_t w = 0; (w + 1) * kWarpSize <= n; ++w) {
      const int64_t begin = b * n + w * kWarpSize, end = begin + kWarpSize;
      bool ready = true;
      for (int64_t t = begin; t < end; ++t) {
        const Fiber& f = r.fibers[t];
        if (f.state != State::kAtWarp) ready = false;
      }
      if (!ready) continue;
      for (int64_t t = begin; t < end; ++t) r.fibers[t].state = State::kRunnable;
      any = true;
    }
  }
  if (!any && held >= 0 && held < r.cluster_blocks)  // the held block was all that could move
    any = release_group(r, held * n, (held + 1) * n, State::kAtBarrier);
  return any;
}

inline std::vector<std::unique_ptr<Stack>>& stack_pool() {
  static thread_local std::vector<std::unique_ptr<Stack>> pool;
  return pool;
}

// Runs one cluster (one block without clusters): every fiber until it parks or ends, in the
// schedule's order, then releases the barriers that everyone reached, until all fibers are done.
inline void run_cluster(Run& r, std::mt19937_64& random) {
  const int64_t n = r.threads_per_block(), total = n * r.cluster_blocks;
  auto& pool = stack_pool();
  while (static_cast<int64_t>(pool.size()) < total) pool.push_back(std::make_unique<Stack>());
  r.fibers.assign(static_cast<size_t>(total), Fiber{});
  r.shuffle_slots.assign(static_cast<size_t>(total), 0);
  r.dynamic_shared.assign(
      static_cast<size_t>(r.cluster_blocks),
      std::vector<unsigned char>(r.shared_bytes + kSharedAlign, 0xA5));  // garbage, as on a GPU
  for (int64_t q = 0; q < total; ++q) {
    Fiber& f = r.fibers[q];
    const int64_t t = q % n;
    f.linear = t;
    f.block = q / n;
    f.index = uint3{static_cast<unsigned>(t % r.block_dim.x),
                    static_cast<unsigned>(t / r.block_dim.x % r.block_dim.y),
                    static_cast<unsigned>(t / (int64_t(r.block_dim.x) * r.block_dim.y))};
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = pool[q]->bottom();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &r.scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  for (;;) {
    for (int64_t q : order(total, schedule, random)) {
      Fiber& f = r.fibers[q];
      if (f.state != State::kRunnable) continue;
      r.current = &f;
      swapcontext(&r.scheduler, &f.context);
      r.current = nullptr;
    }
    const bool done = std::all_of(r.fibers.begin(), r.fibers.end(),
                                  [](const Fiber& f) { return f.state == State::kDone; });
    if (done) return;
    if (!release(r, random)) {
      if (r.error.empty()) {
        const uint3 first = r.block_index[0];
        r.error = "cuda emulation: " +
                  std::string(r.cluster_blocks > 1 ? "cluster of block (" : "block (") +
                  std::to_string(first.x) + ", " + std::to_string(first.y) + ", " +
                  std::to_string(first.z) +
                  "): a __syncthreads, cluster barrier or warp shuffle that not every thread of "
                  "the block (cluster, warp) reaches, or reaches after others have exited (a "
                  "barrier in divergent code)";
      }
      for (Fiber& f : r.fibers) {  // let them run on, so that the launch finishes
        if (f.state != State::kDone) f.state = State::kRunnable;
      }
    }
  }
}

// Runs kernel(args...) for every thread of the grid, in clusters of `cluster_blocks` consecutive
// blocks along x (a launch with the cluster dimension (cluster_blocks, 1, 1)). Throws if the
// kernel's synchronisation is broken (see run_cluster).
template <typename... Params, typename... Args>
void launch_clusters(dim3 grid, dim3 block, unsigned cluster_blocks, size_t shared_bytes,
                     void (*kernel)(Params...), Args&&... args) {
  if (active != nullptr) throw std::logic_error("cuda emulation: a launch inside a launch");
  if (cluster_blocks < 1 || grid.x % cluster_blocks != 0)
    throw std::invalid_argument("cuda emulation: grid.x must be a multiple of the cluster size");
  Run r;
  r.grid_dim = uint3{grid.x, grid.y, grid.z};
  r.block_dim = uint3{block.x, block.y, block.z};
  r.cluster_blocks = cluster_blocks;
  r.shared_bytes = shared_bytes;
  r.body = [&] { kernel(args...); };
  std::mt19937_64 random(schedule_seed);
  const int64_t clusters = int64_t(grid.x / cluster_blocks) * grid.y * grid.z;
  const int64_t clusters_x = grid.x / cluster_blocks;
  active = &r;
  try {
    for (int64_t q : order(clusters, schedule, random)) {
      r.block_index.clear();
      for (unsigned b = 0; b < cluster_blocks; ++b) {
        r.block_index.push_back(uint3{static_cast<unsigned>(q % clusters_x * cluster_blocks + b),
                                      static_cast<unsigned>(q / clusters_x % grid.y),
                                      static_cast<unsigned>(q / (clusters_x * grid.y))});
      }
      run_cluster(r, random);
    }
  } catch (...) {
    active = nullptr;
    throw;
  }
  active = nullptr;
  if (!r.error.empty()) throw std::runtime_error(r.error);
}

// Runs kernel(args...) for every thread of the grid, without clusters.
template <typename... Params, typename... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(Params...), Args&&... args) {
  launch_clusters(grid, block, 1, shared_bytes, kernel, std::forward<Args>(args)...);
}

// The schedule of the launches that follow on this host thread (restored by the destructor).
struct ScheduleScope {
  Schedule saved_schedule;
  uint64_t saved_seed;
  ScheduleScope(Schedule s, uint64_t seed) : saved_schedule(schedule), saved_seed(schedule_seed) {
    schedule = s;
    schedule_seed = seed;
  }
  ~ScheduleScope() {
    schedule = saved_schedule;
    schedule_seed = saved_seed;
  }
};

template <typename T>
T shuffle(T value, int64_t source_in_warp) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "cuda emulation: shuffles move at most 8 bytes");
  Run& r = run();
  const int64_t self = r.current->linear, block_base = r.current->block * r.threads_per_block();
  std::memcpy(&r.shuffle_slots[block_base + self], &value, sizeof(T));
  park(State::kAtWarp);  // every lane has written its slot
  const int64_t warp_base = self - self % kWarpSize;
  const int64_t source = warp_base + source_in_warp;
  T out = value;
  if (source >= 0 && source < r.threads_per_block()) {
    std::memcpy(&out, &r.shuffle_slots[block_base + source], sizeof(T));
  }
  park(State::kAtWarp);  // every lane has read before any slot is written again
  return out;
}

// A warp-collective call (__syncwarp, wmma's loads, stores and products): all 32 lanes of a whole
// warp meet here, as at a shuffle; one that some lanes miss is reported by the launch.
inline void warp_meet() { park(State::kAtWarp); }

// A misuse the device would fault on or compute garbage from (e.g. a misaligned wmma load):
// recorded, and thrown by the launch when the kernel has finished (never thrown across fibers).
inline void fail(const std::string& what) {
  Run& r = run();
  if (r.error.empty()) r.error = "cuda emulation: " + what;
}

}  // namespace pf_emu

#define threadIdx (::pf_emu::thread_idx())
#define blockIdx (::pf_emu::block_idx())
#define blockDim (::pf_emu::block_dim())
#define gridDim (::pf_emu::grid_dim())
#define warpSize (::pf_emu::kWarpSize)

inline void __syncthreads() { ::pf_emu::park(::pf_emu::State::kAtBarrier); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::pf_emu::warp_meet(); }

namespace pf_emu {
// The cluster barrier (cooperative_groups::this_cluster().sync() on a GPU).
inline void cluster_sync() { park(State::kAtCluster); }
}  // namespace pf_emu

template <typename T>
T __shfl_sync(unsigned, T value, int source, int width = pf_emu::kWarpSize) {
  const int lane = static_cast<int>(pf_emu::run().current->linear % pf_emu::kWarpSize);
  return pf_emu::shuffle(value, lane - lane % width + source % width);
}

template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = pf_emu::kWarpSize) {
  const int lane = static_cast<int>(pf_emu::run().current->linear % pf_emu::kWarpSize);
  const int in_segment = lane % width;
  const int source =
      in_segment + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return pf_emu::shuffle(value, source);
}

template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask, int width = pf_emu::kWarpSize) {
  const int lane = static_cast<int>(pf_emu::run().current->linear % pf_emu::kWarpSize);
  const int source = lane ^ mask;
  return pf_emu::shuffle(value, source / width == lane / width ? source : lane);
}

// Atomics: only one fiber runs at a time, so plain read-modify-write is atomic here.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

template <typename T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}

template <typename T>
T atomicMax(T* address, T value) {
  const T old = *address;
  *address = old > value ? old : value;
  return old;
}

template <typename T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}

template <typename T>
T __ldg(const T* address) {
  return *address;
}

#include "wmma_emulation.h"
