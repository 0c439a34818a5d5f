// CPU kNN label retrieval. Two paths share one per-row running top-k (a candidate buffer with a
// threshold no larger than the current k-th best rank, see RowTopK) and one epilogue (sort, exact
// L2 distances, label votes):
//  * float32 on a CPU with AVX-512: a fused register-blocked GEMM micro-kernel (12 query rows x 32
//    keys in 24 zmm accumulators) whose scores never leave the registers unless they beat the
//    row's threshold: one compare per 16 candidates rejects almost everything. Keys are packed
//    once into 32-key panels; query blocks go to threads one at a time (parallel_blocks).
//  * everything else (float64, CPUs without AVX-512): per-thread cache-sized at::mm tiles, then a
//    threshold scan of each tile row.
// Keys reach each row in increasing index order, so a candidate equal to the k-th score always has
// a larger index and loses the tie: the strict '>' test is exact. Memory: Q*2k entries + tiles
// (+ one packed copy of the keys on the fused path).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define LNL_KNN_AVX512 1
#endif

#include "knn/knn.h"

namespace lnl {
namespace {

constexpr int64_t kGemmRows = 64;     // generic path: query rows per task
constexpr int64_t kGemmKeys = 1024;   // generic path: keys per at::mm tile
constexpr int64_t kFusedRows = 96;    // fused path: query rows per task (8 micro-blocks)
constexpr int kMR = 12;               // fused micro-tile rows
constexpr int kNR = 32;               // fused micro-tile keys (two zmm)

// True when (ra, ia) ranks strictly before (rb, ib): higher rank, ties broken by the lower index.
template <typename T>
inline bool better(T ra, int64_t ia, T rb, int64_t ib) {
  return ra > rb || (ra == rb && ia < ib);
}

template <typename T>
struct Entry {
  T rank;
  int64_t index;
};

template <typename T>
inline bool entry_better(const Entry<T>& a, const Entry<T>& b) {
  return better(a.rank, a.index, b.rank, b.index);
}

// Capacity of a row's candidate buffer: k kept entries plus room for at least 32 newcomers.
inline int64_t buffer_capacity(int64_t k) { return k + std::max<int64_t>(k, 32); }

// The running top-k of one query row: an unsorted buffer of candidates that beat `thr`. When it
// fills, nth_element keeps the k best and `thr` becomes the k-th best rank, so each newcomer costs
// an append plus an amortised linear share of a compaction (a heap would pay log k per insert).
// thr only lags the true k-th rank (never exceeds it), so no candidate that belongs is refused.
template <typename T>
struct RowTopK {
  Entry<T>* entries;
  int64_t size;
  int64_t k;
  int64_t capacity;
  T thr;

  T threshold() const { return thr; }

  void offer(T r, int64_t i) {
    if (!(r > thr)) return;
    entries[size++] = {r, i};
    if (size == capacity) {
      std::nth_element(entries, entries + (k - 1), entries + size, entry_better<T>);
      size = k;
      thr = entries[k - 1].rank;
    }
  }
};

// Candidate buffers of every query row: Q * buffer_capacity(k) entries plus size and threshold.
template <typename T>
struct TopKBuffers {
  std::vector<Entry<T>> entries;
  std::vector<int64_t> size;
  std::vector<T> thr;
  int64_t k, capacity;
  TopKBuffers(int64_t q, int64_t k_)
      : entries(q * buffer_capacity(k_)),
        size(q, 0),
        thr(q, -std::numeric_limits<T>::infinity()),
        k(k_),
        capacity(buffer_capacity(k_)) {}
  RowTopK<T> row(int64_t r) {
    return {entries.data() + r * capacity, size[r], k, capacity, thr[r]};
  }
  void store(int64_t r, const RowTopK<T>& h) {
    size[r] = h.size;
    thr[r] = h.thr;
  }
};

// Runs body(scratch, block) for blocks [0, n) on ATen's threads. Blocks are handed out one at a
// time from a shared counter, so a thread slowed by other load on the machine does not hold back
// the rest (a static split would); each thread makes its own scratch with make_scratch().
template <typename MakeScratch, typename Body>
void parallel_blocks(int64_t n, const MakeScratch& make_scratch, const Body& body) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    auto scratch = make_scratch();
    for (int64_t b = next.fetch_add(1); b < n; b = next.fetch_add(1)) body(scratch, b);
  });
}

// ---------------------------------------------------------------------------------------------
// Generic path: at::mm tiles of kGemmRows x kGemmKeys per task, kept in cache, then a scan.
// rank = q.k (cosine/ip) or q.k - |k|^2/2 (l2: the same order as the distance, per query row).
template <typename T>
void scan_tile_row(RowTopK<T>& h, const T* row, const T* half_sq, int64_t first_key, int64_t count,
                   int64_t skip_key) {
  constexpr int64_t kChunk = 16;
  T thr = h.threshold();
  for (int64_t j0 = 0; j0 < count; j0 += kChunk) {
    const int64_t n = std::min(kChunk, count - j0);
    T best = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < n; ++j) {  // vectorisable max: one compare per chunk in the common case
      const T v = half_sq ? row[j0 + j] - half_sq[j0 + j] : row[j0 + j];
      best = std::max(best, v);
    }
    if (!(best > thr)) continue;
    for (int64_t j = 0; j < n; ++j) {
      const T v = half_sq ? row[j0 + j] - half_sq[j0 + j] : row[j0 + j];
      const int64_t key = first_key + j0 + j;
      if (v > thr && key != skip_key) {
        h.offer(v, key);
        thr = h.threshold();
      }
    }
  }
}

template <typename T>
void search_gemm(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& half_sq,
                 bool exclude_self, int64_t block_rows, TopKBuffers<T>& heaps) {
  const int64_t nq = q.size(0), nk = keys.size(0);
  const int64_t n_blocks = (nq + block_rows - 1) / block_rows;
  const T* hs = half_sq.defined() ? half_sq.data_ptr<T>() : nullptr;
  parallel_blocks(
      n_blocks, [&] { return at::empty({block_rows, kGemmKeys}, q.options()); },
      [&](at::Tensor& tile, int64_t b) {
        const int64_t r0 = b * block_rows, rows = std::min(block_rows, nq - r0);
        at::Tensor qb = q.narrow(0, r0, rows);
        for (int64_t c0 = 0; c0 < nk; c0 += kGemmKeys) {
          const int64_t cols = std::min(kGemmKeys, nk - c0);
          at::Tensor t = tile.narrow(0, 0, rows).narrow(1, 0, cols);
          at::mm_out(t, qb, keys.narrow(0, c0, cols).t());
          const T* tp = t.data_ptr<T>();
          for (int64_t r = 0; r < rows; ++r) {
            RowTopK<T> h = heaps.row(r0 + r);
            scan_tile_row(h, tp + r * t.stride(0), hs ? hs + c0 : nullptr, c0, cols,
                          exclude_self ? r0 + r : -1);
            heaps.store(r0 + r, h);
          }
        }
      });
}

// ---------------------------------------------------------------------------------------------
// Fused float32 AVX-512 path.
#ifdef LNL_KNN_AVX512
// Keys as panels of kNR: panel p holds keys [p*kNR, p*kNR + kNR) laid out [d][kNR], zero padded.
void pack_key_panels(const float* keys, int64_t n, int64_t d, float* out) {
  const int64_t panels = (n + kNR - 1) / kNR;
  at::parallel_for(0, panels, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dst = out + p * d * kNR;
      for (int j = 0; j < kNR; ++j) {
        const int64_t key = p * kNR + j;
        for (int64_t t = 0; t < d; ++t) dst[t * kNR + j] = key < n ? keys[key * d + t] : 0.f;
      }
    }
  });
}

// Query rows [r0, r0 + rows) as micro-panels of kMR laid out [d][kMR]; missing rows repeat the
// last one.
void pack_query_panels(const float* q, int64_t r0, int64_t rows, int64_t d, float* out) {
  for (int64_t m = 0; m * kMR < rows; ++m) {
    float* dst = out + m * d * kMR;
    for (int r = 0; r < kMR; ++r) {
      const int64_t src = r0 + std::min<int64_t>(m * kMR + r, rows - 1);
      for (int64_t t = 0; t < d; ++t) dst[t * kMR + r] = q[src * d + t];
    }
  }
}

// Offers the kNR scores of one micro-tile row that beat the row's threshold (bits of `mask`).
inline void offer_masked(RowTopK<float>& h, const float* v, uint32_t mask, int64_t first_key) {
  while (mask) {
    const int bit = __builtin_ctz(mask);
    mask &= mask - 1;
    if (v[bit] > h.threshold()) h.offer(v[bit], first_key + bit);
  }
}

// One micro-block (kMR packed query rows) against the key panels [p0, p1): GEMM in registers,
// then the threshold test per row and key half.
__attribute__((target("avx512f,fma"))) void micro_block(
    const float* ap, const float* panels, const float* half_sq, int64_t d, int64_t p0, int64_t p1,
    int64_t nk, int64_t row0, int rows, bool exclude_self, TopKBuffers<float>& heaps, float* thr) {
  alignas(64) float buf[kNR];
  for (int64_t p = p0; p < p1; ++p) {
    const float* bp = panels + p * d * kNR;
    __m512 acc[kMR][2];
#pragma GCC unroll 12
    for (int r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t t = 0; t < d; ++t) {
      const __m512 b0 = _mm512_loadu_ps(bp + t * kNR), b1 = _mm512_loadu_ps(bp + t * kNR + 16);
#pragma GCC unroll 12
      for (int r = 0; r < kMR; ++r) {
        const __m512 a = _mm512_set1_ps(ap[t * kMR + r]);
        acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
      }
    }
    const int64_t key0 = p * kNR;
    uint32_t valid = nk - key0 >= kNR ? 0xffffffffu : ((1u << (nk - key0)) - 1u);
    __m512 h0 = _mm512_setzero_ps(), h1 = _mm512_setzero_ps();
    if (half_sq) {
      h0 = _mm512_loadu_ps(half_sq + key0);
      h1 = _mm512_loadu_ps(half_sq + key0 + 16);
    }
#pragma GCC unroll 12
    for (int r = 0; r < kMR; ++r) {
      if (r >= rows) break;
      const __m512 v0 = _mm512_sub_ps(acc[r][0], h0), v1 = _mm512_sub_ps(acc[r][1], h1);
      const __m512 tv = _mm512_set1_ps(thr[r]);
      uint32_t mask = uint32_t(_mm512_cmp_ps_mask(v0, tv, _CMP_GT_OQ)) |
                      (uint32_t(_mm512_cmp_ps_mask(v1, tv, _CMP_GT_OQ)) << 16);
      mask &= valid;
      const int64_t self = row0 + r - key0;
      if (exclude_self && self >= 0 && self < kNR) mask &= ~(1u << self);
      if (!mask) continue;
      _mm512_store_ps(buf, v0);
      _mm512_store_ps(buf + 16, v1);
      RowTopK<float> h = heaps.row(row0 + r);
      offer_masked(h, buf, mask, key0);
      heaps.store(row0 + r, h);
      thr[r] = h.threshold();
    }
  }
}

void search_fused(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& half_sq,
                  bool exclude_self, int64_t block_rows, TopKBuffers<float>& heaps) {
  const int64_t nq = q.size(0), nk = keys.size(0), d = q.size(1);
  const int64_t panels = (nk + kNR - 1) / kNR;
  at::Tensor packed = at::empty({panels * d * kNR}, keys.options());
  pack_key_panels(keys.data_ptr<float>(), nk, d, packed.data_ptr<float>());
  // The half norms are padded to whole panels so the last panel's loads stay in bounds.
  at::Tensor hs;
  if (half_sq.defined()) hs = at::constant_pad_nd(half_sq, {0, panels * kNR - nk}, 0);
  const float* hsp = hs.defined() ? hs.data_ptr<float>() : nullptr;
  // Panels per key block: about 256 KB of packed keys, so a block stays in L2 across micro-blocks.
  const int64_t block_panels = std::max<int64_t>(1, (int64_t(1) << 16) / (d * kNR));
  const int64_t n_blocks = (nq + block_rows - 1) / block_rows;
  const float* qp = q.data_ptr<float>();
  const int64_t micro = (block_rows + kMR - 1) / kMR;
  struct Scratch {
    std::vector<float> ap, thr;  // packed query rows, per-row thresholds
  };
  const auto make_scratch = [&] {
    return Scratch{std::vector<float>(micro * kMR * d), std::vector<float>(micro * kMR)};
  };
  parallel_blocks(
      n_blocks, make_scratch,
      [&](Scratch& sc, int64_t b) {
        const int64_t r0 = b * block_rows, rows = std::min(block_rows, nq - r0);
        pack_query_panels(qp, r0, rows, d, sc.ap.data());
        std::fill(sc.thr.begin(), sc.thr.end(), -std::numeric_limits<float>::infinity());
        for (int64_t p0 = 0; p0 < panels; p0 += block_panels) {
          const int64_t p1 = std::min(panels, p0 + block_panels);
          for (int64_t m = 0; m * kMR < rows; ++m) {
            const int mrows = static_cast<int>(std::min<int64_t>(kMR, rows - m * kMR));
            micro_block(sc.ap.data() + m * kMR * d, packed.data_ptr<float>(), hsp, d, p0, p1, nk,
                        r0 + m * kMR, mrows, exclude_self, heaps, sc.thr.data() + m * kMR);
          }
        }
      });
}

bool has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

// The fused path exists for float32 only; other dtypes (and CPUs without AVX-512) return false.
template <typename T>
bool search_fused_if_supported(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                               int64_t, TopKBuffers<T>&) {
  return false;
}

bool search_fused_if_supported(const at::Tensor& q, const at::Tensor& keys,
                               const at::Tensor& half_sq, bool exclude_self, int64_t chunk,
                               TopKBuffers<float>& heaps) {
#ifdef LNL_KNN_AVX512
  if (has_avx512() && q.size(1) > 0) {
    search_fused(q, keys, half_sq, exclude_self, chunk > 0 ? chunk : kFusedRows, heaps);
    return true;
  }
#endif
  return false;
}

// ---------------------------------------------------------------------------------------------
// Epilogue: each row's k best sorted best first; l2 scores become exact Euclidean distances of the
// returned pairs (double accumulation, as the float64 oracle); votes count the neighbours' labels.
template <typename T>
void finish_rows(TopKBuffers<T>& heaps, const at::Tensor& q, const at::Tensor& keys, bool l2,
                 const int64_t* labels, at::Tensor& indices, at::Tensor& scores,
                 at::Tensor& votes) {
  const int64_t nq = q.size(0), d = q.size(1), k = heaps.k, c = votes.size(1);
  int64_t* out_idx = indices.data_ptr<int64_t>();
  T* out_score = scores.data_ptr<T>();
  float* out_votes = votes.data_ptr<float>();
  const T* qp = q.data_ptr<T>();
  const T* kp = keys.data_ptr<T>();
  at::parallel_for(0, nq, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      Entry<T>* row = heaps.entries.data() + r * heaps.capacity;
      std::partial_sort(row, row + k, row + heaps.size[r], entry_better<T>);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t key = row[j].index;
        out_idx[r * k + j] = key;
        out_votes[r * c + labels[key]] += 1.f;
        if (!l2) {
          out_score[r * k + j] = row[j].rank;
          continue;
        }
        double acc = 0;
        for (int64_t t = 0; t < d; ++t) {
          const double diff = double(qp[r * d + t]) - double(kp[key * d + t]);
          acc += diff * diff;
        }
        out_score[r * k + j] = static_cast<T>(std::sqrt(acc));
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_cpu(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk) {
  const KnnMetric m =
      check_knn_inputs(queries, keys, key_labels, k, num_classes, metric, exclude_self);
  TORCH_CHECK(queries.scalar_type() == at::kFloat || queries.scalar_type() == at::kDouble,
              "knn_labels (CPU): queries must be float32 or float64, got ", queries.scalar_type());
  TORCH_CHECK(chunk >= 0, "knn_labels: chunk must be >= 0, got ", chunk);
  at::Tensor labels = key_labels.contiguous();
  if (labels.numel() > 0) {  // the vote histogram indexes with these labels
    const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_classes, "knn_labels: key_labels must lie in [0, num_classes=",
                num_classes, "), got range [", lo, ", ", hi, "]");
  }
  at::Tensor q = queries.contiguous(), kk = keys.contiguous();
  if (m == KnnMetric::kCosine) {  // same ops and eps as torch.nn.functional.normalize
    q = q / q.norm(2, 1, true).clamp_min(1e-12).expand_as(q);
    kk = kk / kk.norm(2, 1, true).clamp_min(1e-12).expand_as(kk);
  }
  const bool l2 = m == KnnMetric::kL2;
  // l2 ranks by q.k - |k|^2/2, which orders keys as the distance does for a fixed query row.
  at::Tensor half_sq = l2 ? kk.pow(2).sum(1).mul_(0.5) : at::Tensor();
  const int64_t nq = q.size(0);
  at::Tensor indices = at::empty({nq, k}, q.options().dtype(at::kLong));
  at::Tensor scores = at::empty({nq, k}, q.options());
  at::Tensor votes = at::zeros({nq, num_classes}, q.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_labels_cpu", [&] {
    TopKBuffers<scalar_t> heaps(nq, k);
    const bool fused = search_fused_if_supported(q, kk, half_sq, exclude_self, chunk, heaps);
    if (!fused) {
      search_gemm<scalar_t>(q, kk, half_sq, exclude_self, chunk > 0 ? chunk : kGemmRows, heaps);
    }
    finish_rows<scalar_t>(heaps, q, kk, l2, labels.data_ptr<int64_t>(), indices, scores, votes);
  });
  return {indices, scores, votes};
}

TORCH_LIBRARY_IMPL(lnl, CPU, m) { m.impl("knn_labels", &knn_labels_cpu); }

}  // namespace lnl
