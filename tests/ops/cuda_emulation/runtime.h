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
// Thread block clusters (sm_90; cudaLaunchKernelEx with a cluster dimension): a cluster's blocks run
// interleaved on the one OS thread, each up to its next cluster.sync() (a barrier of every thread of
// every block) in a shuffled order. A block's shared memory is saved when it stops and restored when
// it runs again, so that map_shared_rank (distributed shared memory) reads and writes the other
// block's own copy. A block that exits while the rest of its cluster waits at a barrier is an error.
// A cooperative launch (cudaLaunchAttributeCooperative) runs its whole grid as one such group, for
// grid.sync(); it may have at most kBlocksPerSm blocks per SM of the device, as the driver requires.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
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
constexpr int kBlocksPerSm = 1;  // what the emulated occupancy query answers for every kernel

enum class State { kReady, kBlockBarrier, kWarpBarrier, kClusterBarrier, kDone };

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
  // static __shared__ variables (address, bytes) this block declared, and their values while it waits
  std::vector<std::pair<void*, size_t>> poisoned;
  std::vector<std::vector<unsigned char>> saved;
  std::vector<unsigned char> saved_dynamic;
  dim3 id;
  unsigned rank = 0;  // in its cluster
};

inline thread_local Block* g_block = nullptr;
inline thread_local std::vector<Block>* g_cluster = nullptr;  // the blocks of the running cluster
inline thread_local size_t g_dynamic_bytes = 0;                // of the running launch
inline thread_local bool g_cooperative = false;                // the running launch is cooperative
alignas(128) inline thread_local unsigned char g_dynamic_smem[kDynamicSmemBytes];

inline std::map<const void*, size_t>& smem_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}

// The mutation that an instrumented build (tests/ops/cuda_emulation/mutate.py) switches on: the
// environment's LNL_EMU_MUTANT, read once; -1 (none) when unset.
inline int mutant() {
  static const int id = [] {
    const char* s = std::getenv("LNL_EMU_MUTANT");
    return s != nullptr && *s != '\0' ? std::atoi(s) : -1;
  }();
  return id;
}

inline uint64_t& launch_counter() {
  static uint64_t n = 0;
  return n;
}

// The emulated device's attributes (set from the tests through the bindings' set_device).
struct Device {
  int sms = 132;                  // an H100 SXM
  int max_smem_optin = 227 * 1024;
  int major = 9;                  // compute capability: clusters need 9+
};
inline Device& device() {
  static Device d;
  return d;
}

// (blocks, threads per block, dynamic shared bytes, blocks per cluster) of each launch, for tests to
// see the shapes.
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
  for (const auto& [q, n] : g_block->poisoned)
    if (q == p) return;
  std::memset(p, 0xff, bytes);
  g_block->poisoned.emplace_back(p, bytes);
}

// The address of `p` (shared memory of the running block) in block `rank` of its cluster: the
// running block's own `p`, or the other block's saved copy (it waits at a barrier meanwhile).
inline void* map_shared(const void* p, unsigned rank) {
  auto* c = const_cast<unsigned char*>(static_cast<const unsigned char*>(p));
  if (g_cluster == nullptr || rank >= g_cluster->size()) {
    fail("map_shared_rank: rank " + std::to_string(rank) + " is outside the cluster");
    return c;
  }
  if (g_cooperative) {
    fail("map_shared_rank in a cooperative launch: its blocks are not a cluster");
    return c;
  }
  if (rank == g_block->rank) return c;
  Block& other = (*g_cluster)[rank];
  if (std::all_of(other.fibers.begin(), other.fibers.end(), [](const Fiber& f) { return f.state == State::kDone; }))
    fail("map_shared_rank: block " + std::to_string(rank) + " of the cluster has exited (its shared memory is gone)");
  if (c >= g_dynamic_smem && c < g_dynamic_smem + g_dynamic_bytes) return other.saved_dynamic.data() + (c - g_dynamic_smem);
  for (size_t i = 0; i < other.poisoned.size(); ++i) {
    auto* base = static_cast<unsigned char*>(other.poisoned[i].first);
    if (c >= base && c < base + other.poisoned[i].second) return other.saved[i].data() + (c - base);
  }
  fail("map_shared_rank: not shared memory that block " + std::to_string(rank) + " has declared");
  return c;
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
    case State::kClusterBarrier: return "cluster.sync";
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

inline void start_block(Block& b, dim3 id, unsigned rank) {
  b.id = id;
  b.rank = rank;
  b.poisoned.clear();
  b.saved.clear();
  for (Fiber& f : b.fibers) {
    f.state = State::kReady;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &b.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
  }
}

inline std::string block_name(const Block& b) {
  return "block (" + std::to_string(b.id.x) + ", " + std::to_string(b.id.y) + ")";
}

// Warps run one at a time, each as far as it can go, in a random order: a warp reaches its next
// __syncthreads before another starts, which exposes any read of another warp's writes that lacks
// a barrier (lockstep execution would hide it). Returns when every thread has exited or waits at
// cluster.sync (the cluster's scheduler then runs the other blocks).
inline void run_block(Block& b, dim3 block, std::mt19937& rng) {
  const int n = static_cast<int>(b.fibers.size());
  std::vector<int> warps;
  for (int base = 0; base < n; base += 32) warps.push_back(base);
  for (;;) {
    std::shuffle(warps.begin(), warps.end(), rng);
    for (int base : warps) run_warp(b, base, block, rng);
    int done = 0, at_barrier = 0, at_cluster = 0;
    for (const Fiber& f : b.fibers)
      done += f.state == State::kDone, at_barrier += f.state == State::kBlockBarrier,
          at_cluster += f.state == State::kClusterBarrier;
    if (done == n || (at_cluster > 0 && done + at_cluster == n)) return;
    if (done + at_barrier == n) {
      for (Fiber& f : b.fibers)
        if (f.state == State::kBlockBarrier) f.state = State::kReady;
      continue;
    }
    throw std::runtime_error("cuda emulation: deadlock in " + block_name(b) + ": " + describe(b));
  }
}

// A waiting block's shared memory moves aside for the next block to run, and back before it runs.
inline void park(Block& b) {
  b.saved.resize(b.poisoned.size());
  for (size_t i = 0; i < b.poisoned.size(); ++i) {
    const auto* p = static_cast<const unsigned char*>(b.poisoned[i].first);
    b.saved[i].assign(p, p + b.poisoned[i].second);
  }
  std::memcpy(b.saved_dynamic.data(), g_dynamic_smem, b.saved_dynamic.size());
}

inline void unpark(const Block& b) {
  for (size_t i = 0; i < b.saved.size(); ++i) std::memcpy(b.poisoned[i].first, b.saved[i].data(), b.saved[i].size());
  std::memcpy(g_dynamic_smem, b.saved_dynamic.data(), b.saved_dynamic.size());
}

// Runs one cluster (one block when not a cluster launch) to completion: its blocks in a shuffled
// order, each up to its next cluster.sync, which releases when every thread of the cluster waits.
inline void run_cluster(std::vector<Block>& bs, dim3 block, size_t smem, std::mt19937& rng) {
  const bool many = bs.size() > 1;
  for (Block& b : bs) b.saved_dynamic.assign(std::min(smem, kDynamicSmemBytes), 0xff);
  if (!many) std::memset(g_dynamic_smem, 0xff, bs[0].saved_dynamic.size());
  std::vector<size_t> order(bs.size());
  for (size_t r = 0; r < order.size(); ++r) order[r] = r;
  for (;;) {
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t r : order) {
      Block& b = bs[r];
      if (std::none_of(b.fibers.begin(), b.fibers.end(), [](const Fiber& f) { return f.state == State::kReady; }))
        continue;
      if (many) unpark(b);
      g_block = &b;
      blockIdx = b.id;
      run_block(b, block, rng);
      if (many) park(b);
      if (!b.error.empty()) throw std::runtime_error("cuda emulation: " + block_name(b) + ": " + b.error);
    }
    size_t done = 0, waiting = 0, threads = 0;
    for (const Block& b : bs)
      for (const Fiber& f : b.fibers) ++threads, done += f.state == State::kDone, waiting += f.state == State::kClusterBarrier;
    if (done == threads) return;
    if (done > 0)
      throw std::runtime_error("cuda emulation: threads exited while the rest of their cluster waits at cluster.sync "
                               "(every thread of every block must arrive; its shared memory may be read after exit)");
    for (Block& b : bs)
      for (Fiber& f : b.fibers) f.state = State::kReady;
  }
}

struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
  unsigned cluster = 1;  // blocks per cluster, along x
  bool cooperative = false;
  LaunchConfig(dim3 g, dim3 b, size_t s = 0, const void* /*stream*/ = nullptr, unsigned c = 1)
      : grid(g), block(b), smem(s), cluster(c) {}
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
  const unsigned cs = cfg.cooperative ? cfg.grid.x * cfg.grid.y : cfg.cluster;
  if (cfg.cooperative && (cfg.cluster != 1 || cs > static_cast<unsigned>(device().sms * kBlocksPerSm)))
    throw std::runtime_error("cuda emulation: a cooperative launch of " + std::to_string(cs) +
                             " blocks, more than the device holds at once (" +
                             std::to_string(device().sms * kBlocksPerSm) + ")");
  if (!cfg.cooperative && cs > 1 && device().major < 9)
    throw std::runtime_error("cuda emulation: a cluster launch on a device of compute capability " +
                             std::to_string(device().major) + " (clusters need 9.0)");
  if (!cfg.cooperative && (cs == 0 || cs > 8 || cfg.grid.x % cs != 0))
    throw std::runtime_error("cuda emulation: cluster of " + std::to_string(cs) + " blocks for a grid of " +
                             std::to_string(cfg.grid.x) + " (at most 8, dividing the grid)");
  launch_log().push_back(
      {int64_t(cfg.grid.x) * cfg.grid.y, int64_t(threads), int64_t(cfg.smem), int64_t(cs), int64_t(cfg.cooperative)});
  std::vector<Block> bs(cs);
  for (Block& b : bs) {
    b.fibers.resize(threads);
    for (Fiber& f : b.fibers) f.stack.resize(kStackBytes);
    b.exchange.assign(threads, 0);
    b.body = [=] { kernel(args...); };
  }
  std::mt19937 rng(static_cast<uint32_t>(0x9e3779b9u * ++launch_counter()));
  Block* saved = g_block;
  std::vector<Block>* saved_cluster = g_cluster;
  const size_t saved_bytes = g_dynamic_bytes;
  g_cluster = &bs;
  g_dynamic_bytes = std::min(cfg.smem, kDynamicSmemBytes);
  blockDim = cfg.block;
  gridDim = cfg.grid;
  // clusters in a shuffled order: a result must not depend on the order blocks run in
  const bool saved_cooperative = g_cooperative;
  g_cooperative = cfg.cooperative;
  std::vector<dim3> firsts;  // each group's first block
  if (cfg.cooperative) {
    firsts.emplace_back(0, 0);
  } else {
    for (unsigned y = 0; y < cfg.grid.y; ++y)
      for (unsigned x = 0; x < cfg.grid.x; x += cs) firsts.emplace_back(x, y);
  }
  std::shuffle(firsts.begin(), firsts.end(), rng);
  const auto restore = [&] {
    g_block = saved, g_cluster = saved_cluster, g_dynamic_bytes = saved_bytes, g_cooperative = saved_cooperative;
  };
  try {
    for (const dim3 first : firsts) {
      for (unsigned r = 0; r < cs; ++r) {
        const unsigned linear = first.x + r;  // a cooperative group spans the rows of the grid
        start_block(bs[r], cfg.cooperative ? dim3(linear % cfg.grid.x, linear / cfg.grid.x) : dim3(linear, first.y), r);
      }
      run_cluster(bs, cfg.block, cfg.smem, rng);
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
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

template <typename T>
T __ldcg(const T* p) { return *p; }  // a load that bypasses L1: one memory here

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
using std::isfinite;
using std::fmin;
using std::fmax;
using std::log;
using std::exp;
using std::sqrt;
using std::log1p;
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
