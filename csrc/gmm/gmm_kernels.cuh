// Device code of the CUDA GMM EM and k-means init (included by gmm_cuda.cu only).
// A team of blocks per problem runs the problem's whole EM loop (or k-means) in one launch, so
// nothing returns to the host until the result: one block (small N: per-class fits), a thread block
// cluster on sm_90 summing over distributed shared memory (a few problems of 16k-64k points, e.g.
// DivideMix's 50k losses, which one SM would take ~8x longer over), or the blocks of a cooperative
// launch summing through global memory (larger problems, up to every SM). Statistics are float64
// and reduced in a fixed order (deterministic for a given launch shape).
//
// K is a template parameter (KT; kAnyK = 0 is the generic instantiation, the runtime K <= kMaxK):
// each thread's per-component arrays (responsibilities, log-densities, the EM statistics, k-means'
// per-cluster sums and k-means++ trials) are indexed only inside loops over a compile-time bound that
// unroll, so they live in registers. Indexed by a runtime K they lived in local memory (ptxas for
// sm_90 reported 208-336 byte stack frames and spills, a local-memory round trip per point and
// component). KT = 2 (DivideMix, PLReMix) sizes them for 2 components; the generic kernels size
// them for kMaxK and guard each component with k < K (float64 with D = 2 still spills ~120 bytes
// there: 4 components' statistics and fp64 E-step at the 128 registers 512 threads allow).
// __launch_bounds__(kThreads, 1): left to itself ptxas fitted some kernels (the float32 D = 1 EM,
// k-means) in 64 registers, two blocks per SM, and spilled; with one block per SM they keep
// everything in 72-128 registers. The methods' fits are one problem per launch (a block, cluster or
// grid per problem), where a second resident block would have no work; many small problems in one
// launch (bench_gmm.py's 1000 per-class fits) lose the second block per SM on those kernels.
//
// The E-step runs in the input's precision: a float32 input's log-densities, responsibilities and
// log-likelihood per point are fp32 (Components<float>), then added to the float64 statistics
// (the products r (x - shift) are exact in float64; the M-step is float64). FP64 runs at 1/64 of
// FP32's rate on consumer and workstation GPUs (sm_86, sm_89, sm_120; 1/2 on sm_80 / sm_90), and
// the fp64 E-step (an exp per extra component, a log and a division per point) was most of a pass's
// FP64 work; what stays FP64 is the sums: 8 adds/multiplies/FMAs per component and point (4 for
// D = 1), z = x - shift and one add for the bound.
// float64 inputs keep an fp64 E-step (the CPU kernel's to ~1e-15; the op promises 1e-9 for them).
// Measured in the CPU emulation against the CPU kernel's float64 E-step on the same float32 data
// (DivideMix's CIFAR-10 losses, 5 snapshots x D 1, 2 x DivideMix's and sklearn's default settings;
// synthetic losses; K = 3, 4 blobs; 31 fits): responsibilities differ by at most 1.6e-6, weights,
// means, covariances and the bound by at most 2.4e-7 (their float32 rounding), n_iter and converged
// never. The op's float32 tolerance is 1e-5. n_iter can differ from the float64 E-step's only when
// a step's |change of the lower bound| lies within the bound's fp32 error (~1e-7 x |bound|) of tol;
// sklearn's own float32 fit has that sensitivity too. nvcc's --use_fast_math makes expf __expf (a few
// ulp for the exponents that matter; ex2.approx in the PTX) and 1/x an approximate reciprocal
// (rcp.approx); the bound takes log1pf of the other components' sum, which fast math leaves a
// software function (no lg2.approx in the PTX). The emulation runs the host's expf, so the GPU's
// differences are a few ulp larger than the emulation's.
#pragma once
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gmm/gmm_common.h"

// Thread block clusters exist from sm_90; the sm_80 build never launches a cluster (gmm_cuda.cu
// asks the device) and traps if it did.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define LNL_GMM_CLUSTERS 1
#else
#define LNL_GMM_CLUSTERS 0
#endif

namespace lnl {
namespace gmm_cuda {

using gmm::kMaxK;
using gmm::kNumStats;
using gmm::kPerComp;
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTeamSum = 32;  // doubles one team sum exchanges between a cluster's blocks
constexpr int kAnyK = 0;         // KT of the generic kernels: the runtime K <= kMaxK

// Component slots of a thread's arrays: KT, or kMaxK for the generic kernels.
constexpr int slots(int KT) { return KT > 0 ? KT : kMaxK; }
// EM statistics (gmm_common.h's layout, kPerComp per component) + the log-likelihood.
constexpr int em_stats(int KT) { return slots(KT) * kPerComp + 1; }
// Lloyd's per-cluster counts and coordinate sums + the number of changed labels.
constexpr int lloyd_stats(int KT, int D) { return slots(KT) * (D + 1) + 1; }
// sklearn's k-means++ local trials, 2 + int(log(K)) (gmm_cpu.cpp), for K <= 7 < e^2.
constexpr int kmeanspp_trials(int K) { return K >= 3 ? 3 : 2; }
static_assert(kMaxK <= 7, "kmeanspp_trials");
constexpr int trial_slots(int KT) { return kmeanspp_trials(slots(KT)); }

template <typename scalar_t>
struct EmArgs {
  const scalar_t* x;
  const int64_t* lengths;
  const int64_t* labels;  // mode 0
  const scalar_t* resp0;  // mode 1
  const scalar_t* w0;     // mode 2
  const scalar_t* mu0;
  const scalar_t* cov0;
  scalar_t* w;
  scalar_t* mu;
  scalar_t* cov;
  scalar_t* resp;
  scalar_t* lower_bound;
  int64_t* n_iter;
  bool* converged;
  int64_t* status;
  int64_t N;
  int K, mode;
  int64_t max_iter;
  double tol, reg, eps10;
};

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sums v[NV] over the block (every thread gets the totals). smem: kWarps * NV doubles.
template <int NV>
__device__ void block_sum(double (&v)[NV], double* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const double s = warp_sum(v[j]);
    if (lane == 0) smem[warp * NV + j] = s;
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const double s = warp_sum(lane < kWarps ? smem[lane * NV + j] : 0.0);
      if (lane == 0) smem[j] = s;
    }
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < NV; ++j) v[j] = smem[j];
  __syncthreads();
}

// The threads that run one problem, a team of blocks that sum their statistics together:
//  * kBlock: one block (small problems: per-class fits);
//  * kCluster: a thread block cluster of kClusterBlocks blocks (sm_90; cluster dims (8, 1, 1)), summing
//    over distributed shared memory with cluster.sync() (few problems of 16k-64k points);
//  * kGrid: `blocks` blocks of a cooperative launch, summing through global memory with grid.sync()
//    (one larger problem: the whole fit in one launch however many iterations it takes; one only,
//    because grid.sync() waits for every block and problems stop at different iterations).
// Grid x = problems x blocks per problem, so a block's rank is blockIdx.x % blocks. Every block of a
// team gets the same sums added in the same order, so each takes the same M-steps and stops at the
// same iteration with no broadcast.
enum TeamKind { kBlock, kCluster, kGrid };
constexpr int kClusterBlocks = 8;

template <int Kind>
struct Team {
  int blocks, rank;
  int parity = 0;         // the exchange slot the next sum uses: two slots need one barrier per sum
  double* global_xch;     // kGrid: [G][2][blocks][kMaxTeamSum]
  __device__ Team(int grid_blocks, double* gx)
      : blocks(Kind == kBlock ? 1 : Kind == kCluster ? kClusterBlocks : grid_blocks),
        rank(static_cast<int>(blockIdx.x % blocks)),
        global_xch(gx) {}
  __device__ int64_t problem() const { return blockIdx.x / blocks; }
  __device__ int64_t thread() const { return int64_t(rank) * kThreads + threadIdx.x; }
  __device__ int64_t size() const { return int64_t(blocks) * kThreads; }
};

// The team's barrier: every thread of every block (memory written before it is visible after it).
// Teams of several blocks only: a one-block team sums with block_sum's barriers alone.
template <int Kind>
__device__ void team_barrier() {
  static_assert(Kind != kBlock, "one block: block_sum's barriers");
  if constexpr (Kind == kCluster) {
#if LNL_GMM_CLUSTERS
    cooperative_groups::this_cluster().sync();
#else
    __trap();  // never launched: gmm_cuda.cu asks for PTX >= 9.0
#endif
  } else {
    cooperative_groups::this_grid().sync();
  }
}

// This block's exchange slot for the team's current sum, and block r's (xch: __shared__
// [2][kMaxTeamSum], the cluster's; the grid's slots are in global memory).
template <int Kind>
__device__ double* my_slot(const Team<Kind>& team, double (*xch)[kMaxTeamSum]) {
  if constexpr (Kind == kGrid)
    return team.global_xch + ((team.problem() * 2 + team.parity) * team.blocks + team.rank) * kMaxTeamSum;
  return xch[team.parity];
}

template <int Kind>
__device__ double peer_value(const Team<Kind>& team, double (*xch)[kMaxTeamSum], int r, int j) {
  if constexpr (Kind == kGrid) {
    const double* slot = team.global_xch + ((team.problem() * 2 + team.parity) * team.blocks + r) * kMaxTeamSum;
    return __ldcg(slot + j);  // from L2: another SM wrote it
  } else {
#if LNL_GMM_CLUSTERS
    return cooperative_groups::this_cluster().map_shared_rank(xch[team.parity], r)[j];
#else
    return 0.0;
#endif
  }
}

// Sums v over the team (every thread gets the totals): the block's sum, then the blocks' totals in
// rank order. A block writes slot p at sums s and s + 2; every reader of sum s is done before it
// reaches the barrier of sum s + 1, which the writer passes first.
template <int Kind, int NV>
__device__ void team_sum(Team<Kind>& team, double (&v)[NV], double* smem, double (*xch)[kMaxTeamSum]) {
  static_assert(NV <= kMaxTeamSum, "team sums exchange at most kMaxTeamSum doubles");
  block_sum(v, smem);
  if constexpr (Kind != kBlock) {
    double* slot = my_slot(team, xch);
    if (threadIdx.x == 0)
      for (int j = 0; j < NV; ++j) slot[j] = v[j];
    team_barrier<Kind>();
    if constexpr (Kind == kGrid) {
      // up to every SM's block: warp w sums values j = w, w + kWarps, ..., lane l blocks l, l + 32, ...
      // then a fixed shuffle tree (the same order in every block), a few loads in flight per lane
      const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
      for (int j = warp; j < NV; j += kWarps) {
        double part = 0;
        for (int r = lane; r < team.blocks; r += 32) part += peer_value(team, xch, r, j);
        part = warp_sum(part);
        if (lane == 0) smem[j] = part;
      }
    } else if (threadIdx.x < NV) {  // 8 blocks at most: one thread per value, in rank order
      double total = 0;
      for (int r = 0; r < team.blocks; ++r) total += peer_value(team, xch, r, threadIdx.x);
      smem[threadIdx.x] = total;
    }
    team.parity ^= 1;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < NV; ++j) v[j] = smem[j];
    __syncthreads();
  }
}

// Where this block's value starts in the team's running sum of the blocks' values (rank order),
// and the total: exact sums in the same order for every block, so that block r's end is block
// r + 1's start to the bit. value: thread 0's.
template <int Kind>
__device__ void team_prefix(Team<Kind>& team, double value, double* smem, double (*xch)[kMaxTeamSum],
                            double& offset, double& total) {
  offset = 0, total = value;
  if constexpr (Kind != kBlock) {
    if (threadIdx.x == 0) my_slot(team, xch)[0] = value;
    team_barrier<Kind>();
    if (threadIdx.x == 0) {
      double run = 0, mine = 0;
      for (int r = 0; r < team.blocks; ++r) {
        if (r == team.rank) mine = run;
        run += peer_value(team, xch, r, 0);
      }
      smem[0] = mine, smem[1] = run;
    }
    team.parity ^= 1;
    __syncthreads();
    offset = smem[0], total = smem[1];
    __syncthreads();
  }
}

// A cluster's block must not exit while the others may still read its exchange slots.
template <int Kind>
__device__ void team_end(const Team<Kind>&) {
  if constexpr (Kind == kCluster) team_barrier<Kind>();
}

template <typename T, typename scalar_t, int D>
__device__ __forceinline__ void load(const scalar_t* x, int64_t i, T& x0, T& x1) {
  x0 = static_cast<T>(x[i * D]);
  x1 = D == 2 ? static_cast<T>(x[i * D + 1]) : T(0);
}

// One problem's components as the E-step reads them, in the E-step's precision T (the input's).
template <typename T>
struct Components {
  T mean[kMaxK][2];
  T u[kMaxK][3];  // the upper precision Cholesky factor (gmm::Model::u)
  T c[kMaxK];     // log w + log det U - D/2 log(2 pi): log pi_k N(x | k) = c - |U^T (x - mean)|^2 / 2
};

// The E-step's copy of model's first K components (computed in float64, then rounded to T).
template <typename T>
__device__ void set_components(const gmm::Model& m, int K, int D, Components<T>& comps) {
  for (int k = 0; k < K; ++k) {
    for (int d = 0; d < 2; ++d) comps.mean[k][d] = d < D ? static_cast<T>(m.mean[k][d]) : T(0);
    for (int j = 0; j < 3; ++j) comps.u[k][j] = static_cast<T>(m.u[k][j]);
    comps.c[k] = static_cast<T>(m.logw[k] + m.logdet[k] - 0.5 * D * gmm::kLog2Pi);
  }
}

__device__ __forceinline__ float exp_t(float v) { return expf(v); }
__device__ __forceinline__ double exp_t(double v) { return exp(v); }
__device__ __forceinline__ float log1p_t(float v) { return log1pf(v); }
__device__ __forceinline__ double log1p_t(double v) { return log1p(v); }

// E-step for one point in precision T (gmm::e_point's math): fills r[k < K] with the responsibilities
// and returns the point's log-likelihood best + log(sum_k exp(lp_k - best)), best = max_k lp_k (the
// first on ties), whose term is exp(0) = 1 exactly: K - 1 exponentials, and log1p of the others' sum.
template <typename T, int D, int KS>
__device__ __forceinline__ T e_point(const Components<T>& m, int K, T x0, T x1, T (&r)[KS]) {
  T lp[KS], best = 0;
  int arg = 0;
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    if (k < K) {
      const T y0 = (x0 - m.mean[k][0]) * m.u[k][0];
      T q = y0 * y0;
      if (D == 2) {
        const T y1 = (x0 - m.mean[k][0]) * m.u[k][1] + (x1 - m.mean[k][1]) * m.u[k][2];
        q += y1 * y1;
      }
      lp[k] = m.c[k] - T(0.5) * q;
      if (k == 0 || lp[k] > best) best = lp[k], arg = k;
    }
  }
  T others = 0;
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    if (k < K) {
      r[k] = k == arg ? T(1) : exp_t(lp[k] - best);
      if (k != arg) others += r[k];
    }
  }
  const T inv = T(1) / (T(1) + others);
#pragma unroll
  for (int k = 0; k < KS; ++k) r[k] = k < K ? r[k] * inv : T(0);
  return best + log1p_t(others);
}

// Adds points [lo, hi) (stride step from lo) to s: initial responsibilities when init, else the
// E-step under m plus the log-likelihood (in scalar_t, summed in float64: z = x - shift is exact).
template <typename scalar_t, int D, int KS, int NS>
__device__ void stats_range(const EmArgs<scalar_t>& a, int64_t g, const Components<scalar_t>& m, int K, bool init,
                            int64_t lo, int64_t hi, int64_t step, const double* shift, double (&s)[NS]) {
  const scalar_t* x = a.x + g * a.N * D;
  for (int64_t i = lo; i < hi; i += step) {
    scalar_t x0, x1, rt[KS];
    load<scalar_t, scalar_t, D>(x, i, x0, x1);
    if (init) {
#pragma unroll
      for (int k = 0; k < KS; ++k)
        rt[k] = k >= K         ? scalar_t(0)
                : a.mode == 0 ? scalar_t(a.labels[g * a.N + i] == k)
                              : a.resp0[(g * a.N + i) * K + k];
    } else {
      s[NS - 1] += static_cast<double>(e_point<scalar_t, D>(m, K, x0, x1, rt));
    }
    const double z0 = double(x0) - shift[0], z1 = double(x1) - shift[1];
#pragma unroll
    for (int k = 0; k < KS; ++k) {  // gmm::accumulate one component at a time: constant offsets into s
      const double rk = rt[k];
      if (k < K) gmm::accumulate<D>(s + k * kPerComp, 1, &rk, z0, z1);
    }
  }
}

// Writes resp rows [lo, hi) (stride step): the final E-step, or zeros on padding / failure.
template <typename scalar_t, int D, int KS>
__device__ void resp_range(const EmArgs<scalar_t>& a, int64_t g, const Components<scalar_t>& m, int K, bool ok,
                           int64_t n, int64_t lo, int64_t hi, int64_t step) {
  const scalar_t* x = a.x + g * a.N * D;
  scalar_t* out = a.resp + g * a.N * K;
  for (int64_t i = lo; i < hi; i += step) {
    scalar_t x0, x1, r[KS];
    if (ok && i < n) {
      load<scalar_t, scalar_t, D>(x, i, x0, x1);
      e_point<scalar_t, D>(m, K, x0, x1, r);
    } else {
#pragma unroll
      for (int k = 0; k < KS; ++k) r[k] = 0;
    }
#pragma unroll
    for (int k = 0; k < KS; ++k)
      if (k < K) out[i * K + k] = r[k];
  }
}

// NaN/inf values among points [lo, hi) (stride step): the Python layer leaves this check to the
// kernels, so that a fit reads nothing back before its result.
template <typename scalar_t, int D>
__device__ double count_not_finite(const EmArgs<scalar_t>& a, int64_t g, int64_t lo, int64_t hi, int64_t step) {
  const scalar_t* x = a.x + g * a.N * D;
  double bad = 0;
  for (int64_t i = lo; i < hi; i += step)
    for (int d = 0; d < D; ++d) bad += isfinite(static_cast<double>(x[i * D + d])) ? 0.0 : 1.0;
  return bad;
}

template <typename scalar_t, int D>
__device__ bool load_given(const EmArgs<scalar_t>& a, int64_t g, int K, gmm::Model& m) {
  for (int k = 0; k < K; ++k) {
    m.w[k] = a.w0[g * K + k];
    for (int d = 0; d < D; ++d) m.mean[k][d] = a.mu0[(g * K + k) * D + d];
    const scalar_t* c = a.cov0 + (g * K + k) * D * D;
    m.cov[k][0] = c[0];
    if (D == 2) m.cov[k][1] = c[2], m.cov[k][2] = c[3];  // lower triangle, as LAPACK
  }
  return gmm::finish_model(m, K, D);
}

// Thread 0: the M-step from the team's sums and shift in shared memory (m_step indexes the sums by the
// runtime K, which would put a register array in local memory), and the E-step's copy of the new
// model.
template <typename T>
__device__ bool update_model(const double* totals, const double* shift, int K, int D, double n, double reg,
                             double eps10, bool initial, gmm::Model& m, Components<T>& comps) {
  const bool ok = gmm::m_step(totals, shift, K, D, n, reg, eps10, initial, m);
  set_components(m, K, D, comps);
  return ok;
}

// Copies the team's sums s and the shift to shared memory for update_model: totals[NS + 2].
template <int NS>
__device__ __forceinline__ void to_shared(const double (&s)[NS], const double (&shift)[2], double* totals) {
#pragma unroll
  for (int j = 0; j < NS; ++j) totals[j] = s[j];
  totals[NS] = shift[0], totals[NS + 1] = shift[1];
}

// status: gmm::kOk, kNotPositiveDefinite, or kNotFinite (x has NaN/inf: parameters 0, bound NaN).
template <typename scalar_t, int D>
__device__ void store_outputs(const EmArgs<scalar_t>& a, int64_t g, int K, const gmm::Model& m, double lb,
                              int64_t it, bool conv, int status) {
  const bool fitted = status != gmm::kNotFinite;
  for (int k = 0; k < K; ++k) {
    a.w[g * K + k] = fitted ? m.w[k] : 0.0;
    for (int d = 0; d < D; ++d) a.mu[(g * K + k) * D + d] = fitted ? m.mean[k][d] : 0.0;
    scalar_t* c = a.cov + (g * K + k) * D * D;
    c[0] = fitted ? m.cov[k][0] : 0.0;
    if (D == 2) c[1] = c[2] = fitted ? m.cov[k][1] : 0.0, c[3] = fitted ? m.cov[k][2] : 0.0;
  }
  a.lower_bound[g] = fitted ? lb : NAN;
  a.n_iter[g] = fitted ? it : 0;
  a.converged[g] = fitted && conv;
  a.status[g] = status;
}

// Small problems: one team runs one problem's whole EM (init M-step, iterations, final E-step).
template <typename scalar_t, int D, int KT, int Kind>
__global__ void __launch_bounds__(kThreads, 1) em_team_kernel(EmArgs<scalar_t> a, int grid_blocks, double* global_xch) {
  constexpr int KS = slots(KT), NS = em_stats(KT);
  __shared__ gmm::Model model;
  __shared__ Components<scalar_t> comps;
  __shared__ double smem[kWarps * NS];
  __shared__ double totals[NS + 2];
  __shared__ double xch[2][kMaxTeamSum];
  __shared__ int s_stop, s_ok;
  const int K = KT > 0 ? KT : a.K;
  Team<Kind> team(grid_blocks, global_xch);
  const int64_t g = team.problem(), n = a.lengths[g], first = team.thread(), step = team.size();
  double bad[1] = {count_not_finite<scalar_t, D>(a, g, first, n, step)};
  team_sum(team, bad, smem, xch);
  if (bad[0] > 0) {  // uniform over the team: every block got the same sum
    resp_range<scalar_t, D, KS>(a, g, comps, K, false, n, first, a.N, step);
    if (first == 0) store_outputs<scalar_t, D>(a, g, K, model, 0.0, 0, false, gmm::kNotFinite);
    team_end(team);
    return;
  }
  const double shift[2] = {double(a.x[g * a.N * D]), D == 2 ? double(a.x[g * a.N * D + 1]) : 0.0};
  double s[NS];
  if (a.mode == 2) {
    if (threadIdx.x == 0) {
      s_ok = load_given<scalar_t, D>(a, g, K, model);
      set_components(model, K, D, comps);
    }
  } else {
#pragma unroll
    for (int j = 0; j < NS; ++j) s[j] = 0;
    stats_range<scalar_t, D, KS>(a, g, comps, K, true, first, n, step, shift, s);
    team_sum(team, s, smem, xch);
    if (threadIdx.x == 0) {
      to_shared(s, shift, totals);
      s_ok = update_model(totals, totals + NS, K, D, double(n), a.reg, a.eps10, true, model, comps);
    }
  }
  __syncthreads();
  double lb = -INFINITY;
  int64_t it = 0;
  bool conv = false;
  for (int64_t i = 1; s_ok && i <= a.max_iter; ++i) {
#pragma unroll
    for (int j = 0; j < NS; ++j) s[j] = 0;
    stats_range<scalar_t, D, KS>(a, g, comps, K, false, first, n, step, shift, s);
    team_sum(team, s, smem, xch);  // ends with a barrier: every thread is done reading comps
    const double next = s[NS - 1] / double(n);
    it = i;
    conv = fabs(next - lb) < a.tol;
    lb = next;
    if (threadIdx.x == 0) {
      to_shared(s, shift, totals);
      s_ok = update_model(totals, totals + NS, K, D, double(n), a.reg, a.eps10, false, model, comps);
      s_stop = conv || !s_ok;
    }
    __syncthreads();
    if (s_stop) break;
  }
  resp_range<scalar_t, D, KS>(a, g, comps, K, s_ok, n, first, a.N, step);
  if (first == 0)
    store_outputs<scalar_t, D>(a, g, K, model, lb, it, conv, s_ok ? gmm::kOk : gmm::kNotPositiveDefinite);
  team_end(team);
}

}  // namespace gmm_cuda
}  // namespace lnl

namespace lnl {
namespace gmm_cuda {

template <typename scalar_t, int D>
__device__ __forceinline__ double sqdist(const scalar_t* x, int64_t i, const double* c) {
  double x0, x1;
  load<double, scalar_t, D>(x, i, x0, x1);
  return (x0 - c[0]) * (x0 - c[0]) + (D == 2 ? (x1 - c[1]) * (x1 - c[1]) : 0.0);
}

// Squared distance to the nearest of the first nc centres (k-means++ recomputes instead of storing).
template <typename scalar_t, int D>
__device__ __forceinline__ double closest(const scalar_t* x, int64_t i, const double (*c)[2], int nc) {
  double best = sqdist<scalar_t, D>(x, i, c[0]);
  for (int k = 1; k < nc; ++k) best = fmin(best, sqdist<scalar_t, D>(x, i, c[k]));
  return best;
}

// sklearn's greedy k-means++ with the host's uniforms; team thread t owns the contiguous points
// [lo, hi) so that the cumulative-sum search is a prefix sum over threads (and blocks) plus one
// thread's scan. A thread's interval of the cumulative sum ends where the next thread's begins (the
// same floating-point numbers), so exactly one thread claims each positive target.
template <typename scalar_t, int D, int KT, int Kind>
__device__ void kmeanspp(Team<Kind>& team, const scalar_t* x, int64_t n, int K, const double* u, double (*c)[2],
                         double* tsum, double* smem, double (*xch)[kMaxTeamSum]) {
  constexpr int TS = trial_slots(KT);  // per-trial arrays: registers, guarded by t < trials
  const int tid = threadIdx.x, trials = kmeanspp_trials(K);
  if (tid == 0) load<double, scalar_t, D>(x, min(static_cast<int64_t>(floor(u[0] * n)), n - 1), c[0][0], c[0][1]);
  __syncthreads();
  const int64_t per = (n + team.size() - 1) / team.size();
  const int64_t lo = min(n, team.thread() * per), hi = min(n, lo + per);
  for (int cc = 1; cc < K; ++cc) {
    double mine = 0;
    for (int64_t i = lo; i < hi; ++i) mine += closest<scalar_t, D>(x, i, c, cc);
    tsum[tid] = mine;
    __syncthreads();
    if (tid == 0) {  // exclusive prefix of the thread sums; tsum[kThreads] = the block's total
      double run = 0;
      for (int t = 0; t < kThreads; ++t) {
        const double v = tsum[t];
        tsum[t] = run;
        run += v;
      }
      tsum[kThreads] = run;
    }
    __syncthreads();
    double offset, potential;  // this block's start in the team's sum, the total
    team_prefix(team, tsum[kThreads], smem, xch, offset, potential);
    double found[TS] = {};  // the claiming thread's index + 1 (exact in a double)
    const double start = offset + tsum[tid], end = offset + tsum[tid + 1];
#pragma unroll
    for (int t = 0; t < TS; ++t) {
      const double target = t < trials ? u[1 + (cc - 1) * trials + t] * potential : 0.0;
      if (target > 0 && start < target && target <= end) {
        double cum = start;
        int64_t at = hi - 1;  // rounding may leave cum just short of target at the range end
        for (int64_t i = lo; i < hi; ++i) {
          cum += closest<scalar_t, D>(x, i, c, cc);
          if (cum >= target) {
            at = i;
            break;
          }
        }
        found[t] = static_cast<double>(at + 1);
      }
    }
    team_sum(team, found, smem, xch);
    double pots[TS] = {}, cx[TS][2];
#pragma unroll
    for (int t = 0; t < TS; ++t) {
      const double target = t < trials ? u[1 + (cc - 1) * trials + t] * potential : 0.0;
      // no claimant: target 0 (np.searchsorted gives 0) or past the end (np.clip to n - 1)
      const int64_t cand = found[t] > 0 ? static_cast<int64_t>(found[t]) - 1 : (target <= 0 ? 0 : n - 1);
      load<double, scalar_t, D>(x, cand, cx[t][0], cx[t][1]);
    }
    for (int64_t i = team.thread(); i < n; i += team.size()) {
      const double d = closest<scalar_t, D>(x, i, c, cc);
#pragma unroll
      for (int t = 0; t < TS; ++t)
        if (t < trials) pots[t] += fmin(d, sqdist<scalar_t, D>(x, i, cx[t]));
    }
    team_sum(team, pots, smem, xch);
    if (tid == 0) {
      int best = 0;
      double least = pots[0];  // not pots[best]: a runtime index would put pots in local memory
#pragma unroll
      for (int t = 1; t < TS; ++t)
        if (t < trials && pots[t] < least) best = t, least = pots[t];
#pragma unroll
      for (int t = 0; t < TS; ++t)
        if (t == best) c[cc][0] = cx[t][0], c[cc][1] = cx[t][1];
    }
    __syncthreads();
  }
}

// One Lloyd pass over the problem: labels by nearest centre (first on ties), then per-cluster
// counts and sums and the number of changed labels, summed over the team.
template <typename scalar_t, int D, int KT, int Kind, int NV>
__device__ void lloyd(Team<Kind>& team, const scalar_t* x, int64_t n, int K, const double (*c)[2], int64_t* labels,
                      bool first, double (&v)[NV], double* smem, double (*xch)[kMaxTeamSum]) {
  constexpr int KS = slots(KT);
#pragma unroll
  for (int j = 0; j < NV; ++j) v[j] = 0;
  for (int64_t i = team.thread(); i < n; i += team.size()) {
    int best = 0;
    double bd = sqdist<scalar_t, D>(x, i, c[0]);
#pragma unroll
    for (int k = 1; k < KS; ++k) {
      if (k < K) {
        const double dk = sqdist<scalar_t, D>(x, i, c[k]);
        if (dk < bd) bd = dk, best = k;
      }
    }
    if (first || labels[i] != best) v[NV - 1] += 1;
    labels[i] = best;
    double x0, x1;
    load<double, scalar_t, D>(x, i, x0, x1);
#pragma unroll
    for (int k = 0; k < KS; ++k) {  // v[best * (D + 1)] by a runtime index would live in local memory
      if (k == best) {
        v[k * (D + 1)] += 1;
        v[k * (D + 1) + 1] += x0;
        if (D == 2) v[k * (D + 1) + 2] += x1;
      }
    }
  }
  team_sum(team, v, smem, xch);
}

// sklearn's KMeans(K, n_init=1) for one problem per team: k-means++, then Lloyd until labels stop
// changing or the total squared centre shift is <= 1e-4 * mean feature variance (300 at most).
template <typename scalar_t, int D, int KT, int Kind>
__global__ void __launch_bounds__(kThreads, 1) kmeans_team_kernel(const scalar_t* X, const int64_t* lengths,
                                                               const double* uniforms, int64_t ustride,
                                                               int64_t* labels_all, int64_t N, int k_arg,
                                                               int grid_blocks, double* global_xch) {
  constexpr int KS = slots(KT), NV = lloyd_stats(KT, D);
  static_assert(trial_slots(KT) <= NV, "smem holds k-means++'s sums too");
  __shared__ double c[kMaxK][2];
  __shared__ double tsum[kThreads + 1];
  __shared__ double smem[kWarps * NV];
  __shared__ double xch[2][kMaxTeamSum];
  __shared__ int s_stop;
  const int K = KT > 0 ? KT : k_arg;
  Team<Kind> team(grid_blocks, global_xch);
  const int64_t g = team.problem(), n = lengths[g];
  const scalar_t* x = X + g * N * D;
  int64_t* labels = labels_all + g * N;
  kmeanspp<scalar_t, D, KT, Kind>(team, x, n, K, uniforms + g * ustride, c, tsum, smem, xch);
  double m[2] = {0, 0};
  for (int64_t i = team.thread(); i < n; i += team.size()) {
    double x0, x1;
    load<double, scalar_t, D>(x, i, x0, x1);
    m[0] += x0, m[1] += x1;
  }
  team_sum(team, m, smem, xch);
  const double mean0 = m[0] / double(n), mean1 = m[1] / double(n);
  double var[1] = {0};
  for (int64_t i = team.thread(); i < n; i += team.size()) {
    double x0, x1;
    load<double, scalar_t, D>(x, i, x0, x1);
    var[0] += (x0 - mean0) * (x0 - mean0) + (D == 2 ? (x1 - mean1) * (x1 - mean1) : 0.0);
  }
  team_sum(team, var, smem, xch);
  const double tol = var[0] / double(n) / D * 1e-4;
  double v[NV];
  for (int it = 0; it < 300; ++it) {
    lloyd<scalar_t, D, KT, Kind>(team, x, n, K, c, labels, it == 0, v, smem, xch);
    if (threadIdx.x == 0) {
      double shift = 0;
#pragma unroll
      for (int k = 0; k < KS; ++k) {
        if (k < K) {
          const double cnt = v[k * (D + 1)];
          for (int d = 0; d < D; ++d) {
            const double moved = cnt > 0 ? v[k * (D + 1) + 1 + d] / cnt : c[k][d];
            shift += (moved - c[k][d]) * (moved - c[k][d]);
            c[k][d] = moved;
          }
        }
      }
      s_stop = v[NV - 1] == 0 ? 2 : (shift <= tol ? 1 : 0);
    }
    __syncthreads();
    if (s_stop) break;
  }
  if (s_stop != 2) lloyd<scalar_t, D, KT, Kind>(team, x, n, K, c, labels, false, v, smem, xch);  // final relabel
  for (int64_t i = n + team.thread(); i < N; i += team.size()) labels[i] = 0;
  team_end(team);
}

}  // namespace gmm_cuda
}  // namespace lnl
