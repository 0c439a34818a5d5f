// Exact kNN label retrieval (LRA-Diffusion utils/knn_utils.py). Python face: lnl/ops/knn.py.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <tuple>

namespace lnl {

// Returns (indices int64[Q,k], scores[Q,k], votes float32[Q,C]); best first, ties by lower index.
std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_cpu(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk);

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_cuda(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk);

// GEMM + select variant (knn_cuda.cu): k <= 256, float32/float16/bfloat16. tile_elements: scores per
// GEMM tile (0 = the default); the emulation's tests pass small tiles.
std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_gemm_cuda(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk);
std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_gemm_tiles(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk, int64_t tile_elements);

enum class KnnMetric { kCosine, kInnerProduct, kL2 };

// Shared argument checks of both twins; every message names the argument and the value received.
inline KnnMetric check_knn_inputs(const at::Tensor& queries, const at::Tensor& keys,
                                  const at::Tensor& key_labels, int64_t k, int64_t num_classes,
                                  c10::string_view metric, bool exclude_self) {
  TORCH_CHECK(queries.dim() == 2, "knn_labels: queries must be 2-D, got ", queries.dim(), "-D");
  TORCH_CHECK(keys.dim() == 2, "knn_labels: keys must be 2-D, got ", keys.dim(), "-D");
  TORCH_CHECK(queries.size(1) == keys.size(1), "knn_labels: queries have D=", queries.size(1),
              " but keys have D=", keys.size(1));
  TORCH_CHECK(key_labels.dim() == 1 && key_labels.size(0) == keys.size(0),
              "knn_labels: key_labels must be [N=", keys.size(0), "], got ", key_labels.sizes());
  TORCH_CHECK(key_labels.scalar_type() == at::kLong, "knn_labels: key_labels must be int64, got ",
              key_labels.scalar_type());
  TORCH_CHECK(keys.device() == queries.device() && key_labels.device() == queries.device(),
              "knn_labels: queries, keys and key_labels must be on one device, got ", queries.device(),
              ", ", keys.device(), ", ", key_labels.device());
  TORCH_CHECK(queries.scalar_type() == keys.scalar_type(), "knn_labels: queries are ",
              queries.scalar_type(), " but keys are ", keys.scalar_type());
  const int64_t available = keys.size(0) - (exclude_self ? 1 : 0);
  TORCH_CHECK(k >= 1 && k <= available, "knn_labels: k=", k, " must be in [1, ", available,
              "] for N=", keys.size(0), " keys");
  TORCH_CHECK(!exclude_self || queries.size(0) == keys.size(0),
              "knn_labels: exclude_self needs Q == N, got Q=", queries.size(0), " N=", keys.size(0));
  TORCH_CHECK(num_classes >= 1, "knn_labels: num_classes must be >= 1, got ", num_classes);
  if (metric == "cosine") return KnnMetric::kCosine;
  if (metric == "ip") return KnnMetric::kInnerProduct;
  TORCH_CHECK(metric == "l2", "knn_labels: metric must be cosine, ip or l2, got ", metric);
  return KnnMetric::kL2;
}

}  // namespace lnl
