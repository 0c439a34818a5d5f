// Device code of the kNN GEMM + select path (host side: the knn_labels_gemm block at the end of
// knn_cuda.cu). cuBLAS writes a tile of scores (a block of query rows x a tile of keys, float32);
// knn_select_kernel then offers each row's scores to that row's running top-k with the tile kernel's
// own list logic (offer_tile_row / list_insert in knn_kernels.cuh): rank descending, ties by the lower
// key index, one strict '>' against the k-th rank because keys reach a list in increasing index order
// (tile after tile, and in column order within a tile). The lists persist in global memory between
// tiles and are staged in shared memory while a tile is offered.
#pragma once

#include <climits>
#include <cstdint>

#include "knn/knn_kernels.cuh"

namespace lnl {
namespace knn_cuda {

constexpr int kSelectWarps = 8;  // query rows per select block, one warp each

// Shared-memory bytes of knn_select_kernel for a given k: each warp's list and a kBK-wide rank chunk.
inline size_t select_kernel_smem(int k) {
  return size_t(kSelectWarps) * ((sizeof(float) + sizeof(int)) * size_t(k) + sizeof(float) * kBK);
}

// scores: the tile's float32 [rows][ld] (row r is query q0 + r, column c is key key0 + c, c < width).
// Block (x, y) offers columns [y * seg_cols, (y + 1) * seg_cols) of its kSelectWarps rows to segment
// y's lists: with few query rows, gridDim.y segments of the keys keep every SM busy, each with its own
// running lists (knn_segment_merge_kernel joins them after the last tile); a list still sees its keys in
// increasing index order (its column range, tile after tile). Ranks as the tile kernel's: minus
// half_sq[key] (l2), times inv_qn[query] * inv_kn[key] (cosine of raw 16-bit inputs), -inf for a
// query's own key (exclude_self). Lists (list_rank, list_index [segments][Q][k], list_size
// [segments][Q]) carry each row's best so far; with one segment, after the last tile (`last`),
// out_index [Q][k] gets the int64 indices and unfilled places (none when k <= N) rank -inf, index -1.
__global__ void __launch_bounds__(kSelectWarps * 32) knn_select_kernel(
    const float* __restrict__ scores, int64_t ld, int rows, int width, int seg_cols, int q0, int key0,
    int64_t nq, const float* __restrict__ half_sq, const float* __restrict__ inv_qn,
    const float* __restrict__ inv_kn, bool exclude_self, int k, float* __restrict__ list_rank,
    int* __restrict__ list_index, int* __restrict__ list_size, bool last, int64_t* __restrict__ out_index) {
  extern __shared__ __align__(16) unsigned char select_smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int r = blockIdx.x * kSelectWarps + warp;
  if (r >= rows) return;  // uniform over the warp; the kernel has no block-wide barrier
  float* rank = reinterpret_cast<float*>(select_smem) + warp * k;
  int* index = reinterpret_cast<int*>(reinterpret_cast<float*>(select_smem) + kSelectWarps * k) + warp * k;
  float* chunk = reinterpret_cast<float*>(select_smem) + 2 * kSelectWarps * k + warp * kBK;
  const int64_t row = q0 + r, seg = blockIdx.y;
  list_rank += seg * nq * k, list_index += seg * nq * k, list_size += seg * nq;
  const int c_begin = static_cast<int>(seg) * seg_cols, c_end = min(width, c_begin + seg_cols);
  int size = list_size[row];
  for (int j = lane; j < size; j += 32) {
    rank[j] = list_rank[row * k + j];
    index[j] = list_index[row * k + j];
  }
  __syncwarp();  // list_insert's ballots read every lane's entries
  float thr = list_threshold(rank, size, k);
  const float iq = inv_qn != nullptr ? inv_qn[row] : 1.f;
  const float* s_row = scores + r * ld;
  for (int c0 = c_begin; c0 < c_end; c0 += kBK) {
    // Each lane writes exactly the two places offer_tile_row reads back in this lane (c + lane):
    // no warp barrier is needed between them, nor before the next chunk overwrites them.
    for (int c = lane; c < kBK; c += 32) {
      const int col = c0 + c, key = key0 + col;
      float v = -CUDART_INF_F;
      if (col < c_end) {
        v = s_row[col];
        if (half_sq != nullptr) v -= half_sq[key];
        if (inv_kn != nullptr) v *= iq * inv_kn[key];
        if (exclude_self && key == row) v = -CUDART_INF_F;
      }
      chunk[c] = v;
    }
    offer_tile_row(chunk, rank, index, size, thr, k, key0 + c0, lane);
  }
  // Each lane reads back places it loaded itself or that list_insert wrote before its closing barrier.
  if (lane == 0) list_size[row] = size;
  for (int j = lane; j < k; j += 32) {
    const bool filled = j < size;
    if (last) {
      list_rank[row * k + j] = filled ? rank[j] : -CUDART_INF_F;
      out_index[row * k + j] = filled ? index[j] : -1;
    } else if (filled) {
      list_rank[row * k + j] = rank[j];
      list_index[row * k + j] = index[j];
    }
  }
}

// Joins each row's per-segment lists (knn_select_kernel with gridDim.y = segments <= 32) into its
// k best, one warp per row: lane s holds the head of segment s's list (sorted best first), the warp
// picks the best head by (rank descending, index ascending) with butterfly shuffles, and that lane
// moves to its next entry; k rounds. Exact tie order: every entry of the merged lists is compared
// with its index, wherever its segment lies. out_rank / out_index [Q][k]: unfilled places (none when
// k <= N) rank -inf, index -1.
__global__ void __launch_bounds__(kSelectWarps * 32) knn_segment_merge_kernel(
    const float* __restrict__ list_rank, const int* __restrict__ list_index,
    const int* __restrict__ list_size, int segments, int64_t nq, int k, float* __restrict__ out_rank,
    int64_t* __restrict__ out_index) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kSelectWarps + threadIdx.x / 32;
  if (row >= nq) return;  // uniform over the warp
  const int size = lane < segments ? list_size[lane * nq + row] : 0;
  const float* rank = list_rank + (lane * nq + row) * k;
  const int* index = list_index + (lane * nq + row) * k;
  int next = 0;
  for (int j = 0; j < k; ++j) {
    float best = next < size ? rank[next] : -CUDART_INF_F;
    int best_index = next < size ? index[next] : INT_MAX;
    int best_lane = lane;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(kFull, best, offset);
      const int other_index = __shfl_xor_sync(kFull, best_index, offset);
      const int other_lane = __shfl_xor_sync(kFull, best_lane, offset);
      const bool same = other == best && other_index == best_index;  // only empty heads
      if (other > best || (other == best && other_index < best_index) || (same && other_lane < best_lane)) {
        best = other, best_index = other_index, best_lane = other_lane;
      }
    }
    if (lane == best_lane) ++next;  // every lane agrees on best_lane (a strict order)
    if (lane == 0) {
      const bool filled = best_index != INT_MAX;
      out_rank[row * k + j] = filled ? best : -CUDART_INF_F;
      out_index[row * k + j] = filled ? best_index : -1;
    }
  }
}

}  // namespace knn_cuda
}  // namespace lnl
