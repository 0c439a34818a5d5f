// Host-device math shared by the CPU and CUDA GMM kernels (lnl/ops/gmm_reference.py).
// Everything here is float64: one problem's model, its E-step for one point, and the M-step from
// the sufficient statistics of one fused pass, mirroring sklearn's GaussianMixture(full).
#pragma once
#include <cmath>

#ifdef __CUDACC__
#define LNL_GMM_HD __host__ __device__ __forceinline__
#else
#define LNL_GMM_HD inline
#endif

namespace lnl {
namespace gmm {

constexpr int kMaxK = 4;
constexpr int kMaxD = 2;
// Per component: sum r, sum r z_0, sum r z_1, sum r z_0 z_0, sum r z_0 z_1, sum r z_1 z_1, with
// z = x - shift (the problem's first point) so that second moments do not cancel at large N.
constexpr int kPerComp = 6;
constexpr int kNumStats = kMaxK * kPerComp + 1;  // + sum of logsumexp (the log-likelihood)
constexpr double kLog2Pi = 1.8378770664093454836;

enum Status : int { kOk = 0, kNotPositiveDefinite = 1, kNotFinite = 2 };

struct Model {
  double w[kMaxK];
  double mean[kMaxK][kMaxD];
  double cov[kMaxK][3];  // c00, c01, c11 (c01, c11 unused for D = 1)
  double logw[kMaxK];
  double u[kMaxK][3];  // upper precision Cholesky factor U (U U^T = inv(cov)): u00, u01, u11
  double logdet[kMaxK];  // sum log diag(U) = -log det(cov) / 2
};

// Closed-form 1x1 / 2x2 Cholesky of each covariance and its inverse factor, as sklearn's
// _compute_precision_cholesky. Returns false when a covariance is not positive definite.
LNL_GMM_HD bool finish_model(Model& m, int K, int D) {
  bool ok = true;
  for (int k = 0; k < K; ++k) {
    m.logw[k] = log(m.w[k]);
    const double a = m.cov[k][0];
    if (!(a > 0)) {
      ok = false;
      continue;
    }
    const double l11 = sqrt(a);
    if (D == 1) {
      m.u[k][0] = 1.0 / l11;
      m.u[k][1] = m.u[k][2] = 0;
      m.logdet[k] = -log(l11);
      continue;
    }
    const double l21 = m.cov[k][1] / l11;
    const double schur = m.cov[k][2] - l21 * l21;
    if (!(schur > 0)) {
      ok = false;
      continue;
    }
    const double l22 = sqrt(schur);
    m.u[k][0] = 1.0 / l11;
    m.u[k][1] = -l21 / (l11 * l22);
    m.u[k][2] = 1.0 / l22;
    m.logdet[k] = -log(l11) - log(l22);
  }
  return ok;
}

// E-step for one point: fills r[K] (responsibilities) and returns sum_k exp(lp_k - best) with
// best = max_k lp_k (lp_k = log pi_k N(x | k)), so the point's log-likelihood is best + log(sum).
// The largest term is exp(0) = 1 exactly: K - 1 exponentials per point.
template <int D>
LNL_GMM_HD double e_point(const Model& m, int K, double x0, double x1, double* r, double& best) {
  double lp[kMaxK] = {};
  int arg = 0;
  for (int k = 0; k < K; ++k) {
    const double d0 = x0 - m.mean[k][0];
    double q;
    if (D == 1) {
      const double y0 = d0 * m.u[k][0];
      q = y0 * y0;
    } else {
      const double d1 = x1 - m.mean[k][1];
      const double y0 = d0 * m.u[k][0];
      const double y1 = d0 * m.u[k][1] + d1 * m.u[k][2];
      q = y0 * y0 + y1 * y1;
    }
    lp[k] = m.logw[k] - 0.5 * (D * kLog2Pi + q) + m.logdet[k];
    if (k == 0 || lp[k] > lp[arg]) arg = k;
  }
  best = lp[arg];
  double sum = 0;
  for (int k = 0; k < K; ++k) {
    r[k] = k == arg ? 1.0 : exp(lp[k] - best);
    sum += r[k];
  }
  const double inv = 1.0 / sum;
  for (int k = 0; k < K; ++k) r[k] *= inv;
  return sum;
}

// Adds one point's responsibilities to the statistics (z = x - shift).
template <int D>
LNL_GMM_HD void accumulate(double* s, int K, const double* r, double z0, double z1) {
  for (int k = 0; k < K; ++k) {
    double* c = s + k * kPerComp;
    const double rz0 = r[k] * z0;
    c[0] += r[k];
    c[1] += rz0;
    c[3] += rz0 * z0;
    if (D == 2) {
      const double rz1 = r[k] * z1;
      c[2] += rz1;
      c[4] += rz0 * z1;
      c[5] += rz1 * z1;
    }
  }
}

// sklearn's _estimate_gaussian_parameters from the statistics: N_k = sum r + 10 eps,
// mu = sum r x / N_k, Sigma = sum r (x - mu)(x - mu)^T / N_k + reg I, then weights N_k / n
// (initial, as _initialize) or N_k / sum N_k. The sums are of z = x - shift, so
// sum r x = c1 + shift * sum r: mu - shift = (c1 - shift * 10 eps) / N_k. (Dropping the 10 eps term
// would move an empty component's mean from 0 to the shift.)
LNL_GMM_HD bool m_step(const double* s, const double* shift, int K, int D, double n, double reg,
                       double eps10, bool initial, Model& m) {
  double total = 0;
  for (int k = 0; k < K; ++k) {
    const double* c = s + k * kPerComp;
    const double r = c[0], nk = c[0] + eps10;
    const double mz0 = (c[1] - shift[0] * eps10) / nk;
    const double mz1 = D == 2 ? (c[2] - shift[1] * eps10) / nk : 0.0;
    m.w[k] = nk;
    total += nk;
    m.mean[k][0] = shift[0] + mz0;
    m.cov[k][0] = (c[3] - 2 * mz0 * c[1] + mz0 * mz0 * r) / nk + reg;
    if (D == 2) {
      m.mean[k][1] = shift[1] + mz1;
      m.cov[k][1] = (c[4] - mz0 * c[2] - mz1 * c[1] + mz0 * mz1 * r) / nk;
      m.cov[k][2] = (c[5] - 2 * mz1 * c[2] + mz1 * mz1 * r) / nk + reg;
    }
  }
  const double denom = initial ? n : total;
  for (int k = 0; k < K; ++k) m.w[k] /= denom;
  return finish_model(m, K, D);
}

}  // namespace gmm
}  // namespace lnl
