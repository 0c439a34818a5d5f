// CUDA PLR loss: bitset kernel, fused forward (online log-sum-exp over allowed columns) and
// recompute-in-backward (dF = (G + G^T) F); the tiles of F F^T in fp32 SIMT for float32 features and
// on tensor cores (wmma, fp32 accumulation) for float16 / bfloat16. Device code: plr_kernels.cuh.
// No host synchronisation: the scalar reductions and the backward's coefficient are ATen ops.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "plr/plr.h"
#include "plr/plr_kernels.cuh"

namespace lnl {
namespace {

constexpr int64_t kMaxWords = 16;  // C <= 1024, as the Python face's reasons say

void check_cuda_features(const at::Tensor& features, const char* op) {
  TORCH_CHECK(features.is_cuda(), op, ": features must be on a CUDA device, got ", features.device());
  const auto t = features.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, op,
              " (CUDA): features must be float32, float16 or bfloat16, got ", t);
}

// Bitsets [B, W] (int64 storage, read as uint64 by the kernels) built into bits.
void build_bits_into(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                     int64_t num_classes, at::Tensor& bits) {
  const int64_t batch = cand.size(0), words = plr::words_for(num_classes);
  at::Tensor c = cand.contiguous(), y = labels.contiguous();
  const int threads = 128;
  const int blocks = static_cast<int>((batch + threads - 1) / threads);
  if (batch > 0) {
    plr_cuda::build_bits_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        c.data_ptr<int64_t>(), y.data_ptr<int64_t>(), batch, c.size(1), kappa, num_classes, words,
        reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void check_words(int64_t num_classes) {
  TORCH_CHECK(plr::words_for(num_classes) <= kMaxWords, "plr (CUDA): num_classes=", num_classes,
              " exceeds ", 64 * kMaxWords);
}

at::Tensor build_bits(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                      int64_t num_classes) {
  check_words(num_classes);
  at::Tensor bits = at::empty({cand.size(0), plr::words_for(num_classes)}, cand.options());
  build_bits_into(cand, labels, kappa, num_classes, bits);
  return bits;
}

// The bitsets are built once per step: the forward stores them behind lse, in lse's own storage
// ([N floats of lse][a float of padding when N is odd][B x W words]), and the backward, whose lse
// must be that forward's output for the same inputs (as its gradient formula already assumes),
// reads them there when lse's storage has exactly that size; any other lse (a copy, the CPU op's)
// makes it rebuild them. The storage goes with lse: nothing is cached elsewhere.
int64_t bits_offset(int64_t n) { return (n + 1) / 2 * 2; }  // in floats: 8-byte aligned words

int64_t lse_storage_floats(int64_t n, int64_t batch, int64_t num_classes) {
  return bits_offset(n) + 2 * batch * plr::words_for(num_classes);
}

// lse [N] of the forward, with the candidate bitsets [B, W] behind it.
std::pair<at::Tensor, at::Tensor> lse_with_bits(const at::Tensor& cand, const at::Tensor& labels,
                                                int64_t kappa, int64_t num_classes, int64_t n,
                                                const at::TensorOptions& opts) {
  check_words(num_classes);
  const int64_t batch = cand.size(0), words = plr::words_for(num_classes);
  at::Tensor storage = at::empty({lse_storage_floats(n, batch, num_classes)}, opts);
  at::Tensor bits =
      storage.narrow(0, bits_offset(n), 2 * batch * words).view(at::kLong).view({batch, words});
  build_bits_into(cand, labels, kappa, num_classes, bits);
  return {storage.narrow(0, 0, n), bits};
}

// The forward's bitsets behind lse (see lse_with_bits), or new ones when lse does not carry them.
at::Tensor bits_for_backward(const at::Tensor& lse, const at::Tensor& cand, const at::Tensor& labels,
                             int64_t kappa, int64_t num_classes) {
  const int64_t n = lse.size(0), batch = cand.size(0), words = plr::words_for(num_classes);
  const int64_t floats = lse_storage_floats(n, batch, num_classes);
  const bool carried = lse.scalar_type() == at::kFloat && lse.is_contiguous() &&
                       lse.storage_offset() == 0 && words <= kMaxWords &&
                       lse.storage().nbytes() == static_cast<size_t>(floats) * sizeof(float);
  if (!carried) return build_bits(cand, labels, kappa, num_classes);
  at::Tensor storage = at::empty({0}, lse.options()).set_(lse.storage(), 0, {floats}, {1});
  return storage.narrow(0, bits_offset(n), 2 * batch * words).view(at::kLong).view({batch, words});
}

plr_cuda::FwdParams make_params(const at::Tensor& f, int64_t batch, int64_t views,
                                int64_t num_classes, double temperature, double base_temperature,
                                bool flat) {
  plr_cuda::FwdParams p;
  p.n = f.size(0);
  p.d = f.size(1);
  p.batch = batch;
  p.words = plr::words_for(num_classes);
  p.inv_tau = static_cast<float>(1.0 / temperature);
  p.inv_pos = static_cast<float>(1.0 / double(views - 1));
  p.loss_scale = static_cast<float>(temperature / base_temperature);
  p.flat = flat;
  return p;
}

unsigned int row_blocks(int64_t n) {
  return static_cast<unsigned int>((n + plr_cuda::kTile - 1) / plr_cuda::kTile);
}

const uint64_t* bits_ptr(const at::Tensor& bits) {
  return reinterpret_cast<const uint64_t*>(bits.data_ptr<int64_t>());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> plr_loss_cuda(
    const at::Tensor& features, const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
    int64_t num_classes, double temperature, double base_temperature, bool flat) {
  const int64_t views =
      check_plr_inputs(features, cand, labels, kappa, num_classes, temperature, base_temperature);
  check_cuda_features(features, "plr_loss");
  const c10::cuda::CUDAGuard guard(features.device());
  at::Tensor f = features.contiguous();
  const auto p = make_params(f, cand.size(0), views, num_classes, temperature, base_temperature, flat);
  const auto opts = f.options().dtype(at::kFloat);
  at::Tensor lse, bits;  // bits live behind lse, for the backward
  std::tie(lse, bits) = lse_with_bits(cand, labels, kappa, num_classes, p.n, opts);
  at::Tensor n_neg = at::empty({p.n}, f.options().dtype(at::kInt));
  at::Tensor row_obj = at::empty({p.n}, opts);
  at::Tensor row_val = at::empty({p.n}, opts);
  if (p.n > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "plr_loss_cuda", [&] {
      const auto kernel = plr_cuda::forward_kernel_for<scalar_t>();
      kernel<<<row_blocks(p.n), plr_cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              f.data_ptr<scalar_t>(), bits_ptr(bits), p, lse.data_ptr<float>(),
              n_neg.data_ptr<int>(), row_obj.data_ptr<float>(), row_val.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  at::Tensor objective, value;
  if (flat) {  // (1/R) sums over rows with a negative; the row terms of the others are 0
    at::Tensor count = n_neg.gt(0).sum().clamp_min(1).to(at::kFloat);
    objective = row_obj.sum() / count;
    value = row_val.sum() / count;
  } else {
    objective = row_obj.sum() / static_cast<double>(p.n);
    value = objective.clone();
  }
  return {objective, value, lse, n_neg};
}

at::Tensor plr_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& features,
                                  const at::Tensor& cand, const at::Tensor& labels,
                                  const at::Tensor& lse, const at::Tensor& n_neg, int64_t kappa,
                                  int64_t num_classes, double temperature, double base_temperature,
                                  bool flat) {
  const int64_t views =
      check_plr_inputs(features, cand, labels, kappa, num_classes, temperature, base_temperature);
  check_plr_backward_inputs(grad, features, lse, n_neg);
  check_cuda_features(features, "plr_loss_backward");
  const c10::cuda::CUDAGuard guard(features.device());
  at::Tensor f = features.contiguous();
  at::Tensor bits = bits_for_backward(lse, cand, labels, kappa, num_classes);
  const auto p = make_params(f, cand.size(0), views, num_classes, temperature, base_temperature, flat);
  at::Tensor g = grad.reshape({}).to(f.device(), at::kFloat);  // a 0-d CPU grad is allowed
  at::Tensor coef;  // on the device: no synchronisation for R
  if (flat) {
    at::Tensor count = n_neg.gt(0).sum().to(at::kFloat);
    coef = at::where(count.gt(0), g / (count.clamp_min(1) * temperature), at::zeros_like(g));
  } else {
    coef = g / (static_cast<double>(p.n) * base_temperature);
  }
  coef = coef.contiguous();
  at::Tensor lse32 = lse.to(at::kFloat).contiguous();
  at::Tensor nn = n_neg.contiguous();
  // Every element is written once, by the CTA owning its row block and dimension slice.
  at::Tensor grad_f = at::empty({p.n, p.d}, f.options());
  TORCH_CHECK(plr_cuda::dim_slices(p.d) <= 65535, "plr_loss_backward (CUDA): D=", p.d, " too large");
  if (p.n > 0 && p.d > 0) {
    const dim3 grid(row_blocks(p.n), plr_cuda::dim_slices(p.d));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "plr_loss_backward_cuda", [&] {
      plr_cuda::backward_kernel<scalar_t>
          <<<grid, plr_cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              f.data_ptr<scalar_t>(), bits_ptr(bits), p, lse32.data_ptr<float>(),
              nn.data_ptr<int>(), coef.data_ptr<float>(), grad_f.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return grad_f;
}

at::Tensor plr_mask_cuda(const at::Tensor& cand, const at::Tensor& labels, int64_t kappa,
                         int64_t num_classes) {
  check_plr_sets(cand, labels, kappa, num_classes);
  TORCH_CHECK(cand.is_cuda(), "plr_mask: cand must be on a CUDA device, got ", cand.device());
  const c10::cuda::CUDAGuard guard(cand.device());
  const int64_t batch = cand.size(0);
  at::Tensor bits = build_bits(cand, labels, kappa, num_classes);
  at::Tensor mask = at::empty({batch, batch}, cand.options().dtype(at::kChar));
  const int64_t total = batch * batch;
  if (total > 0) {
    const int threads = 256;
    const auto blocks = static_cast<unsigned int>((total + threads - 1) / threads);
    plr_cuda::mask_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        bits_ptr(bits), batch, plr::words_for(num_classes), mask.data_ptr<int8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return mask;
}

TORCH_LIBRARY_IMPL(lnl, CUDA, m) {
  m.impl("plr_loss", &plr_loss_cuda);
  m.impl("plr_loss_backward", &plr_loss_backward_cuda);
  m.impl("plr_mask", &plr_mask_cuda);
}

}  // namespace lnl
