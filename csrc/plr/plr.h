// PLReMix's pseudo-label-relaxed contrastive loss (PLReMix losses/losses.py: PLRLoss).
// Python face: lnl/ops/plr.py. Candidate sets are bitsets (ceil(C/64) words per sample); no B x B
// or N x N tensor is ever built by the loss.
// The CUDA op does not check class indices (a host sync): one outside [0, C) drops out of its
// sample's set (the CPU op raises). lnl.ops.plr_loss validates them unless validate=False.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace lnl {

// Returns (objective, value, lse[N], n_neg[N] int32). objective carries the loss's gradient:
// flat -> (1/R) sum over rows with a negative of v_a (0 when R = 0); SupCon -> the loss.
// value: flat -> (1/R) sum log(1 + exp(v_a)) (FlatNCE/InfoNCE value to log); SupCon -> the loss.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> plr_loss_cpu(
    const at::Tensor& features, const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
    int64_t num_classes, double temperature, double base_temperature, bool flat);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> plr_loss_cuda(
    const at::Tensor& features, const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
    int64_t num_classes, double temperature, double base_temperature, bool flat);

// The CUDA op's lse carries the candidate bitsets in its storage, behind its N values, for the
// backward (plr_cuda.cu: lse_with_bits); the CPU op's is a plain [N] tensor.
// d objective / d features, scaled by grad (a 0-d tensor): dF = (G + G^T) F, tiles recomputed.
at::Tensor plr_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& features,
                                 const at::Tensor& cand, const at::Tensor& labels,
                                 const at::Tensor& lse, const at::Tensor& n_neg, int64_t kappa,
                                 int64_t num_classes, double temperature, double base_temperature,
                                 bool flat);
at::Tensor plr_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& features,
                                  const at::Tensor& cand, const at::Tensor& labels,
                                  const at::Tensor& lse, const at::Tensor& n_neg, int64_t kappa,
                                  int64_t num_classes, double temperature, double base_temperature,
                                  bool flat);

// Sample-level mask int8[B, B]: +1 diagonal, -1 disjoint candidate sets, 0 otherwise.
at::Tensor plr_mask_cpu(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                        int64_t num_classes);
at::Tensor plr_mask_cuda(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                         int64_t num_classes);

// Candidate-set checks shared by every op; messages name the argument and the value received.
// Value ranges of cand/labels are checked where the bitsets are built (CPU) or by the Python face.
inline void check_plr_sets(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                           int64_t num_classes) {
  TORCH_CHECK(cand.dim() == 2 && cand.size(1) >= 1, "plr: cand must be [B, k'] with k' >= 1, got ",
              cand.sizes());
  TORCH_CHECK(cand.scalar_type() == at::kLong, "plr: cand must be int64, got ", cand.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == cand.size(0), "plr: labels must be [B=",
              cand.size(0), "], got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "plr: labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(kappa >= 0 && kappa <= cand.size(1), "plr: kappa=", kappa, " must be in [0, ",
              cand.size(1), "] (the columns of cand)");
  TORCH_CHECK(num_classes >= 1, "plr: num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(labels.device() == cand.device(), "plr: cand is on ", cand.device(),
              " but labels on ", labels.device());
}

// Checks of plr_loss / plr_loss_backward; returns the number of views V = N / B.
inline int64_t check_plr_inputs(const at::Tensor& features, const at::Tensor& cand,
                                const at::Tensor& labels, int64_t kappa, int64_t num_classes,
                                double temperature, double base_temperature) {
  check_plr_sets(cand, labels, kappa, num_classes);
  TORCH_CHECK(features.dim() == 2, "plr_loss: features must be [V*B, D], got ", features.sizes());
  TORCH_CHECK(at::isFloatingType(features.scalar_type()), "plr_loss: features must be floating, got ",
              features.scalar_type());
  const int64_t batch = cand.size(0);
  TORCH_CHECK(batch >= 1 && features.size(0) % batch == 0, "plr_loss: features has ",
              features.size(0), " rows, not a multiple of B=", batch);
  const int64_t views = features.size(0) / batch;
  TORCH_CHECK(views >= 2, "plr_loss: need at least 2 views, got V=", views);
  TORCH_CHECK(features.device() == cand.device(), "plr_loss: features are on ", features.device(),
              " but cand on ", cand.device());
  TORCH_CHECK(temperature > 0 && base_temperature > 0, "plr_loss: temperature=", temperature,
              " and base_temperature=", base_temperature, " must be > 0");
  return views;
}

inline void check_plr_backward_inputs(const at::Tensor& grad, const at::Tensor& features,
                                      const at::Tensor& lse, const at::Tensor& n_neg) {
  const int64_t n = features.size(0);
  TORCH_CHECK(grad.numel() == 1, "plr_loss_backward: grad must have one element, got ",
              grad.sizes());
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == n, "plr_loss_backward: lse must be [N=", n,
              "], got ", lse.sizes());
  TORCH_CHECK(n_neg.dim() == 1 && n_neg.size(0) == n && n_neg.scalar_type() == at::kInt,
              "plr_loss_backward: n_neg must be int32 [N=", n, "], got ", n_neg.sizes(), " ",
              n_neg.scalar_type());
  TORCH_CHECK(at::isFloatingType(lse.scalar_type()), "plr_loss_backward: lse must be floating, got ",
              lse.scalar_type());
  // The dispatcher picks the kernel from the features' device; a host pointer handed to a CUDA
  // kernel is an illegal address that poisons the context, so every tensor's device is checked.
  TORCH_CHECK(lse.device() == features.device() && n_neg.device() == features.device(),
              "plr_loss_backward: lse and n_neg must be on the features' device ", features.device(),
              ", got ", lse.device(), " and ", n_neg.device());
  TORCH_CHECK(grad.device() == features.device() || (grad.is_cpu() && grad.dim() == 0),
              "plr_loss_backward: grad must be on ", features.device(), " (or a 0-d CPU tensor), got ",
              grad.device());
}

}  // namespace lnl
