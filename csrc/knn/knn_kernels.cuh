// Device code of the CUDA kNN kernels (host side: knn_cuda.cu).
//
// knn_tile_kernel<scalar_t, BQ>: one block owns BQ query rows (32; 128 for 16-bit inputs with small
// k, which reads each key tile 4x less often) and streams every key in tiles of kBK. Per tile it
// computes the BQ x kBK dot products from shared-memory stages (float32 inputs: fp32 FMAs over kBD
// dimensions; float16/bfloat16: tensor cores through wmma with fp32 accumulation over kBDH), turns
// them into ranks in shared memory, and each warp offers its rows' scores to that row's running
// top-k: a list in shared memory sorted best first (rank descending, ties by the lower key index).
// A candidate enters only if it beats the current k-th rank; keys reach a row in increasing index
// order, so a candidate equal to the k-th rank has the larger index and loses the tie, and one
// strict '>' against the k-th rank is the exact test. Only the lists (BQ * k entries) and one tile
// live per block: memory is O(Q*k) whatever N is.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

namespace lnl {
namespace knn_cuda {

constexpr int kBQ = 32;               // query rows per block
constexpr int kBQWide = 128;          // 16-bit path, small k: 4x fewer key reads per query
constexpr int kMaxWideK = 64;         // largest k of the wide blocks (their lists are 4x larger)
constexpr int kBK = 64;               // keys per tile
constexpr int kBD = 16;               // dimensions per shared-memory stage (fp32 path)
constexpr int kThreads = 256;         // fp32 path: 16 x 16 threads, each 2 rows x 4 keys
constexpr int kWarps = kThreads / 32;
constexpr int kMaxFastK = 256;        // larger k takes the sort-based fallback
constexpr int kSlots = kMaxFastK / 32;
constexpr unsigned kFull = 0xffffffffu;

constexpr int kBDH = 64;              // dimensions per 16-bit stage: 4 wmma k-steps per barrier pair
constexpr int kLdS = kBK + 4;         // score tile row stride (wmma float stores: multiple of 4)
constexpr int kLdH = kBDH + 8;        // 16-bit stage row stride (wmma: a multiple of 8)
// Stage bytes of a block of BQ rows: the larger of the fp32 stages (a [kBD][BQ], b [kBD][kBK]) and
// the 16-bit ones (a [BQ][kLdH], b [kBK][kLdH]).
template <int BQ>
constexpr int stage_bytes() {
  return 4 * (kBD * BQ + kBD * kBK) > 2 * (BQ + kBK) * kLdH ? 4 * (kBD * BQ + kBD * kBK)
                                                            : 2 * (BQ + kBK) * kLdH;
}
static_assert(stage_bytes<kBQ>() % 128 == 0 && (kBQ * kLdS * 4) % 128 == 0, "aligned smem regions");
static_assert(stage_bytes<kBQWide>() % 128 == 0 && (kBQWide * kLdS * 4) % 128 == 0, "aligned smem regions");
static_assert(kBQ == 32 && kBK == 64 && kBD == 16 && kThreads == 256, "thread maps assume these");
static_assert(kBDH % 16 == 0, "whole wmma k-steps per 16-bit stage");

// Shared-memory bytes of knn_tile_kernel<., BQ> for a given k: stages, score tile, lists.
template <int BQ>
inline size_t tile_kernel_smem(int k) {
  return stage_bytes<BQ>() + sizeof(float) * BQ * kLdS + (sizeof(float) + sizeof(int)) * size_t(BQ) * k;
}

// Inserts (v, key) into the sorted list (rank, index)[0, size) of capacity k, whole warp together.
// The caller guarantees v beats the current k-th entry, and key exceeds every index in the list.
__device__ inline void list_insert(float* rank, int* index, int size, int k, float v, int key,
                                   int lane) {
  int pos = 0;  // entries that stay ahead: rank >= v (equal ranks hold lower indices)
  for (int base = 0; base < size; base += 32) {
    const int i = base + lane;
    pos += __popc(__ballot_sync(kFull, i < size && rank[i] >= v));
  }
  if (pos >= k) return;  // cannot happen when v beats the k-th entry; kept as a guard
  const int last = size < k ? size : k - 1;  // entries [pos, last) move one slot down
  float moved_rank[kSlots];
  int moved_index[kSlots];
#pragma unroll
  for (int t = 0; t < kSlots; ++t) {
    const int i = pos + 1 + lane + 32 * t;
    if (i <= last) {
      moved_rank[t] = rank[i - 1];
      moved_index[t] = index[i - 1];
    }
  }
  __syncwarp();  // every read of the old list happens before any write
#pragma unroll
  for (int t = 0; t < kSlots; ++t) {
    const int i = pos + 1 + lane + 32 * t;
    if (i <= last) {
      rank[i] = moved_rank[t];
      index[i] = moved_index[t];
    }
  }
  if (lane == 0) {
    rank[pos] = v;
    index[pos] = key;
  }
  __syncwarp();
}

// Rank to beat for a list holding `size` of k entries.
__device__ inline float list_threshold(const float* rank, int size, int k) {
  return size < k ? -CUDART_INF_F : rank[k - 1];
}

// Element type of the tensor-core path for a 16-bit input, or void (fp32 FMA path).
template <typename scalar_t> struct WmmaType { using type = void; };
template <> struct WmmaType<c10::Half> { using type = __half; };
template <> struct WmmaType<c10::BFloat16> { using type = __nv_bfloat16; };

// fp32 FMA path: the kBQ x kBK dot products of the tile into s_s (row stride kLdS). Each thread
// owns rows 2 ty + i and keys tx + 16 j; stages of kBD dimensions pass through a_s [kBD][kBQ] and
// b_s [kBD][kBK] as float, zero-padded past Q, N and D.
template <typename scalar_t>
__device__ void simt_tile_dots(const scalar_t* __restrict__ queries,
                               const scalar_t* __restrict__ keys, int nq, int nk, int d,
                               int q0, int tile0, float* a_s, float* b_s, float* s_s) {
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[2][4] = {};
  for (int d0 = 0; d0 < d; d0 += kBD) {
    for (int e = tid; e < kBQ * kBD; e += kThreads) {
      const int row = e / kBD, dd = e % kBD;
      const bool ok = q0 + row < nq && d0 + dd < d;
      a_s[dd * kBQ + row] = ok ? static_cast<float>(queries[int64_t(q0 + row) * d + d0 + dd]) : 0.f;
    }
    for (int e = tid; e < kBK * kBD; e += kThreads) {
      const int key = e / kBD, dd = e % kBD;
      const bool ok = tile0 + key < nk && d0 + dd < d;
      b_s[dd * kBK + key] = ok ? static_cast<float>(keys[int64_t(tile0 + key) * d + d0 + dd]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int dd = 0; dd < kBD; ++dd) {
      const float a0 = a_s[dd * kBQ + 2 * ty], a1 = a_s[dd * kBQ + 2 * ty + 1];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float b = b_s[dd * kBK + tx + 16 * j];
        acc[0][j] = fmaf(a0, b, acc[0][j]);
        acc[1][j] = fmaf(a1, b, acc[1][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) s_s[(2 * ty + i) * kLdS + tx + 16 * j] = acc[i][j];
  }
}

// dst[r][dd] (row stride kLdH) = src[row0 + r, d0 + dd] as raw 16-bit values for r < rows,
// dd < kBDH; zero past `valid` rows and past d. Rows start 16-byte aligned when d % 8 == 0 and src
// is 16-byte aligned: then 8 values per load (d0 is a multiple of 64, so a vector never straddles
// d), else one.
template <int rows>
__device__ __forceinline__ void stage_16bit(const uint16_t* __restrict__ src, int64_t row0, int valid,
                                            int d, int d0, bool vec, uint16_t* dst) {
  if (vec) {
    constexpr int kVecs = kBDH / 8;
    for (int e = threadIdx.x; e < rows * kVecs; e += kThreads) {
      const int r = e / kVecs, dd = (e % kVecs) * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < valid && d0 + dd < d) v = *reinterpret_cast<const uint4*>(src + (row0 + r) * d + d0 + dd);
      *reinterpret_cast<uint4*>(dst + r * kLdH + dd) = v;
    }
    return;
  }
  for (int e = threadIdx.x; e < rows * kBDH; e += kThreads) {
    const int r = e / kBDH, dd = e % kBDH;
    dst[r * kLdH + dd] = r < valid && d0 + dd < d ? src[(row0 + r) * d + d0 + dd] : uint16_t(0);
  }
}

// Tensor-core path for 16-bit inputs (wmma m16n16k16, fp32 accumulation): the 8 warps tile the
// BQ x 64 scores as (BQ / 16) x 4 fragments, kFrags per warp along one fragment row (BQ = 32: one
// each; BQ = 128: a row of four, sharing the A fragment). Stages of kBDH dimensions hold the raw
// 16-bit values: a_s row-major [BQ][kLdH] (matrix_a row_major) and b_s key-major [kBK][kLdH]
// (matrix_b col_major: element (dd, key) at key * kLdH + dd), zero-padded past Q, N and D; each warp
// runs kBDH / 16 k-steps per stage, between one pair of barriers.
template <typename scalar_t, typename mma_t, int BQ>
__device__ void wmma_tile_dots(const scalar_t* __restrict__ queries,
                               const scalar_t* __restrict__ keys, int nq, int nk, int d,
                               int q0, int tile0, uint16_t* a_s, float* s_s) {
  using namespace nvcuda;
  constexpr int kFrags = (BQ / 16) * (kBK / 16) / kWarps;
  static_assert(kFrags >= 1 && (kBK / 16) % kFrags == 0, "a warp's fragments share one fragment row");
  uint16_t* b_s = a_s + BQ * kLdH;
  const int warp = threadIdx.x / 32, wr = warp * kFrags / 4, wc = warp * kFrags % 4;
  const uint16_t* qb = reinterpret_cast<const uint16_t*>(queries);
  const uint16_t* kb = reinterpret_cast<const uint16_t*>(keys);
  const bool vec = d % 8 == 0 && reinterpret_cast<uintptr_t>(qb) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(kb) % 16 == 0;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFrags];
#pragma unroll
  for (int j = 0; j < kFrags; ++j) wmma::fill_fragment(acc[j], 0.f);
  for (int d0 = 0; d0 < d; d0 += kBDH) {
    stage_16bit<BQ>(qb, q0, nq - q0, d, d0, vec, a_s);
    stage_16bit<kBK>(kb, tile0, nk - tile0, d, d0, vec, b_s);
    __syncthreads();
    const int steps = min(kBDH, d - d0 + 15) / 16;  // k-steps holding data (the rest are zeros)
    for (int kk = 0; kk < steps; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, mma_t, wmma::row_major> a;
      wmma::load_matrix_sync(a, reinterpret_cast<const mma_t*>(a_s + wr * 16 * kLdH + kk * 16), kLdH);
#pragma unroll
      for (int j = 0; j < kFrags; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, mma_t, wmma::col_major> b;
        wmma::load_matrix_sync(b, reinterpret_cast<const mma_t*>(b_s + (wc + j) * 16 * kLdH + kk * 16), kLdH);
        wmma::mma_sync(acc[j], a, b, acc[j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < kFrags; ++j)
    wmma::store_matrix_sync(s_s + wr * 16 * kLdS + (wc + j) * 16, acc[j], kLdS, wmma::mem_row_major);
}

// Offers one row's kBK tile ranks (s_row) to its list, the whole warp together, lowest key first.
__device__ inline void offer_tile_row(const float* s_row, float* rank, int* index, int& size,
                                      float& thr, int k, int tile0, int lane) {
  for (int c = 0; c < kBK; c += 32) {
    const float v = s_row[c + lane];
    unsigned pass = __ballot_sync(kFull, v > thr);
    while (pass) {  // lowest lane first: increasing key index
      const int src = __ffs(pass) - 1;
      pass &= pass - 1;
      const float cand = __shfl_sync(kFull, v, src);
      if (!(cand > thr)) continue;  // the k-th rank rose since the ballot
      list_insert(rank, index, size, k, cand, tile0 + c + src, lane);
      size = size < k ? size + 1 : k;
      thr = list_threshold(rank, size, k);
    }
  }
}

// inv_qn Tensor[Q], inv_kn Tensor[N] float or null: cosine of raw 16-bit inputs (the dot times both
// inverse norms, so the inputs are rounded once, by the caller, not again after normalising).
// queries Tensor[Q, D], keys Tensor[N, D] (scalar_t), half_sq Tensor[N] float or null (l2 ranks by
// q.k - |k|^2/2). Writes the k best (rank, index) of each row to out_rank / out_index [Q, k].
template <typename scalar_t, int BQ>
__global__ void __launch_bounds__(kThreads) knn_tile_kernel(
    const scalar_t* __restrict__ queries, const scalar_t* __restrict__ keys,
    const float* __restrict__ half_sq, const float* __restrict__ inv_qn, const float* __restrict__ inv_kn,
    int nq, int nk, int d, int k, bool exclude_self, float* __restrict__ out_rank,
    int64_t* __restrict__ out_index) {
  using mma_t = typename WmmaType<scalar_t>::type;
  static_assert(BQ == kBQ || (BQ == kBQWide && !std::is_void_v<mma_t>), "wide blocks: 16-bit inputs only");
  constexpr int kRowsPerWarp = BQ / kWarps;
  extern __shared__ __align__(128) unsigned char smem[];
  float* s_s = reinterpret_cast<float*>(smem + stage_bytes<BQ>());       // [BQ][kLdS]
  float* list_rank = s_s + BQ * kLdS;                                    // [BQ][k]
  int* list_index = reinterpret_cast<int*>(list_rank + BQ * k);          // [BQ][k]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int q0 = blockIdx.x * BQ;
  int size[kRowsPerWarp];
  float thr[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    size[r] = 0;
    thr[r] = -CUDART_INF_F;
  }
  for (int tile0 = 0; tile0 < nk; tile0 += kBK) {
    if constexpr (std::is_void_v<mma_t>) {
      float* a_s = reinterpret_cast<float*>(smem);
      simt_tile_dots(queries, keys, nq, nk, d, q0, tile0, a_s, a_s + kBD * kBQ, s_s);
    } else {
      wmma_tile_dots<scalar_t, mma_t, BQ>(queries, keys, nq, nk, d, q0, tile0,
                                          reinterpret_cast<uint16_t*>(smem), s_s);
    }
    __syncthreads();
    // Ranks; keys past N and each row's own key (exclude_self) can never enter a list.
    for (int e = tid; e < BQ * kBK; e += kThreads) {
      const int row = e / kBK, col = e % kBK, key = tile0 + col;
      float v = s_s[row * kLdS + col];
      if (half_sq != nullptr && key < nk) v -= half_sq[key];
      if (inv_kn != nullptr && key < nk && q0 + row < nq) v *= inv_qn[q0 + row] * inv_kn[key];
      if (key >= nk || (exclude_self && key == q0 + row)) v = -CUDART_INF_F;
      s_s[row * kLdS + col] = v;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      if (q0 + row >= nq) continue;  // uniform over the warp
      offer_tile_row(s_s + row * kLdS, list_rank + row * k, list_index + row * k, size[r], thr[r],
                     k, tile0, lane);
    }
    __syncthreads();  // s_s is rewritten by the next tile (with no stage barrier before it when D = 0)
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = warp * kRowsPerWarp + r;
    if (q0 + row >= nq) continue;
    for (int j = lane; j < k; j += 32) {
      const bool filled = j < size[r];  // always true when k <= N (checked on the host)
      out_rank[int64_t(q0 + row) * k + j] = filled ? list_rank[row * k + j] : -CUDART_INF_F;
      out_index[int64_t(q0 + row) * k + j] = filled ? list_index[row * k + j] : -1;
    }
  }
}

// Epilogue over Q*k (row, neighbour) pairs: l2 scores become the Euclidean distance of the pair
// recomputed from the inputs, and votes[row, label] counts neighbours with atomicAdd of 1.0
// (integer-valued float sums: exact and order independent, hence deterministic). Labels outside
// [0, num_classes) are skipped rather than checked on the host, which would synchronise.
template <typename scalar_t, typename score_t>
__global__ void knn_finish_kernel(const scalar_t* __restrict__ queries,
                                  const scalar_t* __restrict__ keys,
                                  const int64_t* __restrict__ labels, int64_t nq, int d, int k,
                                  int64_t num_classes, bool l2, const int64_t* __restrict__ index,
                                  score_t* __restrict__ scores, float* __restrict__ votes) {
  const int64_t pair = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pair >= nq * k) return;
  const int64_t row = pair / k, key = index[pair];
  if (key < 0) return;
  const int64_t label = labels[key];
  if (label >= 0 && label < num_classes) atomicAdd(votes + row * num_classes + label, 1.f);
  if (!l2) return;
  // float64 sum and sqrt, as the CPU twin (and out of --use_fast_math's reach, which only
  // approximates float32 sqrt): the distance then rounds once, to the score dtype.
  double acc = 0;
  for (int t = 0; t < d; ++t) {
    const double diff =
        static_cast<double>(queries[row * d + t]) - static_cast<double>(keys[key * d + t]);
    acc += diff * diff;
  }
  scores[pair] = static_cast<score_t>(sqrt(acc));
}

}  // namespace knn_cuda
}  // namespace lnl
