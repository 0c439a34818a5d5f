// CUDA kNN label retrieval (Python face: lnl/ops/knn.py; device code: knn_kernels.cuh).
//  * k <= 256 and float32/float16/bfloat16 inputs: knn_tile_kernel, a fused tiled fp32 GEMM with a
//    running top-k per query row in shared memory, streaming the keys (no Q x N buffer, any N). Its
//    grid is (query blocks, key slices): with too few query blocks to fill the device the keys are
//    split into slices whose partial top-k lists knn_merge_kernel merges, exactly (plan_tile_launches).
//    The queries (and, for tables of ~10^11 elements, the slices) go in several launches so that none
//    runs much past a second.
//  * k > 256 or float64: blocks of query rows through at::mm in float64 on the device, ranks, a stable
//    descending at::sort of each block (ties by the lower index), the first k columns kept.
// Both then run knn_finish_kernel (exact l2 distances of the returned pairs, label votes).
// No host synchronisation: a key label outside [0, num_classes) adds no vote instead of being
// checked here (the Python face lnl.ops.knn_labels rejects such labels before calling the op).
// Internal overrides (tests force the split and chunked paths on small shapes; benchmarks compare):
// LNL_KNN_SLICE_KEYS=n cuts the keys into slices of n (0 or unset: the automatic rule), and
// LNL_KNN_LAUNCH_MACS=m bounds the multiply-adds of one tile-kernel launch (0 or unset: kMaxLaunchMacs).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "knn/knn.h"
#include "knn/knn_kernels.cuh"
#include "knn/knn_select.cuh"

namespace lnl {
namespace {

using knn_cuda::kBQ;
using knn_cuda::kMaxFastK;
using knn_cuda::kThreads;

// Rows per fallback block when chunk is 0: a block of scores near 64M elements.
constexpr int64_t kFallbackElements = int64_t(1) << 26;

// What the block shape depends on (attribute queries: no synchronisation).
struct DeviceLimits {
  int max_smem_optin;  // bytes of dynamic shared memory a block may opt in to
  int sms;
};

DeviceLimits device_limits() {
  int dev = 0;
  DeviceLimits lim{};
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&lim.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&lim.sms, cudaDevAttrMultiProcessorCount, dev));
  return lim;
}

// Key slices (issue 23 item 3): ceil(Q / BQ) query blocks fill the device only with about
// kMinBlocksPerSm blocks per SM; with fewer (LRA's --knn_per_batch: 256 queries, 8 blocks on 132 SMs)
// the keys are cut into slices, a block per (query block, slice). A slice keeps at least
// max(kMinSliceKeys, 8 k) keys, so that filling its lists (k inserts at least) and the merge (one
// entry per slice and list slot) stay small next to its dot products, and at most kMaxSplits slices
// bound the merge's bisections (splits - 1 per entry).
constexpr int64_t kMinBlocksPerSm = 2;
constexpr int64_t kMinSliceKeys = 2048;
constexpr int64_t kMaxSplits = 64;
// Work of one launch (issue 23 item 9): at most 2^43 ~ 8.8e12 multiply-adds (query rows x keys x D).
// The fp32 path reaches perhaps a quarter of an H100's 33.5e12 fp32 FMA/s (a SIMT tile with a running
// top-k), ~8e12/s, so a launch lasts about a second there (less on the tensor cores, a few seconds on
// a GPU several times slower) instead of minutes for, say, a million queries against a million keys
// of 512 dimensions (5e14, some 60 launches). Launches queue on the stream without host waits.
constexpr int64_t kMaxLaunchMacs = int64_t(1) << 43;
// Partial-list entries held at once (12 bytes each): more query rows go in further launches.
constexpr int64_t kMaxScratchEntries = int64_t(1) << 22;
constexpr int64_t kMaxGridY = 65535;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A non-negative integer from the environment, or 0 when unset or empty.
int64_t env_count(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  TORCH_CHECK(*end == '\0' && v >= 0, "knn_labels (CUDA): ", name, " must be a non-negative integer, got '",
              text, "'");
  return v;
}

struct TilePlan {
  int64_t slice;              // keys per slice
  int64_t splits;             // slices, ceil(N / slice); several: partial lists, then the merge
  int64_t slices_per_launch;  // grid.y
  int64_t rows_per_launch;    // query rows per launch (a multiple of BQ unless it is all of Q)
};

TilePlan plan_tile_launches(int64_t nq, int64_t nk, int64_t d, int64_t k, int64_t bq, int64_t sms) {
  const int64_t macs_per_pair = std::max<int64_t>(d, 1);  // D = 0 still streams every key
  const int64_t macs = env_count("LNL_KNN_LAUNCH_MACS"), bound = macs > 0 ? macs : kMaxLaunchMacs;
  TilePlan plan{};
  plan.slice = env_count("LNL_KNN_SLICE_KEYS");
  if (plan.slice == 0) {
    const int64_t qblocks = ceil_div(nq, bq);
    int64_t splits = 1;
    if (qblocks < kMinBlocksPerSm * sms) {
      splits = std::min(ceil_div(kMinBlocksPerSm * sms, qblocks), kMaxSplits);
    }
    splits = std::min(splits, std::max<int64_t>(1, nk / std::max(kMinSliceKeys, 8 * k)));
    // One block's rows against one slice within the bound (binding only for ~10^11-element tables).
    splits = std::max(splits, ceil_div(bq * nk * macs_per_pair, bound));
    plan.slice = ceil_div(ceil_div(nk, splits), knn_cuda::kBK) * knn_cuda::kBK;  // whole tiles
  }
  plan.slice = std::min(plan.slice, nk);
  plan.splits = ceil_div(nk, plan.slice);
  plan.slices_per_launch =
      std::clamp<int64_t>(bound / (bq * plan.slice * macs_per_pair), 1, std::min(plan.splits, kMaxGridY));
  int64_t blocks = 1;  // query blocks per launch
  if (plan.slices_per_launch == plan.splits) blocks = std::max<int64_t>(1, bound / (bq * nk * macs_per_pair));
  if (plan.splits > 1) {
    blocks = std::min(blocks, std::max<int64_t>(1, kMaxScratchEntries / (bq * plan.splits * k)));
  }
  plan.rows_per_launch = std::min(nq, blocks * bq);
  return plan;
}

// Launches knn_tile_kernel<scalar_t, BQ> as plan_tile_launches says, after raising its shared-memory
// limit to attr_bytes: always the instantiation's largest, so that host threads launching with
// different k never lower it under each other (lists of 32 x 256 entries exceed the default 48 KB).
// With several slices, each launch's blocks write partial lists to scratch and knn_merge_kernel
// merges a chunk's rows once all its slices are done.
template <typename scalar_t, int BQ>
void launch_tile_kernel(const at::Tensor& q, const at::Tensor& keys, const float* hs, const float* iq,
                        const float* ik, int64_t k, bool exclude_self, size_t attr_bytes, int sms,
                        at::Tensor& rank, at::Tensor& indices) {
  const int64_t nq = q.size(0), nk = keys.size(0), d = q.size(1);
  auto kernel = knn_cuda::knn_tile_kernel<scalar_t, BQ>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(attr_bytes)));
  const size_t smem = knn_cuda::tile_kernel_smem<BQ>(static_cast<int>(k));
  const TilePlan plan = plan_tile_launches(nq, nk, d, k, BQ, sms);
  const bool split = plan.splits > 1;
  at::Tensor part_rank, part_index;
  if (split) {
    part_rank = at::empty({plan.rows_per_launch, plan.splits, k}, rank.options());
    part_index = at::empty({plan.rows_per_launch, plan.splits, k}, indices.options());
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t r0 = 0; r0 < nq; r0 += plan.rows_per_launch) {
    const int64_t rows = std::min(plan.rows_per_launch, nq - r0);
    float* out_rank = split ? part_rank.data_ptr<float>() : rank.data_ptr<float>() + r0 * k;
    int64_t* out_index = split ? part_index.data_ptr<int64_t>() : indices.data_ptr<int64_t>() + r0 * k;
    for (int64_t s0 = 0; s0 < plan.splits; s0 += plan.slices_per_launch) {
      const dim3 grid(static_cast<unsigned>(ceil_div(rows, BQ)),
                      static_cast<unsigned>(std::min(plan.slices_per_launch, plan.splits - s0)));
      kernel<<<grid, kThreads, smem, stream>>>(
          q.data_ptr<scalar_t>() + r0 * d, keys.data_ptr<scalar_t>(), hs, iq != nullptr ? iq + r0 : nullptr,
          ik, static_cast<int>(rows), static_cast<int>(nk), static_cast<int>(d), static_cast<int>(k),
          static_cast<int>(r0), exclude_self, static_cast<int>(plan.slice), static_cast<int>(s0), out_rank,
          out_index, plan.splits * k);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (split) {
      const int64_t entries = rows * plan.splits * k;
      knn_cuda::knn_merge_kernel<<<static_cast<unsigned>(ceil_div(entries, 256)), 256, 0, stream>>>(
          part_rank.data_ptr<float>(), part_index.data_ptr<int64_t>(), rows, static_cast<int>(plan.splits),
          static_cast<int>(k), rank.data_ptr<float>() + r0 * k, indices.data_ptr<int64_t>() + r0 * k);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
}

// 16-bit inputs with k <= kMaxWideK take blocks of 128 query rows (each key tile read once per 128
// queries, not 32) when their lists fit the device's shared memory and there are enough of them to
// give every SM a block; everything else takes blocks of 32.
void run_tile_kernel(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& half_sq,
                     const at::Tensor& inv_qn, const at::Tensor& inv_kn, int64_t k, bool exclude_self,
                     at::Tensor& rank, at::Tensor& indices) {
  using knn_cuda::kBQWide;
  using knn_cuda::tile_kernel_smem;
  const float* hs = half_sq.defined() ? half_sq.data_ptr<float>() : nullptr;
  const float* iq = inv_qn.defined() ? inv_qn.data_ptr<float>() : nullptr;
  const float* ik = inv_kn.defined() ? inv_kn.data_ptr<float>() : nullptr;
  const DeviceLimits lim = device_limits();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "knn_tile_kernel", [&] {
    if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
      const size_t wide_attr = std::min(static_cast<size_t>(lim.max_smem_optin),
                                        tile_kernel_smem<kBQWide>(knn_cuda::kMaxWideK));
      const bool wide = k <= knn_cuda::kMaxWideK &&
                        tile_kernel_smem<kBQWide>(static_cast<int>(k)) <= wide_attr &&
                        (q.size(0) + kBQWide - 1) / kBQWide >= lim.sms;
      if (wide) {
        launch_tile_kernel<scalar_t, kBQWide>(q, keys, hs, iq, ik, k, exclude_self, wide_attr, lim.sms, rank,
                                              indices);
        return;
      }
    }
    launch_tile_kernel<scalar_t, kBQ>(q, keys, hs, iq, ik, k, exclude_self, tile_kernel_smem<kBQ>(kMaxFastK),
                                      lim.sms, rank, indices);
  });
}

// Query blocks through at::mm in float64 (exact ties for the stable sort, and no TF32 whatever the
// global matmul setting), stable descending sort, first k kept.
void run_sort_fallback(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& half_sq,
                       int64_t k, bool exclude_self, int64_t chunk, at::Tensor& rank,
                       at::Tensor& indices) {
  const int64_t nq = q.size(0), nk = keys.size(0);
  const auto math = at::kDouble;
  const at::Tensor kk = keys.to(math);
  const at::Tensor half_sq64 = half_sq.defined() ? kk.pow(2).sum(1).mul_(0.5) : at::Tensor();
  const int64_t rows = chunk > 0 ? chunk : std::max<int64_t>(1, kFallbackElements / nk);
  for (int64_t r0 = 0; r0 < nq; r0 += rows) {
    const int64_t n = std::min(rows, nq - r0);
    at::Tensor s = at::mm(q.narrow(0, r0, n).to(math), kk.t());
    if (half_sq64.defined()) s.sub_(half_sq64.unsqueeze(0));
    if (exclude_self) {  // query r0 + i is key r0 + i
      s.diagonal(/*offset=*/r0, 0, 1).fill_(-std::numeric_limits<double>::infinity());
    }
    auto sorted = at::sort(s, /*stable=*/true, /*dim=*/1, /*descending=*/true);
    rank.narrow(0, r0, n).copy_(std::get<0>(sorted).narrow(1, 0, k));
    indices.narrow(0, r0, n).copy_(std::get<1>(sorted).narrow(1, 0, k));
  }
}

void run_finish_kernel(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& labels,
                       bool l2, const at::Tensor& indices, at::Tensor& scores, at::Tensor& votes) {
  const int64_t pairs = indices.numel();
  if (pairs == 0) return;
  const int threads = 256;
  const dim3 grid(static_cast<unsigned>((pairs + threads - 1) / threads));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "knn_finish", [&] {
    using input_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "knn_finish_scores", [&] {
      knn_cuda::knn_finish_kernel<input_t, scalar_t><<<grid, threads, 0, stream>>>(
          q.data_ptr<input_t>(), keys.data_ptr<input_t>(), labels.data_ptr<int64_t>(), q.size(0),
          static_cast<int>(q.size(1)), static_cast<int>(indices.size(1)), votes.size(1), l2,
          indices.data_ptr<int64_t>(), scores.data_ptr<scalar_t>(), votes.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void check_device_inputs(const at::Tensor& queries, const at::Tensor& keys,
                         const at::Tensor& labels) {
  TORCH_CHECK(queries.is_cuda() && keys.device() == queries.device() &&
                  labels.device() == queries.device(),
              "knn_labels (CUDA): queries, keys and key_labels must be on one CUDA device, got ",
              queries.device(), ", ", keys.device(), ", ", labels.device());
  // The tile loop steps int key offsets by kBK: keep the last step below INT_MAX.
  TORCH_CHECK(keys.size(0) < std::numeric_limits<int>::max() - knn_cuda::kBK &&
                  queries.size(0) < std::numeric_limits<int>::max(),
              "knn_labels (CUDA): N=", keys.size(0), " and Q=", queries.size(0),
              " must be below 2^31 - ", knn_cuda::kBK);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_cuda(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk) {
  const KnnMetric m =
      check_knn_inputs(queries, keys, key_labels, k, num_classes, metric, exclude_self);
  const auto dtype = queries.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "knn_labels (CUDA): queries must be float32/float64/float16/bfloat16, got ", dtype);
  TORCH_CHECK(chunk >= 0, "knn_labels: chunk must be >= 0, got ", chunk);
  check_device_inputs(queries, keys, key_labels);  // before the guard, which asserts a CUDA device
  const c10::cuda::OptionalCUDAGuard guard(queries.device());
  const at::Tensor labels = key_labels.contiguous();
  at::Tensor q = queries.contiguous(), kk = keys.contiguous();
  const bool sixteen_bit = dtype == at::kHalf || dtype == at::kBFloat16;
  const bool fast = k <= kMaxFastK && dtype != at::kDouble;
  at::Tensor inv_qn, inv_kn;
  if (m == KnnMetric::kCosine && sixteen_bit && fast) {
    // The tile kernel scales each dot by both inverse norms (float32, as F.normalize's clamp): the
    // 16-bit inputs go to the tensor cores as given, not normalised and rounded a second time.
    inv_qn = q.to(at::kFloat).norm(2, 1).clamp_min(1e-12).reciprocal();
    inv_kn = kk.to(at::kFloat).norm(2, 1).clamp_min(1e-12).reciprocal();
  } else if (m == KnnMetric::kCosine) {  // F.normalize in at least float32 (kept there for 16-bit)
    const auto math = dtype == at::kDouble ? at::kDouble : at::kFloat;
    q = q.to(math), kk = kk.to(math);
    q = q / q.norm(2, 1, true).clamp_min(1e-12).expand_as(q);
    kk = kk / kk.norm(2, 1, true).clamp_min(1e-12).expand_as(kk);
    if (fast) q = q.to(dtype), kk = kk.to(dtype);  // float32 inputs: unchanged dtype
  }
  const auto score_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const bool l2 = m == KnnMetric::kL2;
  // l2 ranks by q.k - |k|^2/2: the distance order for a fixed query row.
  const at::Tensor half_sq = l2 ? kk.to(score_dtype).pow(2).sum(1).mul_(0.5) : at::Tensor();
  const int64_t nq = q.size(0);
  at::Tensor indices = at::empty({nq, k}, q.options().dtype(at::kLong));
  at::Tensor scores = at::empty({nq, k}, q.options().dtype(score_dtype));
  at::Tensor votes = at::zeros({nq, num_classes}, q.options().dtype(at::kFloat));
  if (nq == 0) return {indices, scores, votes};
  if (fast) {
    run_tile_kernel(q, kk, half_sq, inv_qn, inv_kn, k, exclude_self, scores, indices);
  } else {
    run_sort_fallback(q, kk, half_sq, k, exclude_self, chunk, scores, indices);
  }
  run_finish_kernel(q, kk, labels, l2, indices, scores, votes);
  return {indices, scores, votes};
}

TORCH_LIBRARY_IMPL(lnl, CUDA, m) {
  m.impl("knn_labels", &knn_labels_cuda);
  m.impl("knn_labels_gemm", &knn_labels_gemm_cuda);  // the GEMM + select block below
}

// ===================================================================================================
// GEMM + select path (lnl::knn_labels_gemm; device code: knn_select.cuh). The design faiss and cuVS
// use for large problems: cuBLAS multiplies a block of query rows by a tile of keys into a float32
// score tile at tensor-core GEMM speed (the tile kernel's SIMT fp32 FMAs reach a fraction of it for
// float32 inputs, and its wmma loop re-stages every key tile per 32 or 128 queries), and one warp per
// query row offers its scores to the row's running top-k (knn_select_kernel). The cost is the score
// tile's round trip through memory (8 bytes per score, against D multiply-adds each): it pays for
// large D, and the tuner measures it against the tile kernel on the user's GPU (lnl/ops/_tune.py).
// Precision: float32 inputs run an fp32 GEMM; with TF32 (or bf16) float32 matmuls enabled, cuBLAS
// would round the inputs and rank near-ties differently from the exact kernels, which the first-use
// check on small integers cannot see: the op refuses float32 inputs then (Python's dispatch lists it
// as a reason and does not offer the candidate). 16-bit inputs run the 16-bit GEMM with fp32
// accumulation and output, as the tile kernel's wmma path. Same ranks and tie order as the tile
// kernel; equal results wherever the dot products are exact (the emulation's tests).
// ===================================================================================================
namespace {

constexpr int64_t kGemmTileElements = int64_t(1) << 26;  // 256 MB of float32 scores per tile
constexpr int64_t kGemmMaxRows = 8192;                     // query rows per block (chunk = 0)

// Whether cuBLAS may round float32 matmul inputs (TF32 or bf16). The CUDA matmul precision reflects
// both APIs (allow_tf32 / set_float32_matmul_precision and fp32_precision); the legacy getters raise
// once the new API was used.
bool reduced_precision_fp32_matmul() {
  auto& ctx = at::globalContext();
  auto precision = ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL);
  if (precision == at::Float32Precision::NONE) {
    precision = ctx.float32Precision(at::Float32Backend::GENERIC, at::Float32Op::ALL);
  }
  return precision == at::Float32Precision::TF32 || precision == at::Float32Precision::BF16;
}

// Scores a [rows, D] x b [cols, D]^T -> float32 [rows, cols]. 16-bit inputs: fp32 accumulation and
// output in cuBLAS (aten::mm.dtype); off a GPU (the CPU emulation, which lacks that kernel) float32
// copies give the same exact products of 16-bit values.
at::Tensor gemm_scores(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == at::kFloat) return at::mm(a, b.t());
  if (a.device().type() == at::kCUDA) return at::mm(a, b.t(), at::kFloat);
  return at::mm(a.to(at::kFloat), b.to(at::kFloat).t());
}

// Segments of each key tile: enough select warps for 16 per SM when the query rows are few (LRA's
// --knn_per_batch: 256 queries), at most 32 (one merge lane each) and none narrower than kBK keys.
int64_t select_segments(int64_t rows, int64_t cols) {
  const int64_t want = (int64_t(device_limits().sms) * 16 + rows - 1) / rows;
  return std::max<int64_t>(1, std::min({want, int64_t(32), (cols + knn_cuda::kBK - 1) / knn_cuda::kBK}));
}

struct SelectLists {
  at::Tensor rank, index, size;  // [segments][Q][k] float / int, [segments][Q] int
  int64_t segments;
};

void launch_select(const at::Tensor& s, int64_t q0, int64_t key0, int64_t cols, const float* hs,
                   const float* iq, const float* ik, bool exclude_self, int64_t k, SelectLists& lists,
                   bool last, at::Tensor& indices) {
  const int64_t rows = s.size(0), nq = indices.size(0);
  // segments share a tile's columns in whole kBK chunks (the last tile may leave some segments empty)
  const int64_t per_segment = (cols + lists.segments * knn_cuda::kBK - 1) / (lists.segments * knn_cuda::kBK);
  const dim3 grid(static_cast<unsigned>((rows + knn_cuda::kSelectWarps - 1) / knn_cuda::kSelectWarps),
                  static_cast<unsigned>(lists.segments));
  const size_t smem = knn_cuda::select_kernel_smem(static_cast<int>(k));
  knn_cuda::knn_select_kernel<<<grid, knn_cuda::kSelectWarps * 32, smem, c10::cuda::getCurrentCUDAStream()>>>(
      s.data_ptr<float>(), s.stride(0), static_cast<int>(rows), static_cast<int>(s.size(1)),
      static_cast<int>(per_segment * knn_cuda::kBK), static_cast<int>(q0), static_cast<int>(key0), nq, hs, iq,
      ik, exclude_self, static_cast<int>(k), lists.rank.data_ptr<float>(), lists.index.data_ptr<int>(),
      lists.size.data_ptr<int>(), last && lists.segments == 1, indices.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_merge(const SelectLists& lists, int64_t k, at::Tensor& scores, at::Tensor& indices) {
  const int64_t nq = indices.size(0);
  const dim3 grid(static_cast<unsigned>((nq + knn_cuda::kSelectWarps - 1) / knn_cuda::kSelectWarps));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  knn_cuda::knn_segment_merge_kernel<<<grid, knn_cuda::kSelectWarps * 32, 0, stream>>>(
      lists.rank.data_ptr<float>(), lists.index.data_ptr<int>(), lists.size.data_ptr<int>(),
      static_cast<int>(lists.segments), nq, static_cast<int>(k), scores.data_ptr<float>(),
      indices.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_gemm_tiles(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk, int64_t tile_elements) {
  const KnnMetric m = check_knn_inputs(queries, keys, key_labels, k, num_classes, metric, exclude_self);
  const auto dtype = queries.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "knn_labels_gemm: queries must be float32/float16/bfloat16, got ", dtype);
  TORCH_CHECK(k <= kMaxFastK, "knn_labels_gemm: k=", k, " must be at most ", kMaxFastK);
  TORCH_CHECK(dtype != at::kFloat || !reduced_precision_fp32_matmul(),
              "knn_labels_gemm: float32 inputs while TF32/bf16 float32 matmuls are enabled "
              "(torch.backends.cuda.matmul.allow_tf32 / set_float32_matmul_precision) would rank in "
              "reduced precision; use knn_labels");
  TORCH_CHECK(chunk >= 0 && tile_elements >= 0, "knn_labels_gemm: chunk must be >= 0, got ", chunk);
  check_device_inputs(queries, keys, key_labels);
  const c10::cuda::OptionalCUDAGuard guard(queries.device());
  const at::Tensor labels = key_labels.contiguous();
  at::Tensor q = queries.contiguous(), kk = keys.contiguous(), inv_qn, inv_kn;
  if (m == KnnMetric::kCosine && dtype != at::kFloat) {  // as the tile kernel: raw 16-bit dots, scaled
    inv_qn = q.to(at::kFloat).norm(2, 1).clamp_min(1e-12).reciprocal();
    inv_kn = kk.to(at::kFloat).norm(2, 1).clamp_min(1e-12).reciprocal();
  } else if (m == KnnMetric::kCosine) {
    q = q / q.norm(2, 1, true).clamp_min(1e-12).expand_as(q);
    kk = kk / kk.norm(2, 1, true).clamp_min(1e-12).expand_as(kk);
  }
  const bool l2 = m == KnnMetric::kL2;
  const at::Tensor half_sq = l2 ? kk.to(at::kFloat).pow(2).sum(1).mul_(0.5) : at::Tensor();
  const int64_t nq = q.size(0), nk = kk.size(0);
  at::Tensor indices = at::empty({nq, k}, q.options().dtype(at::kLong));
  at::Tensor scores = at::empty({nq, k}, q.options().dtype(at::kFloat));  // also the lists' ranks
  at::Tensor votes = at::zeros({nq, num_classes}, q.options().dtype(at::kFloat));
  if (nq == 0) return {indices, scores, votes};
  const float* hs = half_sq.defined() ? half_sq.data_ptr<float>() : nullptr;
  const float* iq = inv_qn.defined() ? inv_qn.data_ptr<float>() : nullptr;
  const float* ik = inv_kn.defined() ? inv_kn.data_ptr<float>() : nullptr;
  const int64_t budget = tile_elements > 0 ? tile_elements : kGemmTileElements;
  const int64_t rows = chunk > 0 ? chunk : std::min(nq, kGemmMaxRows);
  // a tile at least kBK keys wide; the select kernel offers partial kBK chunks as -inf past `width`
  const int64_t cols = std::min(nk, std::max<int64_t>(knn_cuda::kBK, budget / std::min(rows, nq)));
  SelectLists lists;
  lists.segments = select_segments(std::min(rows, nq), cols);
  // one segment: the lists' ranks are the scores output; several: knn_segment_merge_kernel writes it
  lists.rank = lists.segments == 1 ? scores : at::empty({lists.segments, nq, k}, scores.options());
  lists.index = at::empty({lists.segments, nq, k}, q.options().dtype(at::kInt));
  lists.size = at::zeros({lists.segments, nq}, q.options().dtype(at::kInt));
  for (int64_t r0 = 0; r0 < nq; r0 += rows) {
    const at::Tensor qb = q.narrow(0, r0, std::min(rows, nq - r0));
    for (int64_t c0 = 0; c0 < nk; c0 += cols) {
      const at::Tensor s = gemm_scores(qb, kk.narrow(0, c0, std::min(cols, nk - c0)));
      launch_select(s, r0, c0, cols, hs, iq, ik, exclude_self, k, lists, c0 + cols >= nk, indices);
    }
  }
  if (lists.segments > 1) launch_merge(lists, k, scores, indices);
  run_finish_kernel(q, kk, labels, l2, indices, scores, votes);
  return {indices, scores, votes};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_gemm_cuda(
    const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& key_labels, int64_t k,
    int64_t num_classes, c10::string_view metric, bool exclude_self, int64_t chunk) {
  return knn_labels_gemm_tiles(queries, keys, key_labels, k, num_classes, metric, exclude_self, chunk, 0);
}

}  // namespace lnl
