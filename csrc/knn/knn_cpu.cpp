// CPU kNN label retrieval: blocks of the query x key product through ATen's GEMM (BLAS), then a
// per-row running top-k (a heap whose root is the current k-th best, so most candidates are rejected
// by one compare), OpenMP over rows through at::parallel_for. Never holds more than one
// block_rows x block_keys score tile.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "knn/knn.h"

namespace lnl {
namespace {

constexpr int64_t kBlockKeys = 4096;
constexpr int64_t kTileElements = int64_t(1) << 24;  // default query block: ~16M scores

template <typename scalar_t>
struct Candidate {
  scalar_t rank;  // larger is better (similarity, or minus the squared distance)
  int64_t index;
};

// True when a is strictly better than b: higher rank, ties broken by the lower index.
template <typename scalar_t>
inline bool better(const Candidate<scalar_t>& a, const Candidate<scalar_t>& b) {
  return a.rank > b.rank || (a.rank == b.rank && a.index < b.index);
}

// Offers the candidates of one score row to a heap of at most k entries, worst at the root.
template <typename scalar_t>
void offer_row(std::vector<Candidate<scalar_t>>& heap, int64_t k, const scalar_t* rank,
               int64_t first_key, int64_t count, int64_t skip_key) {
  auto cmp = better<scalar_t>;
  for (int64_t j = 0; j < count; ++j) {
    const Candidate<scalar_t> c{rank[j], first_key + j};
    if (c.index == skip_key) continue;
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end(), cmp);
    } else if (better(c, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), cmp);
      heap.back() = c;
      std::push_heap(heap.begin(), heap.end(), cmp);
    }
  }
}

// Turns a block of dot products into ranks: identity for cosine/ip, -(|q|^2 + |k|^2 - 2 q.k) for l2.
template <typename scalar_t>
void dots_to_l2_rank(scalar_t* row, const scalar_t* key_sq, scalar_t query_sq, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    const scalar_t d2 = query_sq + key_sq[j] - scalar_t(2) * row[j];
    row[j] = -std::max(d2, scalar_t(0));
  }
}

// The ranking used |q|^2 + |k|^2 - 2 q.k; the reported distance is recomputed directly, as torch.cdist.
template <typename scalar_t>
scalar_t exact_distance(const at::Tensor& q, const at::Tensor& keys, int64_t qi, int64_t ki) {
  const int64_t d = q.size(1);
  const scalar_t* a = q.data_ptr<scalar_t>() + qi * d;
  const scalar_t* b = keys.data_ptr<scalar_t>() + ki * d;
  scalar_t acc = 0;
  for (int64_t i = 0; i < d; ++i) acc += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(acc);
}

template <typename scalar_t>
void knn_blocks(const at::Tensor& q, const at::Tensor& keys, KnnMetric metric, int64_t k,
                bool exclude_self, int64_t block_rows, at::Tensor& indices, at::Tensor& scores) {
  const int64_t nq = q.size(0), nk = keys.size(0);
  const bool l2 = metric == KnnMetric::kL2;
  at::Tensor q_sq = l2 ? q.pow(2).sum(1) : at::Tensor();
  at::Tensor k_sq = l2 ? keys.pow(2).sum(1) : at::Tensor();
  auto* out_idx = indices.data_ptr<int64_t>();
  auto* out_score = scores.data_ptr<scalar_t>();
  for (int64_t r0 = 0; r0 < nq; r0 += block_rows) {
    const int64_t rows = std::min(block_rows, nq - r0);
    std::vector<std::vector<Candidate<scalar_t>>> heaps(rows);
    for (auto& h : heaps) h.reserve(k);
    at::Tensor qb = q.narrow(0, r0, rows);
    for (int64_t c0 = 0; c0 < nk; c0 += kBlockKeys) {
      const int64_t cols = std::min(kBlockKeys, nk - c0);
      at::Tensor tile = at::mm(qb, keys.narrow(0, c0, cols).t()).contiguous();
      scalar_t* t = tile.data_ptr<scalar_t>();
      at::parallel_for(0, rows, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          scalar_t* row = t + r * cols;
          if (l2) {
            dots_to_l2_rank(row, k_sq.data_ptr<scalar_t>() + c0, q_sq.data_ptr<scalar_t>()[r0 + r], cols);
          }
          offer_row(heaps[r], k, row, c0, cols, exclude_self ? r0 + r : -1);
        }
      });
    }
    at::parallel_for(0, rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        auto& h = heaps[r];
        std::sort(h.begin(), h.end(), better<scalar_t>);
        for (int64_t j = 0; j < k; ++j) {
          out_idx[(r0 + r) * k + j] = h[j].index;
          out_score[(r0 + r) * k + j] =
              l2 ? exact_distance<scalar_t>(q, keys, r0 + r, h[j].index) : h[j].rank;
        }
      }
    });
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_cpu(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk) {
  const KnnMetric m =
      check_knn_inputs(queries, keys, key_labels, k, num_classes, metric, exclude_self);
  TORCH_CHECK(queries.scalar_type() == at::kFloat || queries.scalar_type() == at::kDouble,
              "knn_labels (CPU): queries must be float32 or float64, got ", queries.scalar_type());
  at::Tensor q = queries.contiguous(), kk = keys.contiguous();
  if (m == KnnMetric::kCosine) {  // same eps as torch.nn.functional.normalize
    q = q / q.norm(2, 1, true).clamp_min(1e-12);
    kk = kk / kk.norm(2, 1, true).clamp_min(1e-12);
  }
  const int64_t nq = q.size(0);
  const int64_t block_rows =
      chunk > 0 ? chunk : std::max<int64_t>(1, kTileElements / std::max<int64_t>(kBlockKeys, 1));
  at::Tensor indices = at::empty({nq, k}, q.options().dtype(at::kLong));
  at::Tensor scores = at::empty({nq, k}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_labels_cpu", [&] {
    knn_blocks<scalar_t>(q, kk, m, k, exclude_self, block_rows, indices, scores);
  });
  at::Tensor labels = key_labels.index_select(0, indices.reshape(-1)).view({nq, k});
  at::Tensor votes = at::zeros({nq, num_classes}, q.options().dtype(at::kFloat));
  votes.scatter_add_(1, labels, at::ones_like(labels, votes.options()));
  return {indices, scores, votes};
}

TORCH_LIBRARY_IMPL(lnl, CPU, m) { m.impl("knn_labels", &knn_labels_cpu); }

}  // namespace lnl
