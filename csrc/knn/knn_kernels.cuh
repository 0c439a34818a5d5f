// Device code of the CUDA kNN kernels (host side: knn_cuda.cu).
//
// knn_tile_kernel<scalar_t, BQ>: block (x, y) owns BQ query rows (32; 128 for 16-bit inputs with small
// k, which reads each key tile 4x less often) and streams one slice of the keys (grid.y slices; one
// slice of all N unless the query blocks are too few to fill the device) in tiles of kBK. Per tile it
// computes the BQ x kBK dot products from shared-memory stages (float32 inputs: fp32 FMAs over kBD
// dimensions; float16/bfloat16: tensor cores through wmma with fp32 accumulation over kBDH), turns
// them into ranks in shared memory, and each warp offers its rows' scores to that row's running
// top-k: a list in shared memory sorted best first (rank descending, ties by the lower key index).
// A candidate enters only if it beats the current k-th rank; keys reach a row in increasing index
// order, so a candidate equal to the k-th rank has the larger index and loses the tie, and one
// strict '>' against the k-th rank is the exact test. Only the lists (BQ * k entries) and one tile
// live per block: memory is O(Q*k) whatever N is. The block writes its rows' lists (k entries each,
// unfilled ones as (-inf, -1)) to row q0 + r, slot `split` of the output.
//
// knn_merge_kernel: with several key slices, the slices' sorted lists of each row merge into the
// final k. Slice s holds only indices below those of slice s + 1, so the unsplit order (rank
// descending, ties by the lower index) is the order by (rank descending, slice, position): an entry's
// merged position is its own position plus, in every other slice's list, the entries ahead of it,
// counted by binary search. The result is the unsplit kernel's, bit for bit.
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
// fp32 stage strides, padded by 2 floats: a warp's stores then hit 32 distinct banks in both staging
// maps (scalar loads: 16 dimensions of 2 rows, bank 2 dd + row; float4 loads: 4 vectors of 8 rows,
// bank 8 v + 2 i + row for a vector's i-th value). Unpadded (stride 32 or 64) they fell on 2 (resp. 8)
// banks: 16-way (4-way) conflicts.
constexpr int kLdA = kBQ + 2;
constexpr int kLdB = kBK + 2;
// Stage bytes of a block of BQ rows: the larger of the fp32 stages (a [kBD][kLdA], b [kBD][kLdB]; only
// blocks of kBQ rows take them) and the 16-bit ones (a [BQ][kLdH], b [kBK][kLdH]).
template <int BQ>
constexpr int stage_bytes() {
  return 4 * kBD * (kLdA + kLdB) > 2 * (BQ + kBK) * kLdH ? 4 * kBD * (kLdA + kLdB) : 2 * (BQ + kBK) * kLdH;
}
static_assert(stage_bytes<kBQ>() % 128 == 0 && (kBQ * kLdS * 4) % 128 == 0, "aligned smem regions");
static_assert(stage_bytes<kBQWide>() % 128 == 0 && (kBQWide * kLdS * 4) % 128 == 0, "aligned smem regions");
static_assert(kBQ == 32 && kBK == 64 && kBD == 16 && kThreads == 256, "thread maps assume these");
static_assert(kLdA % 32 == 2 && kLdB % 32 == 2, "fp32 stage strides: conflict-free stores");
static_assert((4 * kBD * kLdA) % 16 == 0, "b_s follows a_s 16-byte aligned");
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

// dst[dd * ld + r] = src[row0 + r, d0 + dd] as float for r < rows, dd < kBD; zero past `valid` rows
// and past d. vec (float inputs, d % 4 == 0, src 16-byte aligned: every row starts aligned, and d0 is
// a multiple of 16, so a vector never straddles d): a float4 of 4 dimensions per thread, 4 threads a
// row; else one value per thread, dimensions fastest (16 consecutive values per row).
template <int rows, int ld, typename scalar_t>
__device__ __forceinline__ void stage_fp32(const scalar_t* __restrict__ src, int64_t row0, int valid, int d,
                                           int d0, bool vec, float* dst) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (vec) {
      constexpr int kVecs = kBD / 4;
      for (int e = threadIdx.x; e < rows * kVecs; e += kThreads) {
        const int r = e / kVecs, dd = (e % kVecs) * 4;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < valid && d0 + dd < d) v = *reinterpret_cast<const float4*>(src + (row0 + r) * d + d0 + dd);
        dst[dd * ld + r] = v.x;
        dst[(dd + 1) * ld + r] = v.y;
        dst[(dd + 2) * ld + r] = v.z;
        dst[(dd + 3) * ld + r] = v.w;
      }
      return;
    }
  }
  for (int e = threadIdx.x; e < rows * kBD; e += kThreads) {
    const int r = e / kBD, dd = e % kBD;
    dst[dd * ld + r] = r < valid && d0 + dd < d ? static_cast<float>(src[(row0 + r) * d + d0 + dd]) : 0.f;
  }
}

// fp32 FMA path: the kBQ x kBK dot products of the tile into s_s (row stride kLdS). Each thread
// owns rows 2 ty + i and keys tx + 16 j; stages of kBD dimensions pass through a_s [kBD][kLdA] and
// b_s [kBD][kLdB] as float, zero-padded past Q, the slice's end nk and D. The FMAs run over the
// dimensions in order, whatever the staging: the same sums as before the staging was vectorised.
template <typename scalar_t>
__device__ void simt_tile_dots(const scalar_t* __restrict__ queries,
                               const scalar_t* __restrict__ keys, int nq, int nk, int d,
                               int q0, int tile0, float* a_s, float* b_s, float* s_s) {
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const bool vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(queries) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(keys) % 16 == 0;
  float acc[2][4] = {};
  for (int d0 = 0; d0 < d; d0 += kBD) {
    stage_fp32<kBQ, kLdA>(queries, q0, nq - q0, d, d0, vec, a_s);
    stage_fp32<kBK, kLdB>(keys, tile0, nk - tile0, d, d0, vec, b_s);
    __syncthreads();
#pragma unroll
    for (int dd = 0; dd < kBD; ++dd) {
      const float a0 = a_s[dd * kLdA + 2 * ty], a1 = a_s[dd * kLdA + 2 * ty + 1];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float b = b_s[dd * kLdB + tx + 16 * j];
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
// (matrix_b col_major: element (dd, key) at key * kLdH + dd), zero-padded past Q, nk (the slice's
// end) and D; each warp runs kBDH / 16 k-steps per stage, between one pair of barriers.
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
// queries Tensor[Q, D] (the launch's rows: query i is row row0 + i of the problem, whose own key is
// key row0 + i under exclude_self), keys Tensor[N, D] (scalar_t), half_sq Tensor[N] float or null
// (l2 ranks by q.k - |k|^2/2). Block (x, y) takes the query rows of block x and the keys of slice
// split0 + y, [s * slice, min(N, (s + 1) * slice)), and writes its rows' k best (rank, index) to
// out_rank / out_index at row * out_stride + s * k: [Q, k] with one slice, [Q, splits, k] partial lists
// with several.
template <typename scalar_t, int BQ>
__global__ void __launch_bounds__(kThreads) knn_tile_kernel(
    const scalar_t* __restrict__ queries, const scalar_t* __restrict__ keys,
    const float* __restrict__ half_sq, const float* __restrict__ inv_qn, const float* __restrict__ inv_kn,
    int nq, int nk, int d, int k, int row0, bool exclude_self, int slice, int split0,
    float* __restrict__ out_rank, int64_t* __restrict__ out_index, int64_t out_stride) {
  using mma_t = typename WmmaType<scalar_t>::type;
  static_assert(BQ == kBQ || (BQ == kBQWide && !std::is_void_v<mma_t>), "wide blocks: 16-bit inputs only");
  constexpr int kRowsPerWarp = BQ / kWarps;
  extern __shared__ __align__(128) unsigned char smem[];
  float* s_s = reinterpret_cast<float*>(smem + stage_bytes<BQ>());       // [BQ][kLdS]
  float* list_rank = s_s + BQ * kLdS;                                    // [BQ][k]
  int* list_index = reinterpret_cast<int*>(list_rank + BQ * k);          // [BQ][k]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int q0 = blockIdx.x * BQ, split = split0 + blockIdx.y;
  // The slice [key0, key1): split * slice < N for every launched slice, and N < 2^31 - kBK.
  const int key0 = split * slice, key1 = int64_t(key0) + slice < nk ? key0 + slice : nk;
  int size[kRowsPerWarp];
  float thr[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    size[r] = 0;
    thr[r] = -CUDART_INF_F;
  }
  for (int tile0 = key0; tile0 < key1; tile0 += kBK) {
    if constexpr (std::is_void_v<mma_t>) {
      float* a_s = reinterpret_cast<float*>(smem);
      simt_tile_dots(queries, keys, nq, key1, d, q0, tile0, a_s, a_s + kBD * kLdA, s_s);
    } else {
      wmma_tile_dots<scalar_t, mma_t, BQ>(queries, keys, nq, key1, d, q0, tile0,
                                          reinterpret_cast<uint16_t*>(smem), s_s);
    }
    __syncthreads();
    // Ranks; keys past the slice and each row's own key (exclude_self) can never enter a list.
    for (int e = tid; e < BQ * kBK; e += kThreads) {
      const int row = e / kBK, col = e % kBK, key = tile0 + col;
      float v = s_s[row * kLdS + col];
      if (half_sq != nullptr && key < key1) v -= half_sq[key];
      if (inv_kn != nullptr && key < key1 && q0 + row < nq) v *= inv_qn[q0 + row] * inv_kn[key];
      if (key >= key1 || (exclude_self && key - row0 == q0 + row)) v = -CUDART_INF_F;
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
    const int64_t at = int64_t(q0 + row) * out_stride + int64_t(split) * k;
    for (int j = lane; j < k; j += 32) {
      const bool filled = j < size[r];  // unfilled: a slice of fewer than k candidates
      out_rank[at + j] = filled ? list_rank[row * k + j] : -CUDART_INF_F;
      out_index[at + j] = filled ? list_index[row * k + j] : -1;
    }
  }
}

// Merges each row's `splits` partial lists (part_* [rows, splits, k], as knn_tile_kernel writes them)
// into its k best: one thread per entry. Entries rank above -inf in their list's filled prefix, and
// -inf after it (unfilled, index -1), so each list is sorted by rank descending and the merged order
// is (rank descending, slice, position): an entry of slice s at position j has j entries ahead of it in
// its own list, and in slice t's list those ranked above it, or equal to it when t < s (their indices
// are all lower). Its merged position is the sum; the positions of all splits * k entries are distinct,
// and those below k are written: every output slot exactly once. No shared memory, no barrier.
__global__ void knn_merge_kernel(const float* __restrict__ part_rank, const int64_t* __restrict__ part_index,
                                 int64_t rows, int splits, int k, float* __restrict__ out_rank,
                                 int64_t* __restrict__ out_index) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * splits * k) return;
  const int64_t row = e / (int64_t(splits) * k);
  const int s = static_cast<int>(e / k % splits), j = static_cast<int>(e % k);
  const float* lists = part_rank + row * splits * k;
  const float v = lists[int64_t(s) * k + j];
  int pos = j;
  for (int t = 0; t < splits && pos < k; ++t) {
    if (t == s) continue;
    const float* list = lists + int64_t(t) * k;
    int lo = 0, hi = k;  // entries of list t ahead of v: a prefix, found by bisection
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (t < s ? list[mid] >= v : list[mid] > v) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    pos += lo;
  }
  if (pos >= k) return;
  out_rank[row * k + pos] = v;
  out_index[row * k + pos] = part_index[e];
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
