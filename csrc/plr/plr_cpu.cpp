// CPU PLR loss, tiled like the CUDA kernel: each task owns a block of rows (up to kBlockRows) and
// sweeps the column blocks of S = F F^T through ATen's GEMM (single-threaded inside the parallel
// region) into its own kBlockRows x kBlockCols buffer, then a per-row epilogue classifies each pair
// from the candidate bitsets (AND of ceil(C/64) words) and keeps an online log-sum-exp per row
// (forward), or turns the tile into H = G + G^T in place and accumulates dF_rows += H F_cols
// (backward; rows are owned by one task, so no atomics). One parallel region per call: small
// batches run inline, and oversubscribed machines do not pay a barrier per tile.
// Memory: O(N D + B C/64) plus one tile per thread; the N x N matrix is never built.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "plr/plr.h"
#include "plr/plr_common.h"

namespace lnl {
namespace {

constexpr int64_t kBlockRows = 256;
constexpr int64_t kBlockCols = 1024;

// Candidate bitsets [B, W]: top-kappa columns plus the label (kappa >= 1), or the top-1 (kappa 0).
std::vector<uint64_t> build_bits(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                                 int64_t num_classes) {
  const int64_t batch = cand.size(0), width = cand.size(1), words = plr::words_for(num_classes);
  const int64_t used = std::max<int64_t>(kappa, 1);
  at::Tensor c = cand.contiguous(), y = labels.contiguous();
  const int64_t* cp = c.data_ptr<int64_t>();
  const int64_t* yp = y.data_ptr<int64_t>();
  std::vector<uint64_t> bits(batch * words, 0);
  auto set = [&](int64_t i, int64_t cls, const char* what) {
    TORCH_CHECK(cls >= 0 && cls < num_classes, "plr: ", what, "[", i, "]=", cls,
                " is outside [0, num_classes=", num_classes, ")");
    bits[i * words + cls / 64] |= uint64_t(1) << (cls % 64);
  };
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t j = 0; j < used; ++j) set(i, cp[i * width + j], "cand");
    if (kappa >= 1) set(i, yp[i], "labels");
  }
  return bits;
}

struct Shape {
  int64_t n, batch, views, words;
};

// The tile S[r0:r0+rows, c0:c0+cols] into buf (row-major, stride cols).
at::Tensor tile(const at::Tensor& f, at::Tensor& buf, int64_t r0, int64_t rows, int64_t c0,
                int64_t cols) {
  at::Tensor out = buf.narrow(0, 0, rows * cols).view({rows, cols});
  at::mm_out(out, f.narrow(0, r0, rows), f.narrow(0, c0, cols).t());
  return out;
}

template <typename scalar_t>
struct RowState {
  plr::OnlineLse<double, scalar_t> lse;  // exps in the input precision, sums in double
  double pos_sum;  // sum over P(a) of s_ap (not yet divided by tau)
  int64_t n_neg;
};

// Rows per task: at least four tasks per thread when there is enough work, at most kBlockRows.
int64_t block_rows(int64_t n) {
  const int64_t per_task = n / (4 * std::max<int64_t>(at::get_num_threads(), 1));
  return std::clamp<int64_t>(per_task, 32, kBlockRows);
}

template <typename scalar_t>
void forward_rows(const at::Tensor& f, const std::vector<uint64_t>& bits, const Shape& sh,
                  double inv_tau, bool flat, std::vector<RowState<scalar_t>>& state) {
  const int64_t br = block_rows(sh.n), blocks = (sh.n + br - 1) / br;
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    at::Tensor buf = at::empty({br * kBlockCols}, f.options());
    for (int64_t r0 = lo * br; r0 < std::min(hi * br, sh.n); r0 += br) {
      const int64_t rows = std::min(br, sh.n - r0);
      for (int64_t c0 = 0; c0 < sh.n; c0 += kBlockCols) {
        const int64_t cols = std::min(kBlockCols, sh.n - c0);
        const scalar_t* s = tile(f, buf, r0, rows, c0, cols).data_ptr<scalar_t>();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t a = r0 + r, sa = a % sh.batch;
          RowState<scalar_t>& st = state[a];
          int64_t sb = c0 % sh.batch;
          for (int64_t j = 0; j < cols; ++j, sb = (sb + 1 == sh.batch ? 0 : sb + 1)) {
            const bool dis = sa != sb && plr::disjoint(&bits[sa * sh.words], &bits[sb * sh.words], sh.words);
            const int kind = plr::pair_kind(a, c0 + j, sa, sb, dis);
            const double x = static_cast<double>(s[r * cols + j]);
            if (kind == plr::kPositive) st.pos_sum += x;
            if (kind == plr::kNegative) ++st.n_neg;
            if (plr::in_lse(kind, flat)) st.lse.add(x * inv_tau);
          }
        }
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> plr_loss_cpu(
    const at::Tensor& features, const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
    int64_t num_classes, double temperature, double base_temperature, bool flat) {
  const int64_t views =
      check_plr_inputs(features, cand, labels, kappa, num_classes, temperature, base_temperature);
  TORCH_CHECK(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble,
              "plr_loss (CPU): features must be float32 or float64, got ", features.scalar_type());
  const Shape sh{features.size(0), cand.size(0), views, plr::words_for(num_classes)};
  const std::vector<uint64_t> bits = build_bits(cand, labels, kappa, num_classes);
  // Detached: the GEMMs run on worker threads, which do not inherit the autograd-excluded TLS.
  at::Tensor f = features.detach().contiguous();
  const double inv_tau = 1.0 / temperature;
  std::vector<double> row_lse(sh.n), row_pos(sh.n);
  at::Tensor n_neg = at::empty({sh.n}, f.options().dtype(at::kInt));
  int32_t* np = n_neg.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "plr_loss_cpu", [&] {
    std::vector<RowState<scalar_t>> state(sh.n);
    for (auto& st : state) {
      st.lse.init();
      st.pos_sum = 0;
      st.n_neg = 0;
    }
    forward_rows<scalar_t>(f, bits, sh, inv_tau, flat, state);
    for (int64_t a = 0; a < sh.n; ++a) {
      row_lse[a] = state[a].lse.value();
      row_pos[a] = state[a].pos_sum;
      np[a] = static_cast<int32_t>(state[a].n_neg);
    }
  });
  at::Tensor lse = at::empty({sh.n}, f.options().dtype(at::kDouble));
  double* lp = lse.data_ptr<double>();
  double objective = 0, value = 0;
  int64_t valid = 0;
  for (int64_t a = 0; a < sh.n; ++a) {
    lp[a] = row_lse[a];
    if (flat) {
      if (np[a] == 0) continue;
      const double v = lp[a] - row_pos[a] * inv_tau;  // v_a: sum of positives
      objective += v;
      value += v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
      ++valid;
    } else {
      objective += lp[a] - row_pos[a] * inv_tau / double(views - 1);
    }
  }
  if (flat) {
    objective = valid ? objective / double(valid) : 0.0;
    value = valid ? value / double(valid) : 0.0;
  } else {
    objective *= temperature / base_temperature / double(sh.n);
    value = objective;
  }
  const auto acc = f.scalar_type();  // float32 -> float32, float64 -> float64
  return {at::scalar_tensor(objective, f.options().dtype(acc)),
          at::scalar_tensor(value, f.options().dtype(acc)), lse.to(acc), n_neg};
}

namespace {

// Turns the tile S[r0 + r, c0 + j] into H[r, j] = G_ab + G_ba (plr::pair_grad) in place.
template <typename scalar_t>
void tile_to_h(scalar_t* s, int64_t r0, int64_t rows, int64_t c0, int64_t cols,
               const std::vector<uint64_t>& bits, const Shape& sh, const std::vector<double>& lse,
               const int32_t* n_neg, double inv_tau, double coef, bool flat) {
  const double inv_pos = 1.0 / double(sh.views - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t a = r0 + r, sa = a % sh.batch;
    const bool valid = n_neg[a] > 0;
    int64_t sb = c0 % sh.batch;
    for (int64_t j = 0; j < cols; ++j, sb = (sb + 1 == sh.batch ? 0 : sb + 1)) {
      const int64_t b = c0 + j;
      const bool dis = sa != sb && plr::disjoint(&bits[sa * sh.words], &bits[sb * sh.words], sh.words);
      const int kind = plr::pair_kind(a, b, sa, sb, dis);
      double e_a = 0, e_b = 0;
      if (plr::in_lse(kind, flat)) {  // softmax weights of both directions of the pair
        const double x = static_cast<double>(s[r * cols + j]) * inv_tau;
        e_a = plr::plr_exp(static_cast<scalar_t>(x - lse[a]));
        e_b = plr::plr_exp(static_cast<scalar_t>(x - lse[b]));
      }
      s[r * cols + j] = static_cast<scalar_t>(plr::pair_grad(kind, flat, valid, e_a, e_b, coef, inv_pos));
    }
  }
}

template <typename scalar_t>
void backward_tiles(const at::Tensor& f, const std::vector<uint64_t>& bits, const Shape& sh,
                    const std::vector<double>& lse, const int32_t* n_neg, double inv_tau,
                    double coef, bool flat, at::Tensor& grad) {
  const int64_t br = block_rows(sh.n), blocks = (sh.n + br - 1) / br;
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    at::Tensor buf = at::empty({br * kBlockCols}, f.options());
    for (int64_t r0 = lo * br; r0 < std::min(hi * br, sh.n); r0 += br) {
      const int64_t rows = std::min(br, sh.n - r0);
      at::Tensor grad_rows = grad.narrow(0, r0, rows);
      for (int64_t c0 = 0; c0 < sh.n; c0 += kBlockCols) {
        const int64_t cols = std::min(kBlockCols, sh.n - c0);
        at::Tensor h = tile(f, buf, r0, rows, c0, cols);
        tile_to_h(h.data_ptr<scalar_t>(), r0, rows, c0, cols, bits, sh, lse, n_neg, inv_tau, coef, flat);
        grad_rows.addmm_(h, f.narrow(0, c0, cols));  // dF_rows += H F_cols
      }
    }
  });
}

}  // namespace

at::Tensor plr_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& features,
                                 const at::Tensor& cand, const at::Tensor& labels,
                                 const at::Tensor& lse, const at::Tensor& n_neg, int64_t kappa,
                                 int64_t num_classes, double temperature, double base_temperature,
                                 bool flat) {
  const int64_t views =
      check_plr_inputs(features, cand, labels, kappa, num_classes, temperature, base_temperature);
  check_plr_backward_inputs(grad, features, lse, n_neg);
  TORCH_CHECK(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble,
              "plr_loss_backward (CPU): features must be float32 or float64, got ",
              features.scalar_type());
  const Shape sh{features.size(0), cand.size(0), views, plr::words_for(num_classes)};
  // Detached: the GEMMs run on worker threads, which do not inherit the autograd-excluded TLS.
  at::Tensor f = features.detach().contiguous();
  at::Tensor out = at::zeros_like(f);
  at::Tensor nn = n_neg.contiguous();
  const int32_t* np = nn.data_ptr<int32_t>();
  const int64_t valid = std::count_if(np, np + sh.n, [](int32_t c) { return c > 0; });
  if (flat && valid == 0) return out;  // R = 0: the loss is the constant 0
  at::Tensor lse64 = lse.to(at::kDouble).contiguous();
  const std::vector<double> row_lse(lse64.data_ptr<double>(), lse64.data_ptr<double>() + sh.n);
  const double g = grad.to(at::kDouble).item<double>();
  const double coef = flat ? g / (double(valid) * temperature) : g / (double(sh.n) * base_temperature);
  const std::vector<uint64_t> bits = build_bits(cand, labels, kappa, num_classes);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "plr_loss_backward_cpu", [&] {
    backward_tiles<scalar_t>(f, bits, sh, row_lse, np, 1.0 / temperature, coef, flat, out);
  });
  return out;
}

at::Tensor plr_mask_cpu(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                        int64_t num_classes) {
  check_plr_sets(cand, labels, kappa, num_classes);
  const int64_t batch = cand.size(0), words = plr::words_for(num_classes);
  const std::vector<uint64_t> bits = build_bits(cand, labels, kappa, num_classes);
  at::Tensor mask = at::empty({batch, batch}, cand.options().dtype(at::kChar));
  int8_t* m = mask.data_ptr<int8_t>();
  at::parallel_for(0, batch, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      for (int64_t j = 0; j < batch; ++j) {
        const bool dis = plr::disjoint(&bits[i * words], &bits[j * words], words);
        m[i * batch + j] = i == j ? int8_t(1) : (dis ? int8_t(-1) : int8_t(0));
      }
    }
  });
  return mask;
}

TORCH_LIBRARY_IMPL(lnl, CPU, m) {
  m.impl("plr_loss", &plr_loss_cpu);
  m.impl("plr_loss_backward", &plr_loss_backward_cpu);
  m.impl("plr_mask", &plr_mask_cpu);
}

}  // namespace lnl
