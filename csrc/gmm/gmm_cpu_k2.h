// The CPU E-step pass for K = 2, the case DivideMix and PLReMix fit every epoch. With
// delta = lp_1 - lp_0 a point needs one exponential, exp(-|delta|), and no branch: the winning
// component gets 1 / (1 + e), the other e / (1 + e), exactly as gmm::e_point computes them. Points
// go through fixed-width lane arrays that the compiler turns into SIMD, with a polynomial exp
// (std::exp does not vectorise without -ffast-math). On x86 the same body is also compiled for
// AVX-512 and picked at run time when the CPU has it; the float64 statistics are summed per lane in
// a fixed order, so results do not depend on the thread count.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gmm/gmm_common.h"

// Every function here is inlined and takes vectors by reference: no vector crosses a call ABI, so
// -Wpsabi's notes about vector returns do not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lnl {
namespace gmm_k2 {

constexpr int kLanes = 8;
constexpr int kGroupsPerLog = 32;  // 32 groups x 8 lanes = 256 points per log of the product of sums

// GCC/Clang vector extensions: one 8-lane value, lowered to AVX-512, AVX2 or SSE2 registers by the
// target the function is compiled for.
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));

__attribute__((always_inline)) inline v8d splat(double v) { return v8d{} + v; }

// exp(t) for t <= 0, relative error ~2e-16: t = n ln2 + f with |f| <= ln2 / 2, exp(f) by its degree-12
// Taylor polynomial, 2^n written into the exponent bits. Below -708 it returns ~exp(-708) ~ 3e-308,
// which adds nothing to 1 + e.
__attribute__((always_inline)) inline v8d exp_nonpositive(const v8d& t_in) {
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52: t * log2(e) + kRound rounds to an integer
  constexpr int64_t kRoundBits = 0x4338000000000000LL;
  const v8d t = t_in < -708.0 ? splat(-708.0) : t_in;
  const v8d y = t * 1.4426950408889634 + kRound;
  const v8d n = y - kRound;
  const v8d f = (t - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;  // ln2 hi + lo
  v8d p = splat(1.0 / 479001600.0);
  constexpr double kInvFactorial[] = {1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
                                      1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0,
                                      0.5, 1.0, 1.0};
  for (double coef : kInvFactorial) p = p * f + coef;
  const v8l scale_bits = ((v8l)y - kRoundBits + 1023) << 52;  // a vector cast keeps the bits
  return p * (v8d)scale_bits;
}

// Points i0 .. i0 + 7 as float64 lanes; D = 2 splits the interleaved (x0, x1) pairs.
template <typename scalar_t, int D>
__attribute__((always_inline)) inline void load_lanes(const scalar_t* x, int64_t i0, v8d& x0, v8d& x1) {
  typedef scalar_t vec8 __attribute__((vector_size(8 * sizeof(scalar_t))));
  typedef scalar_t vec16 __attribute__((vector_size(16 * sizeof(scalar_t))));
  if constexpr (D == 1) {
    vec8 v;
    std::memcpy(&v, x + i0, sizeof v);
    x0 = __builtin_convertvector(v, v8d);
    x1 = v8d{};
  } else {
    vec16 v;
    std::memcpy(&v, x + 2 * i0, sizeof v);
    x0 = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 2, 4, 6, 8, 10, 12, 14), v8d);
    x1 = __builtin_convertvector(__builtin_shufflevector(v, v, 1, 3, 5, 7, 9, 11, 13, 15), v8d);
  }
}

// lp_k(x) = a_k - q_k(x) / 2 with q_k = |U_k^T (x - mu_k)|^2, the constants of gmm::e_point.
struct Components {
  double a[2], mu0[2], mu1[2], u00[2], u01[2], u11[2];

  explicit Components(const gmm::Model& m, int D) {
    for (int k = 0; k < 2; ++k) {
      a[k] = m.logw[k] - 0.5 * D * gmm::kLog2Pi + m.logdet[k];
      mu0[k] = m.mean[k][0], mu1[k] = D == 2 ? m.mean[k][1] : 0.0;
      u00[k] = m.u[k][0], u01[k] = m.u[k][1], u11[k] = m.u[k][2];
    }
  }
};

template <int D>
__attribute__((always_inline)) inline v8d log_density(const Components& c, int k, const v8d& x0,
                                                      const v8d& x1) {
  const v8d d0 = x0 - c.mu0[k], y0 = d0 * c.u00[k];
  v8d q = y0 * y0;
  if constexpr (D == 2) {
    const v8d y1 = d0 * c.u01[k] + (x1 - c.mu1[k]) * c.u11[k];
    q += y1 * y1;
  }
  return c.a[k] - 0.5 * q;
}

// One chunk [lo, lo + groups * kLanes): adds the next M-step's statistics to s (the first 2 *
// kPerComp entries), or with kResp writes the responsibilities. Returns the chunk's log-likelihood.
template <typename scalar_t, int D, bool kResp>
__attribute__((always_inline)) inline double e_groups(const scalar_t* x, int64_t lo, int64_t groups,
                                                      const Components& c, const double* shift,
                                                      double* s, scalar_t* resp) {
  v8d st[2][gmm::kPerComp] = {}, best_sum = {}, prod = splat(1.0);
  double log_sum = 0.0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t i0 = lo + g * kLanes;
    v8d x0, x1;
    load_lanes<scalar_t, D>(x, i0, x0, x1);
    const v8d lp0 = log_density<D>(c, 0, x0, x1), lp1 = log_density<D>(c, 1, x0, x1);
    const v8d delta = lp1 - lp0;
    const v8d e = exp_nonpositive(delta > 0 ? -delta : delta);
    const v8d inv = 1.0 / (1.0 + e);
    const v8d r1 = delta > 0 ? inv : e * inv;  // ties go to component 0, as in gmm::e_point
    const v8d r0 = delta > 0 ? e * inv : inv;
    best_sum += delta > 0 ? lp1 : lp0;
    prod *= 1.0 + e;
    if (g % kGroupsPerLog == kGroupsPerLog - 1 || g == groups - 1) {  // each lane's product < 2^32
      for (int l = 0; l < kLanes; ++l) log_sum += std::log(prod[l]);
      prod = splat(1.0);
    }
    if constexpr (kResp) {
      for (int l = 0; l < kLanes; ++l) {
        resp[(i0 + l) * 2] = static_cast<scalar_t>(r0[l]);
        resp[(i0 + l) * 2 + 1] = static_cast<scalar_t>(r1[l]);
      }
      continue;
    }
    const v8d z0 = x0 - shift[0], z1 = x1 - shift[1];
    const v8d r[2] = {r0, r1};
    for (int k = 0; k < 2; ++k) {
      const v8d rz0 = r[k] * z0;
      st[k][0] += r[k];
      st[k][1] += rz0;
      st[k][3] += rz0 * z0;
      if constexpr (D == 2) {
        const v8d rz1 = r[k] * z1;
        st[k][2] += rz1;
        st[k][4] += rz0 * z1;
        st[k][5] += rz1 * z1;
      }
    }
  }
  double ll = log_sum;
  for (int l = 0; l < kLanes; ++l) ll += best_sum[l];
  if constexpr (!kResp) {
    for (int k = 0; k < 2; ++k)
      for (int j = 0; j < gmm::kPerComp; ++j)
        for (int l = 0; l < kLanes; ++l) s[k * gmm::kPerComp + j] += st[k][j][l];
  }
  return ll;
}

// Lloyd's assignment for K = 2 over whole lane groups: each label becomes the nearer centre (ties to
// 0, as lloyd_pass), acc (zeroed by the caller's chunked_sum) gets per cluster the count and the sum
// of x when kUpdate, then the number of labels that changed.
template <typename scalar_t, int D, bool kUpdate>
__attribute__((always_inline)) inline void lloyd_groups(const scalar_t* x, int64_t lo, int64_t groups,
                                                        const double (*c)[2], int64_t* labels, double* acc) {
  v8d count1 = {}, sum1_0 = {}, sum1_1 = {}, sum0_0 = {}, sum0_1 = {};
  v8l changed = {};
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t i0 = lo + g * kLanes;
    v8d x0, x1;
    load_lanes<scalar_t, D>(x, i0, x0, x1);
    v8d d0 = (x0 - c[0][0]) * (x0 - c[0][0]), d1 = (x0 - c[1][0]) * (x0 - c[1][0]);
    if constexpr (D == 2) d0 += (x1 - c[0][1]) * (x1 - c[0][1]), d1 += (x1 - c[1][1]) * (x1 - c[1][1]);
    const v8l label = (d1 < d0) & 1;  // a vector comparison gives -1 (true) or 0
    v8l old;
    std::memcpy(&old, labels + i0, sizeof old);
    changed += (old != label) & 1;
    std::memcpy(labels + i0, &label, sizeof label);
    if constexpr (kUpdate) {
      const v8d w1 = __builtin_convertvector(label, v8d), w0 = 1.0 - w1;
      count1 += w1, sum1_0 += w1 * x0, sum0_0 += w0 * x0;
      if constexpr (D == 2) sum1_1 += w1 * x1, sum0_1 += w0 * x1;
    }
  }
  constexpr int kStride = D + 1;  // per cluster: count, sum x0[, sum x1]
  for (int l = 0; l < kLanes; ++l) {
    acc[2 * kStride] += static_cast<double>(changed[l]);
    if constexpr (!kUpdate) continue;
    acc[0] += static_cast<double>(groups) - count1[l];
    acc[kStride] += count1[l];
    acc[1] += sum0_0[l], acc[kStride + 1] += sum1_0[l];
    if constexpr (D == 2) acc[2] += sum0_1[l], acc[kStride + 2] += sum1_1[l];
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
template <typename scalar_t, int D, bool kResp>
__attribute__((target("avx512f,avx512dq,avx512vl,fma"))) double e_groups_avx512(
    const scalar_t* x, int64_t lo, int64_t groups, const Components& c, const double* shift, double* s,
    scalar_t* resp) {
  return e_groups<scalar_t, D, kResp>(x, lo, groups, c, shift, s, resp);
}

template <typename scalar_t, int D, bool kUpdate>
__attribute__((target("avx512f,avx512dq,avx512vl,fma"))) void lloyd_groups_avx512(
    const scalar_t* x, int64_t lo, int64_t groups, const double (*c)[2], int64_t* labels, double* acc) {
  lloyd_groups<scalar_t, D, kUpdate>(x, lo, groups, c, labels, acc);
}

inline bool has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

// The AVX-512 build of the body where the CPU has it (results agree to rounding: FMA contraction).
// An AVX2 build of the same body measured no faster than the baseline here (9-11 ns per point
// against 1.5 with AVX-512), so other CPUs run the baseline.
template <typename scalar_t, int D, bool kResp>
double e_groups_dispatch(const scalar_t* x, int64_t lo, int64_t groups, const Components& c,
                         const double* shift, double* s, scalar_t* resp) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx512()) return e_groups_avx512<scalar_t, D, kResp>(x, lo, groups, c, shift, s, resp);
#endif
  return e_groups<scalar_t, D, kResp>(x, lo, groups, c, shift, s, resp);
}

template <typename scalar_t, int D, bool kUpdate>
void lloyd_groups_dispatch(const scalar_t* x, int64_t lo, int64_t groups, const double (*c)[2],
                           int64_t* labels, double* acc) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx512()) return lloyd_groups_avx512<scalar_t, D, kUpdate>(x, lo, groups, c, labels, acc);
#endif
  lloyd_groups<scalar_t, D, kUpdate>(x, lo, groups, c, labels, acc);
}

}  // namespace gmm_k2
}  // namespace lnl
