// Batched 2-component (K <= 4) GMM EM, D in {1, 2}, full covariance, mirroring
// sklearn.mixture.GaussianMixture (DivideMix Train_cifar.py: eval_train). Python face: lnl/ops/gmm.py.
// The CUDA ops read lengths, labels and covariances without checking their values (that would
// synchronise with the host): lnl.ops.gmm_fit validates them first; direct torch.ops.lnl calls must
// pass 1 <= lengths <= N, labels in [0, K) and symmetric covariances (the lower triangle is read).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "gmm/gmm_common.h"

namespace lnl {

using GmmOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                          at::Tensor, at::Tensor>;

// k-means labels int64[G, N] (0 on padding) replaying sklearn's KMeans(K, n_init=1): k-means++ from
// the host-drawn uniforms[G, U] (float64), then Lloyd with sklearn's stopping rule.
at::Tensor gmm_kmeans_cpu(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& uniforms,
                          int64_t n_components);
at::Tensor gmm_kmeans_cuda(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& uniforms,
                           int64_t n_components);

// EM from exactly one of: init_labels int64[G, N], init_resp [G, N, K] (both through sklearn's
// _initialize M-step), or (weights [G, K], means [G, K, D], covs [G, K, D, D]).
// Returns (weights, means, covs, resp [G, N, K], lower_bound [G], n_iter int64 [G],
// converged bool [G], status int64 [G]; status 1 = a covariance was not positive definite,
// 2 = x has NaN/inf (both kernels check: the Python layer reads nothing back before the result)).
GmmOut gmm_em_cpu(const at::Tensor& x, const at::Tensor& lengths,
                  const std::optional<at::Tensor>& init_labels,
                  const std::optional<at::Tensor>& init_resp, const std::optional<at::Tensor>& weights,
                  const std::optional<at::Tensor>& means, const std::optional<at::Tensor>& covs,
                  int64_t n_components, int64_t max_iter, double tol, double reg_covar);
GmmOut gmm_em_cuda(const at::Tensor& x, const at::Tensor& lengths,
                   const std::optional<at::Tensor>& init_labels,
                   const std::optional<at::Tensor>& init_resp, const std::optional<at::Tensor>& weights,
                   const std::optional<at::Tensor>& means, const std::optional<at::Tensor>& covs,
                   int64_t n_components, int64_t max_iter, double tol, double reg_covar);

// Shared argument checks of both twins; messages name the argument and the value received.
// Returns 0 (labels), 1 (resp) or 2 (given parameters) for the init mode.
inline int check_gmm_inputs(const at::Tensor& x, const at::Tensor& lengths,
                            const std::optional<at::Tensor>& init_labels,
                            const std::optional<at::Tensor>& init_resp,
                            const std::optional<at::Tensor>& weights,
                            const std::optional<at::Tensor>& means,
                            const std::optional<at::Tensor>& covs, int64_t n_components,
                            int64_t max_iter, double tol, double reg_covar) {
  TORCH_CHECK(x.dim() == 3, "gmm_em: x must be [G, N, D], got ", x.sizes());
  const int64_t g = x.size(0), n = x.size(1), d = x.size(2);
  TORCH_CHECK(d == 1 || d == 2, "gmm_em: D must be 1 or 2, got D=", d);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gmm_em: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(n_components >= 1 && n_components <= gmm::kMaxK, "gmm_em: n_components=", n_components,
              " must be in [1, ", gmm::kMaxK, "]");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == g && lengths.scalar_type() == at::kLong,
              "gmm_em: lengths must be int64 [G=", g, "], got ", lengths.sizes(), " ",
              lengths.scalar_type());
  TORCH_CHECK(lengths.device() == x.device(), "gmm_em: lengths are on ", lengths.device(),
              " but x is on ", x.device());
  TORCH_CHECK(max_iter >= 1, "gmm_em: max_iter must be >= 1, got ", max_iter);
  TORCH_CHECK(tol >= 0 && reg_covar >= 0, "gmm_em: tol=", tol, " and reg_covar=", reg_covar,
              " must be non-negative");
  const int modes = int(init_labels.has_value()) + int(init_resp.has_value()) +
                    int(weights.has_value() && means.has_value() && covs.has_value());
  TORCH_CHECK(modes == 1, "gmm_em: give exactly one of init_labels, init_resp or (weights, means, covs)");
  if (init_labels) {
    TORCH_CHECK(init_labels->sizes() == at::IntArrayRef({g, n}) &&
                    init_labels->scalar_type() == at::kLong && init_labels->device() == x.device(),
                "gmm_em: init_labels must be int64 [G=", g, ", N=", n, "] on ", x.device(), ", got ",
                init_labels->sizes(), " ", init_labels->scalar_type(), " on ", init_labels->device());
    return 0;
  }
  if (init_resp) {
    TORCH_CHECK(init_resp->sizes() == at::IntArrayRef({g, n, n_components}) &&
                    init_resp->scalar_type() == x.scalar_type() && init_resp->device() == x.device(),
                "gmm_em: init_resp must be [G=", g, ", N=", n, ", K=", n_components,
                "] of x's dtype on ", x.device(), ", got ", init_resp->sizes(), " ",
                init_resp->scalar_type(), " on ", init_resp->device());
    return 1;
  }
  const int64_t k = n_components;
  TORCH_CHECK(weights->sizes() == at::IntArrayRef({g, k}), "gmm_em: weights must be [G, K], got ",
              weights->sizes());
  TORCH_CHECK(means->sizes() == at::IntArrayRef({g, k, d}), "gmm_em: means must be [G, K, D], got ",
              means->sizes());
  TORCH_CHECK(covs->sizes() == at::IntArrayRef({g, k, d, d}),
              "gmm_em: covs must be [G, K, D, D], got ", covs->sizes());
  for (const at::Tensor* t : {&*weights, &*means, &*covs}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "gmm_em: initial parameters must have x's dtype and device, got ", t->scalar_type(),
                " on ", t->device());
  }
  return 2;
}

inline void check_kmeans_inputs(const at::Tensor& x, const at::Tensor& lengths,
                                const at::Tensor& uniforms, int64_t n_components) {
  TORCH_CHECK(x.dim() == 3 && (x.size(2) == 1 || x.size(2) == 2),
              "gmm_kmeans: x must be [G, N, D] with D in {1, 2}, got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gmm_kmeans: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(n_components >= 1 && n_components <= gmm::kMaxK, "gmm_kmeans: n_components=",
              n_components, " must be in [1, ", gmm::kMaxK, "]");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == x.size(0) &&
                  lengths.scalar_type() == at::kLong && lengths.device() == x.device(),
              "gmm_kmeans: lengths must be int64 [G=", x.size(0), "] on x's device, got ",
              lengths.sizes(), " ", lengths.scalar_type(), " on ", lengths.device());
  const int64_t trials = 2 + static_cast<int64_t>(std::log(static_cast<double>(n_components)));
  const int64_t need = 1 + (n_components - 1) * trials;
  TORCH_CHECK(uniforms.dim() == 2 && uniforms.size(0) == x.size(0) && uniforms.size(1) >= need &&
                  uniforms.scalar_type() == at::kDouble && uniforms.device() == x.device(),
              "gmm_kmeans: uniforms must be float64 [G=", x.size(0), ", >=", need, "] on x's device, got ",
              uniforms.sizes(), " ", uniforms.scalar_type(), " on ", uniforms.device());
}

}  // namespace lnl
