// A test-only emulation of the CUDA built-ins on the host, so that g++ compiles pixelfast's device
// code (the csrc/**/*.cuh headers) unchanged and CI runs it without a GPU.
//
// What it does. `pf_emu::launch(grid, block, shared_bytes, kernel, args...)` runs `kernel` for
// every CUDA thread of the grid: the blocks one after another, and within a block one fiber
// (ucontext) per CUDA thread. Only one fiber runs at a time; a fiber runs until it reaches
// `__syncthreads()` (or a warp shuffle, or its end), then the next one runs. The order in which
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
// __shfl_down_sync / __shfl_xor_sync (lanes of a warp meet like a barrier), __ldg.
//
// What it does not model: the memory model (every write is visible at once to every later
// fiber, so a missing __threadfence or volatile goes unseen), timing of any kind (warp divergence,
// bank conflicts, occupancy: it checks logic and synchronisation, never speed), shuffle masks
// (every shuffle is taken as a whole-warp one), a grid-wide barrier (blocks never run at the same
// time), and launch limits (block size, shared memory size).
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

enum class State { kRunnable, kAtBarrier, kAtWarp, kDone };

struct Fiber {
  ucontext_t context;
  State state = State::kRunnable;
  uint3 index{0, 0, 0};
  int64_t linear = 0;
};

// The launch and block being run (one launch at a time per host thread).
struct Run {
  uint3 grid_dim{1, 1, 1}, block_dim{1, 1, 1}, block_index{0, 0, 0};
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  std::function<void()> body;
  std::vector<unsigned char> dynamic_shared;
  std::vector<uint64_t> shuffle_slots;  // one per thread of the block
  std::string error;
};

inline thread_local Run* active = nullptr;
inline thread_local Schedule schedule = kForward;
inline thread_local uint64_t schedule_seed = 0;

inline Run& run() {
  if (active == nullptr) throw std::logic_error("cuda emulation: a built-in used outside a launch");
  return *active;
}

inline uint3 thread_idx() { return run().current->index; }
inline uint3 block_idx() { return run().block_index; }
inline uint3 block_dim() { return run().block_dim; }
inline uint3 grid_dim() { return run().grid_dim; }
inline unsigned char* dynamic_shared() { return run().dynamic_shared.data(); }

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

// Releases the waiters whose barrier every participant has reached; false if none could be
// released although some fibers still wait (a barrier some threads never reach, or reach after
// others of the block have exited: undefined behaviour on a GPU, an error here).
inline bool release(Run& r) {
  bool any = false;
  bool block_ready = true, waiting = false;
  for (const Fiber& f : r.fibers) {
    if (f.state == State::kDone) continue;
    waiting = true;
    if (f.state != State::kAtBarrier) block_ready = false;
  }
  if (!waiting) return true;
  const bool some_exited = std::any_of(r.fibers.begin(), r.fibers.end(),
                                       [](const Fiber& f) { return f.state == State::kDone; });
  if (block_ready && !some_exited) {
    for (Fiber& f : r.fibers) {
      if (f.state == State::kAtBarrier) f.state = State::kRunnable;
    }
    return true;
  }
  const int64_t n = static_cast<int64_t>(r.fibers.size());
  for (int64_t w = 0; w * kWarpSize < n; ++w) {
    const int64_t end = std::min<int64_t>(n, (w + 1) * kWarpSize);
    bool ready = true, present = false;
    for (int64_t t = w * kWarpSize; t < end; ++t) {
      const State s = r.fibers[t].state;
      if (s == State::kDone) continue;
      present = true;
      if (s != State::kAtWarp) ready = false;
    }
    if (!ready || !present) continue;
    for (int64_t t = w * kWarpSize; t < end; ++t) {
      if (r.fibers[t].state == State::kAtWarp) r.fibers[t].state = State::kRunnable;
    }
    any = true;
  }
  return any;
}

inline std::vector<std::unique_ptr<Stack>>& stack_pool() {
  static thread_local std::vector<std::unique_ptr<Stack>> pool;
  return pool;
}

// Runs one block: every fiber until it parks or ends, in the schedule's order, then releases the
// barriers that everyone reached, until all fibers are done.
inline void run_block(Run& r, std::mt19937_64& random) {
  const int64_t n = static_cast<int64_t>(r.block_dim.x) * r.block_dim.y * r.block_dim.z;
  auto& pool = stack_pool();
  while (static_cast<int64_t>(pool.size()) < n) pool.push_back(std::make_unique<Stack>());
  r.fibers.assign(static_cast<size_t>(n), Fiber{});
  r.shuffle_slots.assign(static_cast<size_t>(n), 0);
  for (int64_t t = 0; t < n; ++t) {
    Fiber& f = r.fibers[t];
    f.linear = t;
    f.index = uint3{static_cast<unsigned>(t % r.block_dim.x),
                    static_cast<unsigned>(t / r.block_dim.x % r.block_dim.y),
                    static_cast<unsigned>(t / (int64_t(r.block_dim.x) * r.block_dim.y))};
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = pool[t]->bottom();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &r.scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  for (;;) {
    for (int64_t t : order(n, schedule, random)) {
      Fiber& f = r.fibers[t];
      if (f.state != State::kRunnable) continue;
      r.current = &f;
      swapcontext(&r.scheduler, &f.context);
      r.current = nullptr;
    }
    const bool done = std::all_of(r.fibers.begin(), r.fibers.end(),
                                  [](const Fiber& f) { return f.state == State::kDone; });
    if (done) return;
    if (!release(r)) {
      if (r.error.empty()) {
        r.error =
            "cuda emulation: block (" + std::to_string(r.block_index.x) + ", " +
            std::to_string(r.block_index.y) + ", " + std::to_string(r.block_index.z) +
            "): a __syncthreads or warp shuffle that not every thread of the block (or "
            "warp) reaches, or reaches after others have exited (a barrier in divergent code)";
      }
      for (Fiber& f : r.fibers) {  // let them run on, so that the block finishes
        if (f.state != State::kDone) f.state = State::kRunnable;
      }
    }
  }
}

// Runs kernel(args...) for every thread of the grid. Throws if the kernel's synchronisation is
// broken (see run_block).
template <typename... Params, typename... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(Params...), Args&&... args) {
  if (active != nullptr) throw std::logic_error("cuda emulation: a launch inside a launch");
  Run r;
  r.grid_dim = uint3{grid.x, grid.y, grid.z};
  r.block_dim = uint3{block.x, block.y, block.z};
  r.dynamic_shared.assign(shared_bytes, 0xA5);  // garbage, as on a GPU: never read before written
  r.body = [&] { kernel(args...); };
  std::mt19937_64 random(schedule_seed);
  const int64_t blocks = int64_t(grid.x) * grid.y * grid.z;
  active = &r;
  try {
    for (int64_t q : order(blocks, schedule, random)) {
      r.block_index =
          uint3{static_cast<unsigned>(q % grid.x), static_cast<unsigned>(q / grid.x % grid.y),
                static_cast<unsigned>(q / (int64_t(grid.x) * grid.y))};
      run_block(r, random);
    }
  } catch (...) {
    active = nullptr;
    throw;
  }
  active = nullptr;
  if (!r.error.empty()) throw std::runtime_error(r.error);
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
  const int64_t self = r.current->linear;
  std::memcpy(&r.shuffle_slots[self], &value, sizeof(T));
  park(State::kAtWarp);  // every lane has written its slot
  const int64_t warp_base = self - self % kWarpSize;
  const int64_t source = warp_base + source_in_warp;
  T out = value;
  if (source >= 0 && source < static_cast<int64_t>(r.fibers.size())) {
    std::memcpy(&out, &r.shuffle_slots[source], sizeof(T));
  }
  park(State::kAtWarp);  // every lane has read before any slot is written again
  return out;
}

}  // namespace pf_emu

#define threadIdx (::pf_emu::thread_idx())
#define blockIdx (::pf_emu::block_idx())
#define blockDim (::pf_emu::block_dim())
#define gridDim (::pf_emu::grid_dim())
#define warpSize (::pf_emu::kWarpSize)

inline void __syncthreads() { ::pf_emu::park(::pf_emu::State::kAtBarrier); }

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
