// Device code of the kNN GEMM + select path (host side: the knn_labels_gemm block at the end of
// knn_cuda.cu). cuBLAS writes a tile of scores (a block of query rows x a tile of keys, float32);
// knn_select_kernel then offers each row's scores to that row's running top-k with the tile kernel's
// own list logic (offer_tile_row / list_insert in knn_kernels.cuh): rank descending, ties by the lower
// key index, one strict '>' against the k-th rank because keys reach a list in increasing index order
// (tile after tile, and in column order within a tile). The lists persist in global memory between
// tiles and are staged in shared memory while a tile is offered.
#pragma once

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
// Ranks as the tile kernel's: minus half_sq[key] (l2), times inv_qn[query] * inv_kn[key] (cosine of
// raw 16-bit inputs), -inf for a query's own key (exclude_self). Lists (list_rank, list_index
// [Q][k], list_size [Q]) carry each row's best so far; after the last tile (`last`), out_index
// [Q][k] gets the int64 indices and unfilled places (none when k <= N) rank -inf, index -1.
__global__ void __launch_bounds__(kSelectWarps * 32) knn_select_kernel(
    const float* __restrict__ scores, int64_t ld, int rows, int width, int q0, int key0,
    const float* __restrict__ half_sq, const float* __restrict__ inv_qn, const float* __restrict__ inv_kn,
    bool exclude_self, int k, float* __restrict__ list_rank, int* __restrict__ list_index,
    int* __restrict__ list_size, bool last, int64_t* __restrict__ out_index) {
  extern __shared__ __align__(16) unsigned char select_smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int r = blockIdx.x * kSelectWarps + warp;
  if (r >= rows) return;  // uniform over the warp; the kernel has no block-wide barrier
  float* rank = reinterpret_cast<float*>(select_smem) + warp * k;
  int* index = reinterpret_cast<int*>(reinterpret_cast<float*>(select_smem) + kSelectWarps * k) + warp * k;
  float* chunk = reinterpret_cast<float*>(select_smem) + 2 * kSelectWarps * k + warp * kBK;
  const int64_t row = q0 + r;
  int size = list_size[row];
  for (int j = lane; j < size; j += 32) {
    rank[j] = list_rank[row * k + j];
    index[j] = list_index[row * k + j];
  }
  __syncwarp();  // list_insert's ballots read every lane's entries
  float thr = list_threshold(rank, size, k);
  const float iq = inv_qn != nullptr ? inv_qn[row] : 1.f;
  const float* s_row = scores + r * ld;
  for (int c0 = 0; c0 < width; c0 += kBK) {
    // Each lane writes exactly the two places offer_tile_row reads back in this lane (c + lane):
    // no warp barrier is needed between them, nor before the next chunk overwrites them.
    for (int c = lane; c < kBK; c += 32) {
      const int col = c0 + c, key = key0 + col;
      float v = -CUDART_INF_F;
      if (col < width) {
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

}  // namespace knn_cuda
}  // namespace lnl
