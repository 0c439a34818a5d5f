// Host-device math shared by the CPU and CUDA PLR kernels (lnl/ops/plr_reference.py).
// Included by plr_cpu.cpp and plr_kernels.cuh; no device branching beyond the qualifier macro.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LNL_PLR_HD __host__ __device__ __forceinline__
#else
#define LNL_PLR_HD inline
#endif

namespace lnl {
namespace plr {

// Precision-explicit exp/log, so float math stays float on the device.
LNL_PLR_HD float plr_exp(float x) { return expf(x); }
LNL_PLR_HD double plr_exp(double x) { return ::exp(x); }
LNL_PLR_HD float plr_log(float x) { return logf(x); }
LNL_PLR_HD double plr_log(double x) { return ::log(x); }

// Words of a candidate bitset: one bit per class, C <= 64 * words.
LNL_PLR_HD int64_t words_for(int64_t num_classes) { return (num_classes + 63) / 64; }

// Sample-level pair test (PLReMix build_mask_step): negative pair iff the candidate sets share no class.
LNL_PLR_HD bool disjoint(const uint64_t* a, const uint64_t* b, int64_t words) {
  uint64_t any = 0;
  for (int64_t w = 0; w < words; ++w) any |= a[w] & b[w];
  return any == 0;
}

// Kinds of an ordered row pair (a, b) of the view-major N x N grid.
enum PairKind : int { kSelf = 0, kPositive = 1, kNegative = 2, kNeglected = 3 };

// sample_a/sample_b = row % B; is_disjoint only matters for different samples.
LNL_PLR_HD int pair_kind(int64_t a, int64_t b, int64_t sample_a, int64_t sample_b, bool is_disjoint) {
  if (a == b) return kSelf;
  if (sample_a == sample_b) return kPositive;
  return is_disjoint ? kNegative : kNeglected;
}

// Whether column kind enters the row's log-sum-exp: N(a) for flat, P(a) u N(a) for SupCon.
LNL_PLR_HD bool in_lse(int kind, bool flat) {
  return kind == kNegative || (!flat && kind == kPositive);
}

// Running log-sum-exp (FlashAttention style): max m and sum s of exp(x - m). exp_t is the precision
// of each exp (float for float32 inputs on the CPU: faster, 1 ulp), acc_t that of the sums.
template <typename acc_t, typename exp_t = acc_t>
struct OnlineLse {
  acc_t m;
  acc_t s;
  LNL_PLR_HD void init() {
    m = -INFINITY;
    s = acc_t(0);
  }
  LNL_PLR_HD void add(acc_t x) {
    if (x > m) {
      s = s * acc_t(plr_exp(exp_t(m - x))) + acc_t(1);
      m = x;
    } else {
      s += acc_t(plr_exp(exp_t(x - m)));
    }
  }
  LNL_PLR_HD void merge(acc_t om, acc_t os) {
    if (os == acc_t(0)) return;
    if (om > m) {
      s = s * plr_exp(m - om) + os;
      m = om;
    } else {
      s += os * plr_exp(om - m);
    }
  }
  LNL_PLR_HD acc_t value() const { return s > acc_t(0) ? m + plr_log(s) : acc_t(-INFINITY); }
};

// H_ab = G_ab + G_ba of dF = H F (the loss's gradients), already scaled by coef (grad / (R tau) for
// flat, grad / (N tau_b) for SupCon). e_a = exp(s_ab / tau - lse_a), e_b = exp(s_ab / tau - lse_b);
// row_valid says the row has a negative (flat drops the positives of rows without one).
template <typename acc_t>
LNL_PLR_HD acc_t pair_grad(int kind, bool flat, bool row_valid, acc_t e_a, acc_t e_b, acc_t coef,
                           acc_t inv_positives) {
  if (kind == kNegative) return coef * (e_a + e_b);
  if (kind != kPositive) return acc_t(0);
  if (flat) return row_valid ? acc_t(-2) * coef : acc_t(0);
  return coef * (e_a + e_b - acc_t(2) * inv_positives);
}

}  // namespace plr
}  // namespace lnl
