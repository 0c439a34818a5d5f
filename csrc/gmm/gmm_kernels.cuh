// Device code of the CUDA GMM EM and k-means init (included by gmm_cuda.cu only).
// A team of blocks per problem runs the problem's whole EM loop (or k-means) in one launch, so
// nothing returns to the host until the result: one block (small N: per-class fits), a thread block
// cluster on sm_90 summing over distributed shared memory (a few problems of 16k-64k points, e.g.
// DivideMix's 50k losses, which one SM would take ~8x longer over), or the blocks of a cooperative
// launch summing through global memory (larger problems, up to every SM). Statistics are float64
// and reduced in a fixed order (deterministic for a given launch shape).
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
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kLloydStats = kMaxK * (gmm::kMaxD + 1) + 1;  // counts, sums, #changed labels
constexpr int kMaxTeamSum = 32;  // doubles one team sum exchanges between a cluster's blocks

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

template <typename scalar_t, int D>
__device__ __forceinline__ void load(const scalar_t* x, int64_t i, double& x0, double& x1) {
  x0 = static_cast<double>(x[i * D]);
  x1 = D == 2 ? static_cast<double>(x[i * D + 1]) : 0.0;
}

// Adds points [lo, hi) (stride step from lo) to s: initial responsibilities when init, else the
// E-step under m plus the log-likelihood.
template <typename scalar_t, int D>
__device__ void stats_range(const EmArgs<scalar_t>& a, int64_t g, const gmm::Model& m, bool init,
                            int64_t lo, int64_t hi, int64_t step, const double* shift,
                            double (&s)[kNumStats]) {
  const scalar_t* x = a.x + g * a.N * D;
  double r[kMaxK], x0, x1, best;
  for (int64_t i = lo; i < hi; i += step) {
    load<scalar_t, D>(x, i, x0, x1);
    if (init) {
      for (int k = 0; k < a.K; ++k)
        r[k] = a.mode == 0 ? double(a.labels[g * a.N + i] == k)
                           : static_cast<double>(a.resp0[(g * a.N + i) * a.K + k]);
    } else {
      const double sum = gmm::e_point<D>(m, a.K, x0, x1, r, best);
      s[kNumStats - 1] += best + log(sum);
    }
    gmm::accumulate<D>(s, a.K, r, x0 - shift[0], x1 - shift[1]);
  }
}

// Writes resp rows [lo, hi) (stride step): the final E-step, or zeros on padding / failure.
template <typename scalar_t, int D>
__device__ void resp_range(const EmArgs<scalar_t>& a, int64_t g, const gmm::Model& m, bool ok,
                           int64_t n, int64_t lo, int64_t hi, int64_t step) {
  const scalar_t* x = a.x + g * a.N * D;
  scalar_t* out = a.resp + g * a.N * a.K;
  double r[kMaxK], x0, x1, best;
  for (int64_t i = lo; i < hi; i += step) {
    if (ok && i < n) {
      load<scalar_t, D>(x, i, x0, x1);
      gmm::e_point<D>(m, a.K, x0, x1, r, best);
      for (int k = 0; k < a.K; ++k) out[i * a.K + k] = static_cast<scalar_t>(r[k]);
    } else {
      for (int k = 0; k < a.K; ++k) out[i * a.K + k] = scalar_t(0);
    }
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
__device__ bool load_given(const EmArgs<scalar_t>& a, int64_t g, gmm::Model& m) {
  const int K = a.K;
  for (int k = 0; k < K; ++k) {
    m.w[k] = a.w0[g * K + k];
    for (int d = 0; d < D; ++d) m.mean[k][d] = a.mu0[(g * K + k) * D + d];
    const scalar_t* c = a.cov0 + (g * K + k) * D * D;
    m.cov[k][0] = c[0];
    if (D == 2) m.cov[k][1] = c[2], m.cov[k][2] = c[3];  // lower triangle, as LAPACK
  }
  return gmm::finish_model(m, K, D);
}

// status: gmm::kOk, kNotPositiveDefinite, or kNotFinite (x has NaN/inf: parameters 0, bound NaN).
template <typename scalar_t, int D>
__device__ void store_outputs(const EmArgs<scalar_t>& a, int64_t g, const gmm::Model& m, double lb,
                              int64_t it, bool conv, int status) {
  const int K = a.K;
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
template <typename scalar_t, int D, int Kind>
__global__ void __launch_bounds__(kThreads) em_team_kernel(EmArgs<scalar_t> a, int grid_blocks, double* global_xch) {
  __shared__ gmm::Model model;
  __shared__ double smem[kWarps * kNumStats];
  __shared__ double xch[2][kMaxTeamSum];
  __shared__ int s_stop, s_ok;
  Team<Kind> team(grid_blocks, global_xch);
  const int64_t g = team.problem(), n = a.lengths[g], first = team.thread(), step = team.size();
  double bad[1] = {count_not_finite<scalar_t, D>(a, g, first, n, step)};
  team_sum(team, bad, smem, xch);
  if (bad[0] > 0) {  // uniform over the team: every block got the same sum
    resp_range<scalar_t, D>(a, g, model, false, n, first, a.N, step);
    if (first == 0) store_outputs<scalar_t, D>(a, g, model, 0.0, 0, false, gmm::kNotFinite);
    team_end(team);
    return;
  }
  const double shift[2] = {double(a.x[g * a.N * D]), D == 2 ? double(a.x[g * a.N * D + 1]) : 0.0};
  double s[kNumStats];
  if (a.mode == 2) {
    if (threadIdx.x == 0) s_ok = load_given<scalar_t, D>(a, g, model);
  } else {
    for (int j = 0; j < kNumStats; ++j) s[j] = 0;
    stats_range<scalar_t, D>(a, g, model, true, first, n, step, shift, s);
    team_sum(team, s, smem, xch);
    if (threadIdx.x == 0) s_ok = gmm::m_step(s, shift, a.K, D, double(n), a.reg, a.eps10, true, model);
  }
  __syncthreads();
  double lb = -INFINITY;
  int64_t it = 0;
  bool conv = false;
  for (int64_t i = 1; s_ok && i <= a.max_iter; ++i) {
    for (int j = 0; j < kNumStats; ++j) s[j] = 0;
    stats_range<scalar_t, D>(a, g, model, false, first, n, step, shift, s);
    team_sum(team, s, smem, xch);  // ends with a barrier: every thread is done reading model
    const double next = s[kNumStats - 1] / double(n);
    it = i;
    conv = fabs(next - lb) < a.tol;
    lb = next;
    if (threadIdx.x == 0) {
      s_ok = gmm::m_step(s, shift, a.K, D, double(n), a.reg, a.eps10, false, model);
      s_stop = conv || !s_ok;
    }
    __syncthreads();
    if (s_stop) break;
  }
  resp_range<scalar_t, D>(a, g, model, s_ok, n, first, a.N, step);
  if (first == 0) store_outputs<scalar_t, D>(a, g, model, lb, it, conv, s_ok ? gmm::kOk : gmm::kNotPositiveDefinite);
  team_end(team);
}

}  // namespace gmm_cuda
}  // namespace lnl

namespace lnl {
namespace gmm_cuda {

template <typename scalar_t, int D>
__device__ __forceinline__ double sqdist(const scalar_t* x, int64_t i, const double* c) {
  double x0, x1;
  load<scalar_t, D>(x, i, x0, x1);
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
template <typename scalar_t, int D, int Kind>
__device__ void kmeanspp(Team<Kind>& team, const scalar_t* x, int64_t n, int K, const double* u, double (*c)[2],
                         double* tsum, double* smem, double (*xch)[kMaxTeamSum]) {
  const int tid = threadIdx.x, trials = 2 + static_cast<int>(log(static_cast<double>(K)));
  if (tid == 0) load<scalar_t, D>(x, min(static_cast<int64_t>(floor(u[0] * n)), n - 1), c[0][0], c[0][1]);
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
    double found[4] = {0, 0, 0, 0};  // the claiming thread's index + 1 (exact in a double)
    const double start = offset + tsum[tid], end = offset + tsum[tid + 1];
    for (int t = 0; t < trials; ++t) {
      const double target = u[1 + (cc - 1) * trials + t] * potential;
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
    double pots[4] = {0, 0, 0, 0}, cx[4][2];
    for (int t = 0; t < trials; ++t) {
      const double target = u[1 + (cc - 1) * trials + t] * potential;
      // no claimant: target 0 (np.searchsorted gives 0) or past the end (np.clip to n - 1)
      const int64_t cand = found[t] > 0 ? static_cast<int64_t>(found[t]) - 1 : (target <= 0 ? 0 : n - 1);
      load<scalar_t, D>(x, cand, cx[t][0], cx[t][1]);
    }
    for (int64_t i = team.thread(); i < n; i += team.size()) {
      const double d = closest<scalar_t, D>(x, i, c, cc);
      for (int t = 0; t < trials; ++t) pots[t] += fmin(d, sqdist<scalar_t, D>(x, i, cx[t]));
    }
    team_sum(team, pots, smem, xch);
    if (tid == 0) {
      int best = 0;
      for (int t = 1; t < trials; ++t)
        if (pots[t] < pots[best]) best = t;
      c[cc][0] = cx[best][0], c[cc][1] = cx[best][1];
    }
    __syncthreads();
  }
}

// One Lloyd pass over the problem: labels by nearest centre (first on ties), then per-cluster
// counts and sums and the number of changed labels, summed over the team.
template <typename scalar_t, int D, int Kind>
__device__ void lloyd(Team<Kind>& team, const scalar_t* x, int64_t n, int K, const double (*c)[2], int64_t* labels,
                      bool first, double (&v)[kLloydStats], double* smem, double (*xch)[kMaxTeamSum]) {
  for (int j = 0; j < kLloydStats; ++j) v[j] = 0;
  for (int64_t i = team.thread(); i < n; i += team.size()) {
    int best = 0;
    double bd = sqdist<scalar_t, D>(x, i, c[0]);
    for (int k = 1; k < K; ++k) {
      const double dk = sqdist<scalar_t, D>(x, i, c[k]);
      if (dk < bd) bd = dk, best = k;
    }
    if (first || labels[i] != best) v[kLloydStats - 1] += 1;
    labels[i] = best;
    double x0, x1;
    load<scalar_t, D>(x, i, x0, x1);
    v[best * (D + 1)] += 1;
    v[best * (D + 1) + 1] += x0;
    if (D == 2) v[best * (D + 1) + 2] += x1;
  }
  team_sum(team, v, smem, xch);
}

// sklearn's KMeans(K, n_init=1) for one problem per team: k-means++, then Lloyd until labels stop
// changing or the total squared centre shift is <= 1e-4 * mean feature variance (300 at most).
template <typename scalar_t, int D, int Kind>
__global__ void __launch_bounds__(kThreads) kmeans_team_kernel(const scalar_t* X, const int64_t* lengths,
                                                               const double* uniforms, int64_t ustride,
                                                               int64_t* labels_all, int64_t N, int K,
                                                               int grid_blocks, double* global_xch) {
  __shared__ double c[kMaxK][2];
  __shared__ double tsum[kThreads + 1];
  __shared__ double smem[kWarps * kLloydStats];
  __shared__ double xch[2][kMaxTeamSum];
  __shared__ int s_stop;
  Team<Kind> team(grid_blocks, global_xch);
  const int64_t g = team.problem(), n = lengths[g];
  const scalar_t* x = X + g * N * D;
  int64_t* labels = labels_all + g * N;
  kmeanspp<scalar_t, D, Kind>(team, x, n, K, uniforms + g * ustride, c, tsum, smem, xch);
  double m[4] = {0, 0, 0, 0};
  for (int64_t i = team.thread(); i < n; i += team.size()) {
    double x0, x1;
    load<scalar_t, D>(x, i, x0, x1);
    m[0] += x0, m[1] += x1;
  }
  team_sum(team, m, smem, xch);
  const double mean0 = m[0] / double(n), mean1 = m[1] / double(n);
  double var[4] = {0, 0, 0, 0};
  for (int64_t i = team.thread(); i < n; i += team.size()) {
    double x0, x1;
    load<scalar_t, D>(x, i, x0, x1);
    var[0] += (x0 - mean0) * (x0 - mean0) + (D == 2 ? (x1 - mean1) * (x1 - mean1) : 0.0);
  }
  team_sum(team, var, smem, xch);
  const double tol = var[0] / double(n) / D * 1e-4;
  double v[kLloydStats];
  for (int it = 0; it < 300; ++it) {
    lloyd<scalar_t, D, Kind>(team, x, n, K, c, labels, it == 0, v, smem, xch);
    if (threadIdx.x == 0) {
      double shift = 0;
      for (int k = 0; k < K; ++k) {
        const double cnt = v[k * (D + 1)];
        for (int d = 0; d < D; ++d) {
          const double moved = cnt > 0 ? v[k * (D + 1) + 1 + d] / cnt : c[k][d];
          shift += (moved - c[k][d]) * (moved - c[k][d]);
          c[k][d] = moved;
        }
      }
      s_stop = v[kLloydStats - 1] == 0 ? 2 : (shift <= tol ? 1 : 0);
    }
    __syncthreads();
    if (s_stop) break;
  }
  if (s_stop != 2) lloyd<scalar_t, D, Kind>(team, x, n, K, c, labels, false, v, smem, xch);  // final relabel
  for (int64_t i = n + team.thread(); i < N; i += team.size()) labels[i] = 0;
  team_end(team);
}

}  // namespace gmm_cuda
}  // namespace lnl
