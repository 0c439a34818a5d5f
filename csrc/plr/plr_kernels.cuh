// Device code of the CUDA PLR loss (lnl/ops/plr_reference.py).
// One CTA of 256 threads owns a 64-row block of the N = V*B view-major rows and sweeps every 64-column
// block of S = F F^T; each thread then holds a 4 x 4 micro-tile of S (rows ty + 16 i, columns
// tx + 16 j). float32 features: fp32 SIMT FMAs, D in chunks of 32 through shared memory. float16 /
// bfloat16 features: tensor cores (wmma m16n16k16, fp32 accumulation), D in chunks of 64, each warp
// two 16 x 16 fragments, stored to a shared score tile that the threads read their micro-tiles from.
// Pair kinds come from the candidate bitsets (AND of ceil(C/64) words), so no B x B or N x N tensor
// exists. Forward: an online log-sum-exp per row over its allowed columns, reduced over the 16 lanes
// that share a row. Backward: the tile becomes H = G + G^T in shared memory (both directions of a
// pair are known from the saved row lse), and dF_rows += H F_cols goes into a float32 accumulator
// owned by this CTA's threads only: no atomics, deterministic.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "plr/plr_common.h"

namespace lnl {
namespace plr_cuda {

constexpr int kTile = 64;     // rows and columns per tile
constexpr int kChunk = 32;    // feature dimensions per shared-memory chunk (fp32 path)
constexpr int kThreads = 256;
constexpr int kSub = 4;       // micro-tile: kSub x kSub pairs per thread
constexpr int kLanes = 16;    // threads sharing a row (tx = 0..15)

// Tensor-core path (16-bit features).
constexpr int kChunkH = 64;            // feature dimensions per 16-bit stage: 4 wmma k-steps
constexpr int kLdH = kChunkH + 8;      // 16-bit stage row stride (wmma: a multiple of 8 elements)
constexpr int kLdS = kTile + 4;        // score tile row stride (wmma float stores: a multiple of 4)
constexpr int kStageBytesF = 2 * kChunk * (kTile + 1) * 4;  // fp32: as, bs [kChunk][kTile + 1]
constexpr int kStageBytesH = 2 * kTile * kLdH * 2;          // 16-bit: a, b [kTile][kLdH]
constexpr int kScoreBytes = kTile * kLdS * 4;               // [kTile][kLdS] float
constexpr int kHBytes = kTile * (kTile + 1) * 4;            // hs [kTile][kTile + 1] float
static_assert(kThreads == 8 * 32 && kTile == 4 * 16, "8 warps tile 64 x 64 as 4 x 2 pairs of fragments");
static_assert(kStageBytesH % 128 == 0 && (kTile * kLdH * 2) % 32 == 0, "256-bit aligned wmma operands");

// Element type of the tensor-core path for a 16-bit input, or void (the fp32 SIMT path).
template <typename scalar_t> struct WmmaType { using type = void; };
template <> struct WmmaType<c10::Half> { using type = __half; };
template <> struct WmmaType<c10::BFloat16> { using type = __nv_bfloat16; };
template <typename scalar_t>
constexpr bool kTensorCores = !std::is_void_v<typename WmmaType<scalar_t>::type>;

// Shared bytes of the staging area and of the forward's score tile (none on the fp32 path).
template <typename scalar_t>
constexpr int stage_bytes() { return kTensorCores<scalar_t> ? kStageBytesH : kStageBytesF; }
template <typename scalar_t>
constexpr int fwd_score_bytes() { return kTensorCores<scalar_t> ? kScoreBytes : 16; }
// The backward's hs doubles as the score tile (read into registers before hs is written).
constexpr int kHsBytes = kHBytes > kScoreBytes ? kHBytes : kScoreBytes;

// dst[k][m] = F[row0 + m, k0 + k] (zero outside), coalesced along the feature dimension.
template <typename scalar_t>
__device__ __forceinline__ void load_chunk(const scalar_t* __restrict__ f, int64_t n, int64_t d,
                                           int64_t row0, int64_t k0, float (*dst)[kTile + 1]) {
  for (int idx = threadIdx.x; idx < kTile * kChunk; idx += kThreads) {
    const int m = idx / kChunk, k = idx % kChunk;
    const int64_t row = row0 + m, col = k0 + k;
    dst[k][m] = (row < n && col < d) ? static_cast<float>(f[row * d + col]) : 0.f;
  }
}

// acc[i][j] = S[r0 + ty + 16 i, c0 + tx + 16 j] in fp32.
template <typename scalar_t>
__device__ __forceinline__ void tile_dots(const scalar_t* __restrict__ f, int64_t n, int64_t d,
                                          int64_t r0, int64_t c0, float (*as)[kTile + 1],
                                          float (*bs)[kTile + 1], float acc[kSub][kSub]) {
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
#pragma unroll
  for (int i = 0; i < kSub; ++i)
#pragma unroll
    for (int j = 0; j < kSub; ++j) acc[i][j] = 0.f;
  for (int64_t k0 = 0; k0 < d; k0 += kChunk) {
    __syncthreads();  // the previous chunk (or tile) is no longer read
    load_chunk(f, n, d, r0, k0, as);
    load_chunk(f, n, d, c0, k0, bs);
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kChunk; ++k) {
      float a[kSub], b[kSub];
#pragma unroll
      for (int i = 0; i < kSub; ++i) a[i] = as[k][ty + kLanes * i];
#pragma unroll
      for (int j = 0; j < kSub; ++j) b[j] = bs[k][tx + kLanes * j];
#pragma unroll
      for (int i = 0; i < kSub; ++i)
#pragma unroll
        for (int j = 0; j < kSub; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
}

// dst[m][k] = F[row0 + m, k0 + k] as raw 16-bit values (zero outside), row stride kLdH. With vec
// (d % 8 == 0 and a 16-byte aligned F: every row starts aligned) 8 values per load; k0 is a multiple
// of 64, so a vector never straddles d.
template <typename scalar_t>
__device__ __forceinline__ void load_chunk_16(const scalar_t* __restrict__ f, int64_t n, int64_t d,
                                              int64_t row0, int64_t k0, bool vec, uint16_t* dst) {
  const uint16_t* src = reinterpret_cast<const uint16_t*>(f);
  if (vec) {
    constexpr int kVecs = kChunkH / 8;
    for (int idx = threadIdx.x; idx < kTile * kVecs; idx += kThreads) {
      const int m = idx / kVecs, k = (idx % kVecs) * 8;
      const int64_t row = row0 + m, col = k0 + k;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < n && col < d) v = *reinterpret_cast<const uint4*>(src + row * d + col);
      *reinterpret_cast<uint4*>(dst + m * kLdH + k) = v;
    }
    return;
  }
  for (int idx = threadIdx.x; idx < kTile * kChunkH; idx += kThreads) {
    const int m = idx / kChunkH, k = idx % kChunkH;
    const int64_t row = row0 + m, col = k0 + k;
    dst[m * kLdH + k] = (row < n && col < d) ? src[row * d + col] : uint16_t(0);
  }
}

// acc as tile_dots gives it, from tensor cores: warp w computes rows 16 (w / 2) and columns
// 32 (w % 2) of the tile as two fragments, stores them to scores [kTile][kLdS] (which may alias
// memory the block still reads: the barriers around the store and the reads protect it), and each
// thread reads its micro-tile back.
template <typename scalar_t>
__device__ __forceinline__ void wmma_tile_dots(const scalar_t* __restrict__ f, int64_t n, int64_t d,
                                               int64_t r0, int64_t c0, unsigned char* stage,
                                               float* scores, float acc[kSub][kSub]) {
  using namespace nvcuda;
  using mma_t = typename WmmaType<scalar_t>::type;
  uint16_t* a_s = reinterpret_cast<uint16_t*>(stage);
  uint16_t* b_s = a_s + kTile * kLdH;
  const int warp = threadIdx.x / 32, fr = warp / 2, fc = (warp % 2) * 2;
  const bool vec = d % 8 == 0 && reinterpret_cast<uintptr_t>(f) % 16 == 0;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2];
  wmma::fill_fragment(c[0], 0.f);
  wmma::fill_fragment(c[1], 0.f);
  for (int64_t k0 = 0; k0 < d; k0 += kChunkH) {
    __syncthreads();  // the previous chunk (or tile) is no longer read
    load_chunk_16(f, n, d, r0, k0, vec, a_s);
    load_chunk_16(f, n, d, c0, k0, vec, b_s);
    __syncthreads();
    const int64_t left = d - k0;
    const int steps = static_cast<int>(((left < kChunkH ? left : kChunkH) + 15) / 16);  // skip zero k-steps
    for (int s = 0; s < steps; ++s) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, mma_t, wmma::row_major> a;
      wmma::load_matrix_sync(a, reinterpret_cast<const mma_t*>(a_s + fr * 16 * kLdH + s * 16), kLdH);
#pragma unroll
      for (int j = 0; j < 2; ++j) {  // matrix_b col_major: element (k, col) at col * kLdH + k
        wmma::fragment<wmma::matrix_b, 16, 16, 16, mma_t, wmma::col_major> b;
        wmma::load_matrix_sync(b, reinterpret_cast<const mma_t*>(b_s + (fc + j) * 16 * kLdH + s * 16), kLdH);
        wmma::mma_sync(c[j], a, b, c[j]);
      }
    }
  }
  // No barrier before the store: the previous tile's reads of scores (the backward's hs) end before
  // its last barrier (the forward's below, the backward's in accumulate_hf) or the first of this loop.
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(scores + fr * 16 * kLdS + (fc + j) * 16, c[j], kLdS, wmma::mem_row_major);
  __syncthreads();
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
#pragma unroll
  for (int i = 0; i < kSub; ++i)
#pragma unroll
    for (int j = 0; j < kSub; ++j) acc[i][j] = scores[(ty + kLanes * i) * kLdS + tx + kLanes * j];
  __syncthreads();  // every micro-tile is read before scores (the backward's hs) is rewritten
}

// The tile's dot products on the path of the feature type (see the file comment).
template <typename scalar_t>
__device__ __forceinline__ void tile_products(const scalar_t* __restrict__ f, int64_t n, int64_t d,
                                              int64_t r0, int64_t c0, unsigned char* stage,
                                              float* scores, float acc[kSub][kSub]) {
  if constexpr (kTensorCores<scalar_t>) {
    wmma_tile_dots(f, n, d, r0, c0, stage, scores, acc);
  } else {
    auto* as = reinterpret_cast<float(*)[kTile + 1]>(stage);
    tile_dots(f, n, d, r0, c0, as, as + kChunk, acc);
  }
}

// bits[i] = set of sample i: cand[i, :max(kappa, 1)] plus labels[i] when kappa >= 1. Classes
// outside [0, C) are skipped (the Python face validates them; a device-side check would sync).
__global__ void build_bits_kernel(const int64_t* __restrict__ cand, const int64_t* __restrict__ labels,
                                  int64_t batch, int64_t width, int64_t kappa, int64_t num_classes,
                                  int64_t words, uint64_t* __restrict__ bits) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= batch) return;
  uint64_t* out = bits + i * words;
  for (int64_t w = 0; w < words; ++w) out[w] = 0;
  const int64_t used = kappa > 0 ? kappa : 1;
  for (int64_t j = 0; j <= used; ++j) {
    const int64_t cls = j < used ? cand[i * width + j] : (kappa >= 1 ? labels[i] : -1);
    if (cls >= 0 && cls < num_classes) out[cls / 64] |= uint64_t(1) << (cls % 64);
  }
}

__global__ void mask_kernel(const uint64_t* __restrict__ bits, int64_t batch, int64_t words,
                            int8_t* __restrict__ mask) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= batch * batch) return;
  const int64_t i = idx / batch, j = idx % batch;
  const bool dis = plr::disjoint(bits + i * words, bits + j * words, words);
  mask[idx] = i == j ? int8_t(1) : (dis ? int8_t(-1) : int8_t(0));
}

struct FwdParams {
  int64_t n, d, batch, words;
  float inv_tau, inv_pos, loss_scale;  // 1/tau, 1/(V-1), tau/tau_b
  bool flat;
};

// Reduces each row's state over its 16 lanes (a half-warp) and writes the row outputs.
__device__ __forceinline__ void finish_rows(const FwdParams& p, const int64_t row[kSub],
                                            plr::OnlineLse<float> st[kSub], float pos[kSub],
                                            int nneg[kSub], float* __restrict__ lse_out,
                                            int* __restrict__ nneg_out, float* __restrict__ row_obj,
                                            float* __restrict__ row_val) {
  const int tx = threadIdx.x % kLanes;
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    for (int off = kLanes / 2; off > 0; off /= 2) {  // butterfly: every lane ends with the total
      const float om = __shfl_xor_sync(0xffffffffu, st[i].m, off);
      const float os = __shfl_xor_sync(0xffffffffu, st[i].s, off);
      st[i].merge(om, os);
      pos[i] += __shfl_xor_sync(0xffffffffu, pos[i], off);
      nneg[i] += __shfl_xor_sync(0xffffffffu, nneg[i], off);
    }
    if (tx != 0 || row[i] >= p.n) continue;
    const float lse = st[i].value();
    lse_out[row[i]] = lse;
    nneg_out[row[i]] = nneg[i];
    if (p.flat) {
      const float v = nneg[i] > 0 ? lse - pos[i] * p.inv_tau : 0.f;
      row_obj[row[i]] = v;
      row_val[row[i]] = nneg[i] > 0 ? fmaxf(v, 0.f) + log1pf(expf(-fabsf(v))) : 0.f;
    } else {
      const float l = p.loss_scale * (lse - pos[i] * p.inv_tau * p.inv_pos);
      row_obj[row[i]] = l;
      row_val[row[i]] = l;
    }
  }
}

// Per row: lse, |N(a)|, and row terms (flat: v_a and softplus(v_a) when N(a) is non-empty, else 0;
// SupCon: the row loss twice). The host reduces them with ATen (no synchronisation).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ f, const uint64_t* __restrict__ bits, FwdParams p,
                   float* __restrict__ lse_out, int* __restrict__ nneg_out,
                   float* __restrict__ row_obj, float* __restrict__ row_val) {
  __shared__ __align__(128) unsigned char stage[stage_bytes<scalar_t>()];
  __shared__ __align__(128) float scores[fwd_score_bytes<scalar_t>() / 4];
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
  const int64_t r0 = int64_t(blockIdx.x) * kTile;
  int64_t row[kSub], rs[kSub];
  plr::OnlineLse<float> st[kSub];
  float pos[kSub];
  int nneg[kSub];
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    row[i] = r0 + ty + kLanes * i;
    rs[i] = row[i] % p.batch;
    st[i].init();
    pos[i] = 0.f;
    nneg[i] = 0;
  }
  for (int64_t c0 = 0; c0 < p.n; c0 += kTile) {
    float acc[kSub][kSub];
    tile_products(f, p.n, p.d, r0, c0, stage, scores, acc);
#pragma unroll
    for (int j = 0; j < kSub; ++j) {
      const int64_t col = c0 + tx + kLanes * j, cs = col % p.batch;
      if (col >= p.n) continue;
#pragma unroll
      for (int i = 0; i < kSub; ++i) {
        if (row[i] >= p.n) continue;
        const bool dis =
            rs[i] != cs && plr::disjoint(bits + rs[i] * p.words, bits + cs * p.words, p.words);
        const int kind = plr::pair_kind(row[i], col, rs[i], cs, dis);
        if (kind == plr::kPositive) pos[i] += acc[i][j];
        if (kind == plr::kNegative) ++nneg[i];
        if (plr::in_lse(kind, p.flat)) st[i].add(acc[i][j] * p.inv_tau);
      }
    }
  }
  finish_rows(p, row, st, pos, nneg, lse_out, nneg_out, row_obj, row_val);
}

// hs = the 64 x 64 tile of H = G + G^T (plr::pair_grad) from the dot products acc.
__device__ __forceinline__ void fill_h(const uint64_t* __restrict__ bits, const FwdParams& p,
                                       const float* __restrict__ lse, int64_t c0,
                                       const int64_t row[kSub], const int64_t rs[kSub],
                                       const float lse_a[kSub], const bool valid[kSub], float coef,
                                       const float acc[kSub][kSub], float (*hs)[kTile + 1]) {
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
#pragma unroll
  for (int j = 0; j < kSub; ++j) {
    const int64_t col = c0 + tx + kLanes * j, cs = col % p.batch;
    const float lse_b = col < p.n ? lse[col] : 0.f;
#pragma unroll
    for (int i = 0; i < kSub; ++i) {
      float h = 0.f;
      if (row[i] < p.n && col < p.n) {
        const bool dis =
            rs[i] != cs && plr::disjoint(bits + rs[i] * p.words, bits + cs * p.words, p.words);
        const int kind = plr::pair_kind(row[i], col, rs[i], cs, dis);
        float e_a = 0.f, e_b = 0.f;
        if (plr::in_lse(kind, p.flat)) {
          const float x = acc[i][j] * p.inv_tau;
          e_a = expf(x - lse_a[i]);
          e_b = expf(x - lse_b);
        }
        h = plr::pair_grad(kind, p.flat, valid[i], e_a, e_b, coef, p.inv_pos);
      }
      hs[ty + kLanes * i][tx + kLanes * j] = h;
    }
  }
}

// grad_acc[rows] += hs F[c0 : c0 + 64], D in chunks of 32 through fc; each (row, dim) has one owner.
template <typename scalar_t>
__device__ __forceinline__ void accumulate_hf(const scalar_t* __restrict__ f, const FwdParams& p,
                                              int64_t c0, const int64_t row[kSub],
                                              const float (*hs)[kTile + 1], float (*fc)[kChunk],
                                              float* __restrict__ grad_acc) {
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
  for (int64_t d0 = 0; d0 < p.d; d0 += kChunk) {
    __syncthreads();  // hs is complete; fc is no longer read
    for (int idx = threadIdx.x; idx < kTile * kChunk; idx += kThreads) {
      const int c = idx / kChunk, k = idx % kChunk;
      const int64_t col = c0 + c, dim = d0 + k;
      fc[c][k] = (col < p.n && dim < p.d) ? static_cast<float>(f[col * p.d + dim]) : 0.f;
    }
    __syncthreads();
    float out[kSub][2] = {};
    for (int c = 0; c < kTile; ++c) {
      const float f0 = fc[c][tx], f1 = fc[c][tx + kLanes];
#pragma unroll
      for (int i = 0; i < kSub; ++i) {
        const float h = hs[ty + kLanes * i][c];
        out[i][0] = fmaf(h, f0, out[i][0]);
        out[i][1] = fmaf(h, f1, out[i][1]);
      }
    }
#pragma unroll
    for (int i = 0; i < kSub; ++i) {
      if (row[i] >= p.n) continue;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t dim = d0 + tx + kLanes * j;
        if (dim < p.d) grad_acc[row[i] * p.d + dim] += out[i][j];
      }
    }
  }
}

// dF = H F with H = G + G^T (plr::pair_grad), scaled by *coef; grad_acc is float32 [N, D], zeroed.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ f, const uint64_t* __restrict__ bits, FwdParams p,
                    const float* __restrict__ lse, const int* __restrict__ nneg,
                    const float* __restrict__ coef_ptr, float* __restrict__ grad_acc) {
  __shared__ __align__(128) unsigned char stage[stage_bytes<scalar_t>()];
  __shared__ __align__(128) float hs_raw[kHsBytes / 4];  // hs, and the 16-bit path's score tile
  __shared__ float fc[kTile][kChunk];
  auto* hs = reinterpret_cast<float(*)[kTile + 1]>(hs_raw);
  const int ty = threadIdx.x / kLanes;
  const int64_t r0 = int64_t(blockIdx.x) * kTile;
  const float coef = *coef_ptr;
  int64_t row[kSub], rs[kSub];
  float lse_a[kSub];
  bool valid[kSub];
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    row[i] = r0 + ty + kLanes * i;
    rs[i] = row[i] % p.batch;
    lse_a[i] = row[i] < p.n ? lse[row[i]] : 0.f;
    valid[i] = row[i] < p.n && nneg[row[i]] > 0;
  }
  for (int64_t c0 = 0; c0 < p.n; c0 += kTile) {
    float acc[kSub][kSub];
    tile_products(f, p.n, p.d, r0, c0, stage, hs_raw, acc);
    fill_h(bits, p, lse, c0, row, rs, lse_a, valid, coef, acc, hs);
    accumulate_hf(f, p, c0, row, hs, fc, grad_acc);
    // the next tile writes hs after tile_products' first barrier (D >= 1; with D = 0 the gradient
    // has no columns: what hs holds is never used)
  }
}

}  // namespace plr_cuda
}  // namespace lnl
