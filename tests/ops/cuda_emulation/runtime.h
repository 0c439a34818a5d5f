// A CPU emulation of the CUDA execution model, enough to run lnl's kernels (csrc/*/*_kernels.cuh)
// and their host launchers (csrc/*/*_cuda.cu) on CPU tensors, so that CI without a GPU runs the
// device code against the CPU kernels and the references (tests/ops/test_cuda_emulation.py).
//
// Each block runs on one OS thread as one fiber (ucontext) per CUDA thread. A fiber runs until it
// reaches a barrier. Warps run one at a time in a shuffled order (seeded), each up to its next
// __syncthreads, and lanes in a shuffled order up to their next warp collective, so a missing
// barrier shows up as a wrong result rather than hiding behind lockstep execution:
//  * __syncthreads releases when every thread of the block that has not exited waits at one;
//  * warp collectives (__syncwarp, __shfl*_sync, __ballot_sync, wmma) release when every lane of
//    their mask waits at one with the same mask; a lane of the mask that exited, or a block where
//    nothing can move, is reported as a deadlock (an error naming each thread's state).
// Shared memory is static storage (blocks run one after another, in a shuffled order), poisoned
// with 0xff for each block: dynamic shared memory before the block, each static __shared__
// variable when the block first reaches its declaration. Launch checks mirror the driver's: block size <= 1024,
// dynamic shared memory <= 48 KB unless raised by cudaFuncSetAttribute, <= 227 KB (H100).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Block-scope thread_local is static storage: one copy shared by a block's fibers (one OS thread).
#define __shared__ thread_local

namespace lnl_emu {

constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;
constexpr size_t kDynamicSmemBytes = kMaxDynamicSmem;

enum class State { kReady, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  State state = State::kReady;
  unsigned mask = 0;  // lanes of a warp barrier
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<uint64_t> exchange;  // one slot per thread: warp collectives' values
  ucontext_t scheduler;
  int current = -1;
  std::function<void()> body;
  std::string error;  // the first misuse a thread reported (thrown by launch after the block)
  std::vector<const void*> poisoned;  // static __shared__ variables poisoned in this block
};

inline thread_local Block* g_block = nullptr;
alignas(128) inline thread_local unsigned char g_dynamic_smem[kDynamicSmemBytes];

inline std::map<const void*, size_t>& smem_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}

inline uint64_t& launch_counter() {
  static uint64_t n = 0;
  return n;
}

// The emulated device's attributes (set from the tests through the bindings' set_device).
struct Device {
  int sms = 132;                  // an H100 SXM
  int max_smem_optin = 227 * 1024;
};
inline Device& device() {
  static Device d;
  return d;
}

// (blocks, threads per block, dynamic shared bytes) of each launch, for tests to see the shapes.
inline std::vector<std::vector<int64_t>>& launch_log() {
  static std::vector<std::vector<int64_t>> log;
  return log;
}

inline void wait(State s, unsigned mask = 0) {
  Fiber& f = g_block->fibers[g_block->current];
  f.state = s;
  f.mask = mask;
  swapcontext(&f.ctx, &g_block->scheduler);
}

// A misuse the hardware would fault on (or silently get wrong): reported by launch, not thrown here
// (an exception cannot leave a fiber).
inline void fail(const std::string& what) {
  if (g_block->error.empty()) g_block->error = what;
}

// Fills a static __shared__ variable with 0xff the first time a thread of the block declares it
// (build.py adds the call after each declaration): a read before the first write sees NaN / -1,
// as garbage on hardware, not the previous block's values. Every use follows the declaration.
inline void poison_once(void* p, size_t bytes) {
  auto& seen = g_block->poisoned;
  if (std::find(seen.begin(), seen.end(), p) != seen.end()) return;
  std::memset(p, 0xff, bytes);
  seen.push_back(p);
}

inline void fiber_entry() {
  g_block->body();
  g_block->fibers[g_block->current].state = State::kDone;
}  // returns to uc_link: the scheduler

inline const char* state_name(State s) {
  switch (s) {
    case State::kReady: return "ready";
    case State::kBlockBarrier: return "__syncthreads";
    case State::kWarpBarrier: return "warp barrier";
    default: return "exited";
  }
}

inline std::string describe(const Block& b) {
  std::string out;
  for (size_t t = 0; t < b.fibers.size(); ++t) {
    const Fiber& f = b.fibers[t];
    if (t > 0 && (t % 32 == 0 || b.fibers[t - 1].state != f.state)) out += "; ";
    if (t % 32 == 0 || b.fibers[t - 1].state != f.state) {
      out += "thread " + std::to_string(t) + "+: " + state_name(f.state);
      if (f.state == State::kWarpBarrier) out += " mask " + std::to_string(f.mask);
    }
  }
  return out;
}

// Releases warp `base / 32`'s barriers whose every lane waits with the same mask; true if any did.
inline bool release_warp(Block& b, int base) {
  bool released = false;
  const int n = static_cast<int>(b.fibers.size());
  for (int lane = 0; lane < 32 && base + lane < n; ++lane) {
    const Fiber& f = b.fibers[base + lane];
    if (f.state != State::kWarpBarrier) continue;
    bool all = true;
    for (int l = 0; l < 32; ++l) {
      const int t = base + l;
      if ((f.mask >> l & 1u) && (t >= n || b.fibers[t].state != State::kWarpBarrier || b.fibers[t].mask != f.mask))
        all = false;
    }
    if (!all) continue;
    const unsigned mask = f.mask;
    for (int l = 0; l < 32; ++l)
      if (mask >> l & 1u) b.fibers[base + l].state = State::kReady;
    released = true;
  }
  return released;
}

// Runs warp `base / 32` until none of its lanes can move (all wait at __syncthreads, exited, or
// wait on a warp barrier that other lanes never reach); lanes in a shuffled order.
inline void run_warp(Block& b, int base, dim3 block, std::mt19937& rng) {
  const int n = static_cast<int>(b.fibers.size()), lanes = std::min(32, n - base);
  std::vector<int> order(lanes);
  for (int l = 0; l < lanes; ++l) order[l] = base + l;
  do {
    std::shuffle(order.begin(), order.end(), rng);
    for (int t : order) {
      if (b.fibers[t].state != State::kReady) continue;
      threadIdx = dim3(t % block.x, t / block.x);
      b.current = t;
      swapcontext(&b.scheduler, &b.fibers[t].ctx);
    }
  } while (release_warp(b, base));
}

// Warps run one at a time, each as far as it can go, in a random order: a warp reaches its next
// __syncthreads before another starts, which exposes any read of another warp's writes that lacks
// a barrier (lockstep execution would hide it).
inline void run_block(Block& b, dim3 block, std::mt19937& rng) {
  const int n = static_cast<int>(b.fibers.size());
  for (int t = 0; t < n; ++t) {
    Fiber& f = b.fibers[t];
    f.state = State::kReady;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &b.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  std::vector<int> warps;
  for (int base = 0; base < n; base += 32) warps.push_back(base);
  for (;;) {
    std::shuffle(warps.begin(), warps.end(), rng);
    for (int base : warps) run_warp(b, base, block, rng);
    int done = 0, at_barrier = 0;
    for (const Fiber& f : b.fibers) done += f.state == State::kDone, at_barrier += f.state == State::kBlockBarrier;
    if (done == n) return;
    if (done + at_barrier == n) {
      for (Fiber& f : b.fibers)
        if (f.state == State::kBlockBarrier) f.state = State::kReady;
      continue;
    }
    throw std::runtime_error("cuda emulation: deadlock in block (" + std::to_string(blockIdx.x) + ", " +
                             std::to_string(blockIdx.y) + "): " + describe(b));
  }
}

struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
  LaunchConfig(dim3 g, dim3 b, size_t s = 0, const void* /*stream*/ = nullptr) : grid(g), block(b), smem(s) {}
};

template <typename Kernel, typename... Args>
void launch(const LaunchConfig& cfg, Kernel* kernel, Args... args) {
  const unsigned threads = cfg.block.x * cfg.block.y * cfg.block.z;
  if (threads == 0 || threads > 1024 || cfg.block.z != 1)
    throw std::runtime_error("cuda emulation: invalid block size " + std::to_string(threads));
  if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.y > 65535 || cfg.grid.z != 1)
    throw std::runtime_error("cuda emulation: invalid grid (" + std::to_string(cfg.grid.x) + ", " +
                             std::to_string(cfg.grid.y) + ")");
  auto it = smem_limits().find(reinterpret_cast<const void*>(kernel));
  const size_t limit = it == smem_limits().end() ? kDefaultDynamicSmem : it->second;
  if (cfg.smem > limit || cfg.smem > static_cast<size_t>(device().max_smem_optin))
    throw std::runtime_error("cuda emulation: " + std::to_string(cfg.smem) +
                             " bytes of dynamic shared memory over the kernel's limit of " + std::to_string(limit) +
                             " (device: " + std::to_string(device().max_smem_optin) + ")");
  launch_log().push_back({int64_t(cfg.grid.x) * cfg.grid.y, int64_t(threads), int64_t(cfg.smem)});
  Block b;
  b.fibers.resize(threads);
  for (Fiber& f : b.fibers) f.stack.resize(kStackBytes);
  b.exchange.assign(threads, 0);
  b.body = [=] { kernel(args...); };
  std::mt19937 rng(static_cast<uint32_t>(0x9e3779b9u * ++launch_counter()));
  Block* saved = g_block;
  g_block = &b;
  blockDim = cfg.block;
  gridDim = cfg.grid;
  // blocks in a shuffled order: a result must not depend on the order blocks run in
  std::vector<dim3> blocks;
  for (unsigned y = 0; y < cfg.grid.y; ++y)
    for (unsigned x = 0; x < cfg.grid.x; ++x) blocks.emplace_back(x, y);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  try {
    for (const dim3 id : blocks) {
      blockIdx = id;
      b.poisoned.clear();
      std::memset(g_dynamic_smem, 0xff, std::min(cfg.smem, kDynamicSmemBytes));
      run_block(b, cfg.block, rng);
      if (!b.error.empty())
        throw std::runtime_error("cuda emulation: block (" + std::to_string(id.x) + ", " +
                                 std::to_string(id.y) + "): " + b.error);
    }
  } catch (...) {
    g_block = saved;
    throw;
  }
  g_block = saved;
}

inline int linear_tid() { return static_cast<int>(threadIdx.x + threadIdx.y * blockDim.x); }

// Every lane of `mask` writes `value`, waits, and reads lane `src`'s; a second wait keeps the slots
// until all have read.
template <typename T>
T exchange(unsigned mask, T value, int src_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp exchange of at most 8 bytes");
  const int t = linear_tid(), base = t - t % 32;
  std::memcpy(&g_block->exchange[t], &value, sizeof(T));
  wait(State::kWarpBarrier, mask);
  if (!(mask >> src_lane & 1u)) src_lane = t - base;  // not a participant: undefined, keep own
  T out;
  std::memcpy(&out, &g_block->exchange[base + src_lane], sizeof(T));
  wait(State::kWarpBarrier, mask);
  return out;
}

}  // namespace lnl_emu

inline void __syncthreads() { lnl_emu::wait(lnl_emu::State::kBlockBarrier); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { lnl_emu::wait(lnl_emu::State::kWarpBarrier, mask); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = lnl_emu::linear_tid() % 32;
  return lnl_emu::exchange(mask, v, (lane - lane % width) + (src % width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = lnl_emu::linear_tid() % 32, src = lane ^ lane_mask;
  return lnl_emu::exchange(mask, v, src / width == lane / width ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = lnl_emu::linear_tid() % 32, src = lane + static_cast<int>(delta);
  return lnl_emu::exchange(mask, v, src / width == lane / width ? src : lane);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const int t = lnl_emu::linear_tid(), base = t - t % 32;
  lnl_emu::g_block->exchange[t] = predicate != 0;
  lnl_emu::wait(lnl_emu::State::kWarpBarrier, mask);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && lnl_emu::g_block->exchange[base + l]) bits |= 1u << l;
  lnl_emu::wait(lnl_emu::State::kWarpBarrier, mask);
  return bits;
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }

// One OS thread runs a block at a time: plain read-modify-writes are atomic here.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

template <typename A, typename B>
std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <typename A, typename B>
std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }
using std::fabs;
using std::fmin;
using std::fmax;
using std::log;
using std::exp;
using std::sqrt;
using std::log1p;
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
