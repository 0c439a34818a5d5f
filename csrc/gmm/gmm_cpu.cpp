// CPU batched GMM EM and its k-means init. Each EM iteration is one fused pass over a problem's
// points (E-step with the current parameters + the next M-step's float64 statistics + the
// log-likelihood). Points are cut into fixed chunks whose partial sums are added in chunk order, so
// results do not depend on the thread count. Threads go over problems when there are at least as
// many problems as threads, else over the chunks of one problem (at::parallel_for nests inline).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gmm/gmm.h"
#include "gmm/gmm_cpu_k2.h"

namespace lnl {
namespace {

using gmm::kMaxK;
using gmm::kNumStats;
constexpr int64_t kChunk = 16384;
// Chunks per thread before a pass goes parallel: a parallel region costs a scheduler wake-up, which
// on a loaded 2-core machine is milliseconds, so only passes over >= 256k points use threads.
constexpr int64_t kParallelChunks = 16;
constexpr int64_t kLogBatch = 256;
constexpr int kKmeansMaxIter = 300;  // sklearn KMeans defaults
constexpr double kKmeansTol = 1e-4;

// Sums f(lo, hi, acc[nacc]) over fixed chunks of [0, n) into out[nacc], chunk partials in order.
template <typename F>
void chunked_sum(int64_t n, int nacc, double* out, const F& f) {
  const int64_t chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  std::vector<double> part(chunks * nacc, 0.0);
  at::parallel_for(0, chunks, kParallelChunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk), part.data() + c * nacc);
  });
  std::fill(out, out + nacc, 0.0);
  for (int64_t c = 0; c < chunks; ++c)
    for (int j = 0; j < nacc; ++j) out[j] += part[c * nacc + j];
}

template <typename scalar_t, int D>
inline void load(const scalar_t* x, int64_t i, double& x0, double& x1) {
  x0 = static_cast<double>(x[i * D]);
  x1 = D == 2 ? static_cast<double>(x[i * D + 1]) : 0.0;
}

// One fused pass: statistics of the next M-step (resp == nullptr) or the final responsibilities.
// K is a compile-time constant here so that the per-component loops of e_point unroll.
template <typename scalar_t, int D, int K>
void em_pass_k(const scalar_t* x, int64_t n, const gmm::Model& m, const double* shift, double* stats,
               scalar_t* resp) {
  chunked_sum(n, kNumStats, stats, [&](int64_t lo, int64_t hi, double* s) {
    // sum_i log(sum_i) as one log per kLogBatch points: each sum_i lies in [1, K <= 4], so the
    // product stays below 4^256 = 2^512 (one log instead of 256; relative error ~1e-14).
    // Local accumulators (not s, which may alias resp for float64) stay in registers.
    double acc[kNumStats] = {}, r[kMaxK], x0, x1, best, prod = 1.0, ll = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
      load<scalar_t, D>(x, i, x0, x1);
      prod *= gmm::e_point<D>(m, K, x0, x1, r, best);
      ll += best;
      if ((i - lo) % kLogBatch == kLogBatch - 1) ll += std::log(prod), prod = 1.0;
      if (resp != nullptr) {
        for (int k = 0; k < K; ++k) resp[i * K + k] = static_cast<scalar_t>(r[k]);
      } else {
        gmm::accumulate<D>(acc, K, r, x0 - shift[0], x1 - shift[1]);
      }
    }
    acc[kNumStats - 1] = ll + std::log(prod);
    std::copy(acc, acc + kNumStats, s);
  });
}

// K = 2 (DivideMix, PLReMix): whole lane groups through the SIMD pass of gmm_cpu_k2.h, the last
// < kLanes points of a chunk through the scalar e_point.
template <typename scalar_t, int D>
void em_pass_k2(const scalar_t* x, int64_t n, const gmm::Model& m, const double* shift, double* stats,
                scalar_t* resp) {
  const gmm_k2::Components comps(m, D);
  chunked_sum(n, kNumStats, stats, [&](int64_t lo, int64_t hi, double* s) {
    const int64_t groups = (hi - lo) / gmm_k2::kLanes;
    double ll = resp != nullptr
                    ? gmm_k2::e_groups_dispatch<scalar_t, D, true>(x, lo, groups, comps, shift, s, resp)
                    : gmm_k2::e_groups_dispatch<scalar_t, D, false>(x, lo, groups, comps, shift, s, resp);
    double r[kMaxK], x0, x1, best;
    for (int64_t i = lo + groups * gmm_k2::kLanes; i < hi; ++i) {
      load<scalar_t, D>(x, i, x0, x1);
      const double sum = gmm::e_point<D>(m, 2, x0, x1, r, best);
      ll += best + std::log(sum);
      if (resp != nullptr) {
        resp[i * 2] = static_cast<scalar_t>(r[0]), resp[i * 2 + 1] = static_cast<scalar_t>(r[1]);
      } else {
        gmm::accumulate<D>(s, 2, r, x0 - shift[0], x1 - shift[1]);
      }
    }
    s[kNumStats - 1] = ll;
  });
}

template <typename scalar_t, int D>
void em_pass(const scalar_t* x, int64_t n, int K, const gmm::Model& m, const double* shift,
             double* stats, scalar_t* resp) {
  switch (K) {
    case 1: return em_pass_k<scalar_t, D, 1>(x, n, m, shift, stats, resp);
    case 2: return em_pass_k2<scalar_t, D>(x, n, m, shift, stats, resp);
    case 3: return em_pass_k<scalar_t, D, 3>(x, n, m, shift, stats, resp);
    default: return em_pass_k<scalar_t, D, 4>(x, n, m, shift, stats, resp);
  }
}

// Statistics of the initial responsibilities: one-hot labels or a given resp [n, K].
template <typename scalar_t, int D>
void init_stats(const scalar_t* x, int64_t n, int K, const int64_t* labels, const scalar_t* resp0,
                const double* shift, double* stats) {
  chunked_sum(n, kNumStats, stats, [&](int64_t lo, int64_t hi, double* s) {
    double r[kMaxK], x0, x1;
    for (int64_t i = lo; i < hi; ++i) {
      load<scalar_t, D>(x, i, x0, x1);
      for (int k = 0; k < K; ++k)
        r[k] = labels ? double(labels[i] == k) : static_cast<double>(resp0[i * K + k]);
      gmm::accumulate<D>(s, K, r, x0 - shift[0], x1 - shift[1]);
    }
  });
}

struct EmArgs {
  int64_t N, K, max_iter;
  double tol, reg, eps10;
  int mode;
};

// The Python layer leaves the NaN/inf check of x to this kernel (ATen reductions would wake the
// thread pool twice per call): a plain loop over the problem's values.
template <typename scalar_t>
bool all_finite(const scalar_t* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

template <typename scalar_t, int D>
void em_problem(int64_t g, int64_t n, const EmArgs& a, const at::Tensor& x, const at::Tensor* init,
                std::vector<at::Tensor>& out) {
  const int K = static_cast<int>(a.K);
  const scalar_t* xg = x.data_ptr<scalar_t>() + g * a.N * D;
  const double shift[2] = {double(xg[0]), D == 2 ? double(xg[1]) : 0.0};
  gmm::Model m{};
  double stats[kNumStats];
  bool ok;
  if (!all_finite(xg, n * D)) {
    std::fill(out[3].data_ptr<scalar_t>() + g * a.N * K, out[3].data_ptr<scalar_t>() + (g + 1) * a.N * K, 0);
    out[5].data_ptr<int64_t>()[g] = 0;
    out[6].data_ptr<bool>()[g] = false;
    out[7].data_ptr<int64_t>()[g] = gmm::kNotFinite;
    return;
  }
  if (a.mode == 2) {  // given parameters: weights, means, covs
    const scalar_t* w = init[0].data_ptr<scalar_t>() + g * K;
    const scalar_t* mu = init[1].data_ptr<scalar_t>() + g * K * D;
    const scalar_t* c = init[2].data_ptr<scalar_t>() + g * K * D * D;
    for (int k = 0; k < K; ++k) {
      m.w[k] = w[k];
      for (int d = 0; d < D; ++d) m.mean[k][d] = mu[k * D + d];
      m.cov[k][0] = c[k * D * D];
      if (D == 2) m.cov[k][1] = c[k * 4 + 2], m.cov[k][2] = c[k * 4 + 3];  // lower triangle, as LAPACK
    }
    ok = gmm::finish_model(m, K, D);
  } else {
    const int64_t* labels = a.mode == 0 ? init[0].data_ptr<int64_t>() + g * a.N : nullptr;
    const scalar_t* resp0 = a.mode == 1 ? init[0].data_ptr<scalar_t>() + g * a.N * K : nullptr;
    init_stats<scalar_t, D>(xg, n, K, labels, resp0, shift, stats);
    ok = gmm::m_step(stats, shift, K, D, double(n), a.reg, a.eps10, true, m);
  }
  double lb = -std::numeric_limits<double>::infinity();
  int64_t it = 0;
  bool converged = false;
  for (int64_t i = 1; ok && i <= a.max_iter; ++i) {
    em_pass<scalar_t, D>(xg, n, K, m, shift, stats, nullptr);
    const double next = stats[kNumStats - 1] / double(n);
    ok = gmm::m_step(stats, shift, K, D, double(n), a.reg, a.eps10, false, m);
    it = i;
    converged = std::fabs(next - lb) < a.tol;
    lb = next;
    if (converged) break;
  }
  scalar_t* resp = out[3].data_ptr<scalar_t>() + g * a.N * K;
  if (ok) em_pass<scalar_t, D>(xg, n, K, m, shift, stats, resp);
  std::fill(resp + (ok ? n : 0) * K, resp + a.N * K, scalar_t(0));  // padding (all rows on failure)
  for (int k = 0; k < K; ++k) {
    out[0].data_ptr<scalar_t>()[g * K + k] = m.w[k];
    for (int d = 0; d < D; ++d) out[1].data_ptr<scalar_t>()[(g * K + k) * D + d] = m.mean[k][d];
    scalar_t* c = out[2].data_ptr<scalar_t>() + (g * K + k) * D * D;
    c[0] = m.cov[k][0];
    if (D == 2) c[1] = c[2] = m.cov[k][1], c[3] = m.cov[k][2];
  }
  out[4].data_ptr<scalar_t>()[g] = lb;
  out[5].data_ptr<int64_t>()[g] = it;
  out[6].data_ptr<bool>()[g] = converged;
  out[7].data_ptr<int64_t>()[g] = ok ? gmm::kOk : gmm::kNotPositiveDefinite;
}

// Calls f(g) for every problem: over problems in parallel when there are enough of them.
template <typename F>
void for_problems(int64_t G, const F& f) {
  if (G >= at::get_num_threads()) {
    at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) f(g);
    });
  } else {
    for (int64_t g = 0; g < G; ++g) f(g);
  }
}

// ---- k-means (sklearn's _kmeans_plusplus + _kmeans_single_lloyd, float64) ----

template <typename scalar_t, int D>
inline double sqdist(const scalar_t* x, int64_t i, const double* c) {
  double x0, x1;
  load<scalar_t, D>(x, i, x0, x1);
  return (x0 - c[0]) * (x0 - c[0]) + (D == 2 ? (x1 - c[1]) * (x1 - c[1]) : 0.0);
}

template <typename scalar_t, int D>
void kmeanspp(const scalar_t* x, int64_t n, int K, const double* u, double (*c)[2]) {
  auto point = [&](int64_t i, double* dst) { load<scalar_t, D>(x, i, dst[0], dst[1]); };
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(K)));
  point(std::min<int64_t>(static_cast<int64_t>(std::floor(u[0] * n)), n - 1), c[0]);
  std::vector<double> closest(n), trial(n), best_d(n);
  double pot = 0;
  for (int64_t i = 0; i < n; ++i) pot += closest[i] = sqdist<scalar_t, D>(x, i, c[0]);
  for (int cc = 1; cc < K; ++cc) {
    int64_t cand[8];
    double rand[8];
    for (int t = 0; t < trials; ++t) rand[t] = u[1 + (cc - 1) * trials + t] * pot, cand[t] = n;
    double cum = 0;  // np.searchsorted(cumsum, v, side="left"): first i with cumsum[i] >= v
    for (int64_t i = 0; i < n; ++i) {
      cum += closest[i];
      for (int t = 0; t < trials; ++t)
        if (cand[t] == n && cum >= rand[t]) cand[t] = i;
    }
    double best_pot = std::numeric_limits<double>::infinity();
    for (int t = 0; t < trials; ++t) {
      double cx[2] = {0, 0}, p = 0;
      point(std::min(cand[t], n - 1), cx);
      for (int64_t i = 0; i < n; ++i) p += trial[i] = std::min(closest[i], sqdist<scalar_t, D>(x, i, cx));
      if (p < best_pot) best_pot = p, best_d.swap(trial), c[cc][0] = cx[0], c[cc][1] = cx[1];
    }
    pot = best_pot;
    closest.swap(best_d);
  }
}

// Lloyd step: labels by nearest centre (first on ties); returns sums[K*D], counts[K], #changed.
template <typename scalar_t, int D>
void lloyd_pass(const scalar_t* x, int64_t n, int K, const double (*c)[2], int64_t* labels,
                bool update, double* acc) {
  chunked_sum(n, K * (D + 1) + 1, acc, [&](int64_t lo, int64_t hi, double* s) {
    if (K == 2) {  // whole lane groups through the SIMD pass, the rest below
      const int64_t groups = (hi - lo) / gmm_k2::kLanes;
      if (update) gmm_k2::lloyd_groups_dispatch<scalar_t, D, true>(x, lo, groups, c, labels, s);
      else gmm_k2::lloyd_groups_dispatch<scalar_t, D, false>(x, lo, groups, c, labels, s);
      lo += groups * gmm_k2::kLanes;
    }
    for (int64_t i = lo; i < hi; ++i) {
      int best = 0;
      double bd = sqdist<scalar_t, D>(x, i, c[0]);
      for (int k = 1; k < K; ++k) {
        const double dk = sqdist<scalar_t, D>(x, i, c[k]);
        if (dk < bd) bd = dk, best = k;
      }
      s[K * (D + 1)] += labels[i] != best;
      labels[i] = best;
      if (!update) continue;
      double x0, x1;
      load<scalar_t, D>(x, i, x0, x1);
      s[best * (D + 1)] += 1;
      s[best * (D + 1) + 1] += x0;
      if (D == 2) s[best * (D + 1) + 2] += x1;
    }
  });
}

template <typename scalar_t, int D>
void kmeans_problem(const scalar_t* x, int64_t n, int K, const double* u, int64_t* labels) {
  if (!all_finite(x, n * D)) {  // gmm_em reports it; no Lloyd iterations on NaN
    std::fill(labels, labels + n, int64_t(0));
    return;
  }
  double c[kMaxK][2] = {};
  kmeanspp<scalar_t, D>(x, n, K, u, c);
  double mean[2] = {0, 0}, var = 0;  // tol = 1e-4 * mean over features of np.var
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < D; ++d) mean[d] += double(x[i * D + d]);
  for (int d = 0; d < D; ++d) mean[d] /= double(n);
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < D; ++d) var += (double(x[i * D + d]) - mean[d]) * (double(x[i * D + d]) - mean[d]);
  const double tol = var / double(n) / D * kKmeansTol;
  std::fill(labels, labels + n, int64_t(-1));
  std::vector<double> acc(K * (D + 1) + 1);
  bool strict = false;
  for (int it = 0; it < kKmeansMaxIter; ++it) {
    lloyd_pass<scalar_t, D>(x, n, K, c, labels, true, acc.data());
    double shift = 0;
    for (int k = 0; k < K; ++k) {
      const double cnt = acc[k * (D + 1)];
      for (int d = 0; d < D; ++d) {
        const double moved = cnt > 0 ? acc[k * (D + 1) + 1 + d] / cnt : c[k][d];
        shift += (moved - c[k][d]) * (moved - c[k][d]);
        c[k][d] = moved;
      }
    }
    if (acc[K * (D + 1)] == 0) {
      strict = true;
      break;
    }
    if (shift <= tol) break;
  }
  if (!strict) lloyd_pass<scalar_t, D>(x, n, K, c, labels, false, acc.data());
}

template <typename F>
void dispatch_d(int64_t d, const F& f) {
  if (d == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, 2>{});
}

}  // namespace

at::Tensor gmm_kmeans_cpu(const at::Tensor& x_in, const at::Tensor& lengths, const at::Tensor& uniforms,
                          int64_t n_components) {
  check_kmeans_inputs(x_in, lengths, uniforms, n_components);
  const at::Tensor x = x_in.contiguous(), len = lengths.contiguous(), u = uniforms.contiguous();
  const int64_t G = x.size(0), N = x.size(1);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t n = len.data_ptr<int64_t>()[g];
    TORCH_CHECK(n >= 1 && n <= N, "gmm_kmeans: lengths[", g, "]=", n, " must be in [1, N=", N, "]");
  }
  at::Tensor labels = at::empty({G, N}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gmm_kmeans_cpu", [&] {
    dispatch_d(x.size(2), [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      for_problems(G, [&](int64_t g) {
        const int64_t n = len.data_ptr<int64_t>()[g];
        int64_t* lab = labels.data_ptr<int64_t>() + g * N;
        kmeans_problem<scalar_t, D>(x.data_ptr<scalar_t>() + g * N * D, n, static_cast<int>(n_components),
                                    u.data_ptr<double>() + g * u.size(1), lab);
        std::fill(lab + n, lab + N, int64_t(0));
      });
    });
  });
  return labels;
}

GmmOut gmm_em_cpu(const at::Tensor& x_in, const at::Tensor& lengths,
                  const std::optional<at::Tensor>& init_labels, const std::optional<at::Tensor>& init_resp,
                  const std::optional<at::Tensor>& weights, const std::optional<at::Tensor>& means,
                  const std::optional<at::Tensor>& covs, int64_t n_components, int64_t max_iter, double tol,
                  double reg_covar) {
  const int mode = check_gmm_inputs(x_in, lengths, init_labels, init_resp, weights, means, covs,
                                    n_components, max_iter, tol, reg_covar);
  const at::Tensor x = x_in.contiguous(), len = lengths.contiguous();
  const int64_t G = x.size(0), N = x.size(1), D = x.size(2), K = n_components;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t n = len.data_ptr<int64_t>()[g];
    TORCH_CHECK(n >= 1 && n <= N, "gmm_em: lengths[", g, "]=", n, " must be in [1, N=", N, "]");
  }
  at::Tensor init[3];
  if (mode == 0) {
    init[0] = init_labels->contiguous();
    const int64_t* lab = init[0].data_ptr<int64_t>();  // a plain loop: no ATen parallel region
    for (int64_t i = 0; i < G * N; ++i)
      TORCH_CHECK(lab[i] >= 0 && lab[i] < K, "gmm_em: init_labels must lie in [0, K=", K, "), got ",
                  lab[i], " at flat index ", i);
  } else if (mode == 1) {
    init[0] = init_resp->contiguous();
  } else {
    init[0] = weights->contiguous(), init[1] = means->contiguous(), init[2] = covs->contiguous();
  }
  const auto opt = x.options();
  std::vector<at::Tensor> out = {
      at::empty({G, K}, opt), at::empty({G, K, D}, opt), at::empty({G, K, D, D}, opt),
      at::empty({G, N, K}, opt), at::empty({G}, opt), at::empty({G}, opt.dtype(at::kLong)),
      at::empty({G}, opt.dtype(at::kBool)), at::empty({G}, opt.dtype(at::kLong))};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gmm_em_cpu", [&] {
    const EmArgs a{N, K, max_iter, tol, reg_covar, 10.0 * std::numeric_limits<scalar_t>::epsilon(), mode};
    dispatch_d(D, [&](auto dc) {
      constexpr int DD = decltype(dc)::value;
      for_problems(G, [&](int64_t g) {
        em_problem<scalar_t, DD>(g, len.data_ptr<int64_t>()[g], a, x, init, out);
      });
    });
  });
  return {out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]};
}

TORCH_LIBRARY_IMPL(lnl, CPU, m) {
  m.impl("gmm_kmeans", &gmm_kmeans_cpu);
  m.impl("gmm_em", &gmm_em_cpu);
}

}  // namespace lnl
