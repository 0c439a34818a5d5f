// Device code of the CUDA PLR loss (lnl/ops/plr_reference.py).
// One CTA of 256 threads owns a 64-row block of the N = V*B view-major rows and sweeps every 64-column
// block of S = F F^T; each thread then holds a 4 x 4 micro-tile of S (rows ty + 16 i, columns
// tx + 16 j). float32 features: fp32 SIMT FMAs, D in chunks of 32 through shared memory. float16 /
// bfloat16 features: tensor cores (wmma m16n16k16, fp32 accumulation), D in chunks of 64, each warp
// two 16 x 16 fragments, stored to a shared score tile that the threads read their micro-tiles from.
// Pair kinds come from the candidate bitsets (AND of ceil(C/64) words), so no B x B or N x N tensor
// exists. Forward: an online log-sum-exp per row over its allowed columns, reduced over the 16 lanes
// that share a row. Backward: the grid is (row blocks, D slices of 128); each tile of S becomes the
// tile of H = G + G^T (both directions of a pair are known from the saved row lse), and
// dF[rows, slice] += H F[cols, slice] accumulates in registers over every column tile; each gradient
// element is written once, in the features' dtype, by its CTA: no atomics, deterministic.
// Why this backward is faster than the previous one (which accumulated 32-wide D chunks into a
// zeroed float32 [N, D] buffer: a global read-modify-write of the CTA's 64 x D slice per column tile,
// then a memset and a dtype conversion pass on the host side):
//  * no global read-modify-write: the accumulator stays in registers (fp32: 4 x 8 per thread; 16-bit:
//    4 wmma fragments per warp), so the H F product's memory traffic is only F's column tile, which
//    the S product reads anyway (L2-resident), and the output is written once;
//  * float16 / bfloat16: H F runs on tensor cores (wmma m16n16k16, fp32 accumulation) as two MMAs,
//    H's hi and lo halves (see kHScale), instead of fp32 SIMT FMAs: a warp's 16 rows x 64 dims x 64
//    columns per tile are 32 mma_sync calls;
//  * fp32: each column costs 8 shared loads (4 of them half-warp broadcasts) for 16 FMAs instead of
//    6 for 8, and F is staged in 64-wide chunks instead of 32-wide (half the barriers);
//  * the D slices multiply the CTAs by ceil(D / 128): PLReMix's D = 128 keeps one slice (S computed
//    once per tile, as before); larger D recomputes S per slice, which costs FLOPs but puts
//    ceil(D / 128) times more CTAs on a GPU that the row blocks alone leave mostly idle (N = 2 B is
//    a few hundred rows: a handful of CTAs for 132 SMs).
// The candidate bitsets are built once per step: the forward stores them behind lse (plr_cuda.cu).
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

// dst[m][k] = F[row0 + m, k0 + k] for k < kWidth as raw 16-bit values (zero outside), row stride kLd.
// With vec (d % 8 == 0 and a 16-byte aligned F: every row starts aligned) 8 values per load; k0 is a
// multiple of 8, so a vector never straddles d.
template <int kWidth, int kLd, typename scalar_t>
__device__ __forceinline__ void load_rows_16(const scalar_t* __restrict__ f, int64_t n, int64_t d,
                                             int64_t row0, int64_t k0, bool vec, uint16_t* dst) {
  static_assert(kWidth % 8 == 0 && kLd % 8 == 0, "whole 16-byte vectors");
  const uint16_t* src = reinterpret_cast<const uint16_t*>(f);
  if (vec) {
    constexpr int kVecs = kWidth / 8;
    for (int idx = threadIdx.x; idx < kTile * kVecs; idx += kThreads) {
      const int m = idx / kVecs, k = (idx % kVecs) * 8;
      const int64_t row = row0 + m, col = k0 + k;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < n && col < d) v = *reinterpret_cast<const uint4*>(src + row * d + col);
      *reinterpret_cast<uint4*>(dst + m * kLd + k) = v;
    }
    return;
  }
  for (int idx = threadIdx.x; idx < kTile * kWidth; idx += kThreads) {
    const int m = idx / kWidth, k = idx % kWidth;
    const int64_t row = row0 + m, col = k0 + k;
    dst[m * kLd + k] = (row < n && col < d) ? src[row * d + col] : uint16_t(0);
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
    load_rows_16<kChunkH, kLdH>(f, n, d, r0, k0, vec, a_s);
    load_rows_16<kChunkH, kLdH>(f, n, d, c0, k0, vec, b_s);
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
  // No barrier before the store: the previous tile's reads of scores (the backward's F slice) end
  // before the first barrier of this loop (the forward's: before its last barrier, below).
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(scores + fr * 16 * kLdS + (fc + j) * 16, c[j], kLdS, wmma::mem_row_major);
  __syncthreads();
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
#pragma unroll
  for (int i = 0; i < kSub; ++i)
#pragma unroll
    for (int j = 0; j < kSub; ++j) acc[i][j] = scores[(ty + kLanes * i) * kLdS + tx + kLanes * j];
  __syncthreads();  // every micro-tile is read before scores (the backward's F slice) is rewritten
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
__device__ __forceinline__ void forward_rows(const scalar_t* __restrict__ f,
                                             const uint64_t* __restrict__ bits, const FwdParams& p,
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

// float32 (two CTAs per SM fit in ~108 registers).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ f, const uint64_t* __restrict__ bits, FwdParams p,
                   float* __restrict__ lse_out, int* __restrict__ nneg_out,
                   float* __restrict__ row_obj, float* __restrict__ row_val) {
  forward_rows(f, bits, p, lse_out, nneg_out, row_obj, row_val);
}

// float16 / bfloat16: one CTA per SM (~165 registers; the default cap of 128 spilled 176 bytes).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 1)
    forward_kernel_tc(const scalar_t* __restrict__ f, const uint64_t* __restrict__ bits, FwdParams p,
                      float* __restrict__ lse_out, int* __restrict__ nneg_out,
                      float* __restrict__ row_obj, float* __restrict__ row_val) {
  forward_rows(f, bits, p, lse_out, nneg_out, row_obj, row_val);
}

// The forward kernel of the feature type (the other is never instantiated for it).
template <typename scalar_t>
constexpr auto forward_kernel_for() {
  if constexpr (kTensorCores<scalar_t>) {
    return &forward_kernel_tc<scalar_t>;
  } else {
    return &forward_kernel<scalar_t>;
  }
}

// ------------------------------------------------------------------------------------- backward
// Grid (row blocks, D slices): the CTA recomputes S for its 64 rows against every column tile, turns
// each tile into H, and accumulates dF[rows, slice] += H F[cols, slice] in registers over all column
// tiles; the slice is written once, in the features' dtype, at the end (see the file comment).
constexpr int kSlice = 128;        // gradient dimensions per CTA, accumulated in registers
constexpr int kChunkB = 64;        // fp32: dimensions of F per H F chunk (fc aliases the stage)
constexpr int kSliceRegs = kSlice / kLanes;  // fp32: 8 dims per thread per row
constexpr int kLdF = kSlice + 8;   // 16-bit F slice row stride (wmma: a multiple of 8 elements)
constexpr int kLdO = 2 * 16 + 4;   // 16-bit output staging row stride (wmma float stores)
constexpr int kFragsB = 4;         // 16-bit: accumulator fragments per warp (16 rows x 64 dims)
// 16-bit H is stored as hi + lo (two MMAs per k-step) after scaling by 2^12: |H| <= 2 before the
// scale (exp terms <= 1 each, positives -2 / -2/(V-1)), so fp16 neither overflows (8192 < 65504) nor
// drops lo into subnormals for the entries that matter. hi alone (8 bits for bf16) misses the
// 1e-5-of-the-largest-entry tolerance of the gradient by up to 40x on the emulation tests' shapes;
// hi + lo keeps 16 (bf16) / 22 (fp16) bits, within it by >= 10x. The scale is undone, exactly, with
// the coefficient at the write.
constexpr float kHScale = 4096.f;
static_assert(kTile * kChunkB * 4 <= kStageBytesF, "fc fits in the fp32 stage");
static_assert(2 * kTile * kLdH * 2 <= kStageBytesH, "H hi and lo fit in the 16-bit stage");
static_assert(kTile * kLdF * 2 <= kHsBytes && kTile * kLdO * 4 <= kHsBytes, "F slice, output staging");
static_assert((kTile * kLdH * 2) % 32 == 0 && (16 * kLdF * 2) % 32 == 0, "256-bit aligned wmma operands");
static_assert(kSlice == 2 * kFragsB * 16 && kTile == 4 * 16, "8 warps tile 64 x 128 as 4 x 2 warp tiles");

// Gradient dimensions the grid splits D into.
inline unsigned int dim_slices(int64_t d) { return static_cast<unsigned int>((d + kSlice - 1) / kSlice); }

// What the backward knows of each of this thread's rows r0 + ty + 16 i.
struct BwdRows {
  int64_t row[kSub], sample[kSub];
  float lse[kSub];
  bool valid[kSub];  // the row has a negative
};

__device__ __forceinline__ void init_rows(const FwdParams& p, const float* __restrict__ lse,
                                          const int* __restrict__ nneg, int64_t r0, BwdRows& r) {
  const int ty = threadIdx.x / kLanes;
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    r.row[i] = r0 + ty + kLanes * i;
    r.sample[i] = r.row[i] % p.batch;
    r.lse[i] = r.row[i] < p.n ? lse[r.row[i]] : 0.f;
    r.valid[i] = r.row[i] < p.n && nneg[r.row[i]] > 0;
  }
}

// acc (the tile's dot products) becomes the tile of H = G + G^T (plr::pair_grad) with coefficient
// coef; 0 outside the N x N grid.
__device__ __forceinline__ void tile_h(const uint64_t* __restrict__ bits, const FwdParams& p,
                                       const float* __restrict__ lse, int64_t c0, const BwdRows& r,
                                       float coef, float acc[kSub][kSub]) {
  const int tx = threadIdx.x % kLanes;
#pragma unroll
  for (int j = 0; j < kSub; ++j) {
    const int64_t col = c0 + tx + kLanes * j, cs = col % p.batch;
    const float lse_b = col < p.n ? lse[col] : 0.f;
#pragma unroll
    for (int i = 0; i < kSub; ++i) {
      float h = 0.f;
      if (r.row[i] < p.n && col < p.n) {
        const bool dis = r.sample[i] != cs &&
                         plr::disjoint(bits + r.sample[i] * p.words, bits + cs * p.words, p.words);
        const int kind = plr::pair_kind(r.row[i], col, r.sample[i], cs, dis);
        float e_a = 0.f, e_b = 0.f;
        if (plr::in_lse(kind, p.flat)) {
          const float x = acc[i][j] * p.inv_tau;
          e_a = expf(x - r.lse[i]);
          e_b = expf(x - lse_b);
        }
        h = plr::pair_grad(kind, p.flat, r.valid[i], e_a, e_b, coef, p.inv_pos);
      }
      acc[i][j] = h;
    }
  }
}

// float32 features. Thread (ty, tx) accumulates rows ty + 16 i, dims slice0 + 64 q + tx + 16 j of the
// slice (4 x 8 registers); per column tile H goes to hs and F to fc in 64-dim chunks, each column
// costing 8 shared loads (4 of them broadcasts) for 16 FMAs.
template <typename scalar_t>
__device__ __forceinline__ void backward_simt(const scalar_t* __restrict__ f,
                                              const uint64_t* __restrict__ bits, const FwdParams& p,
                                              const float* __restrict__ lse, const BwdRows& r,
                                              int64_t r0, int64_t slice0, float scale,
                                              unsigned char* stage, float* aux,
                                              scalar_t* __restrict__ grad) {
  auto* hs = reinterpret_cast<float(*)[kTile + 1]>(aux);
  auto* fc = reinterpret_cast<float(*)[kChunkB]>(stage);
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
  float g[kSub][kSliceRegs];
#pragma unroll
  for (int i = 0; i < kSub; ++i)
#pragma unroll
    for (int j = 0; j < kSliceRegs; ++j) g[i][j] = 0.f;
  for (int64_t c0 = 0; c0 < p.n; c0 += kTile) {
    float acc[kSub][kSub];
    tile_products(f, p.n, p.d, r0, c0, stage, aux, acc);  // hs's previous reads end before its barriers
    tile_h(bits, p, lse, c0, r, 1.f, acc);
#pragma unroll
    for (int i = 0; i < kSub; ++i)
#pragma unroll
      for (int j = 0; j < kSub; ++j) hs[ty + kLanes * i][tx + kLanes * j] = acc[i][j];
    const int cols = static_cast<int>(p.n - c0 < kTile ? p.n - c0 : kTile);
#pragma unroll
    for (int q = 0; q < kSlice / kChunkB; ++q) {
      const int64_t d0 = slice0 + q * kChunkB;
      if (d0 >= p.d) break;  // uniform over the CTA
      __syncthreads();  // hs is complete; the stage (fc) is no longer read by tile_dots or chunk q - 1
      for (int idx = threadIdx.x; idx < kTile * kChunkB; idx += kThreads) {
        const int c = idx / kChunkB, k = idx % kChunkB;
        const int64_t col = c0 + c, dim = d0 + k;
        fc[c][k] = (col < p.n && dim < p.d) ? static_cast<float>(f[col * p.d + dim]) : 0.f;
      }
      __syncthreads();
      for (int c = 0; c < cols; ++c) {
        float fv[kChunkB / kLanes];
#pragma unroll
        for (int j = 0; j < kChunkB / kLanes; ++j) fv[j] = fc[c][tx + kLanes * j];
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
          const float h = hs[ty + kLanes * i][c];
#pragma unroll
          for (int j = 0; j < kChunkB / kLanes; ++j) {
            float& out = g[i][q * (kChunkB / kLanes) + j];
            out = fmaf(h, fv[j], out);
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    if (r.row[i] >= p.n) continue;
#pragma unroll
    for (int j = 0; j < kSliceRegs; ++j) {
      constexpr int kPerChunk = kChunkB / kLanes;  // registers per 64-dim chunk
      const int64_t dim = slice0 + (j / kPerChunk) * kChunkB + tx + kLanes * (j % kPerChunk);
      if (dim < p.d) grad[r.row[i] * p.d + dim] = static_cast<scalar_t>(g[i][j] * scale);
    }
  }
}

// float16 / bfloat16 features. Warp w accumulates rows 16 (w % 4) and dims slice0 + 64 (w / 4) of
// the slice in 4 wmma fragments; per column tile H (scaled, as hi + lo) goes to the stage and the F
// slice to aux, and each k-step of 16 columns is 2 x 4 MMAs.
template <typename scalar_t>
__device__ __forceinline__ void backward_wmma(const scalar_t* __restrict__ f,
                                              const uint64_t* __restrict__ bits, const FwdParams& p,
                                              const float* __restrict__ lse, const BwdRows& r,
                                              int64_t r0, int64_t slice0, float scale,
                                              unsigned char* stage, float* aux,
                                              scalar_t* __restrict__ grad) {
  using namespace nvcuda;
  using mma_t = typename WmmaType<scalar_t>::type;
  scalar_t* h_hi = reinterpret_cast<scalar_t*>(stage);
  scalar_t* h_lo = h_hi + kTile * kLdH;
  uint16_t* fs = reinterpret_cast<uint16_t*>(aux);
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
  const int warp = threadIdx.x / 32, wr = warp % 4, wc = warp / 4;
  const bool vec = p.d % 8 == 0 && reinterpret_cast<uintptr_t>(f) % 16 == 0;
  const int64_t width = p.d - slice0 < kSlice ? p.d - slice0 : kSlice;
  const int64_t mine = (width - wc * 64 + 15) / 16;  // this warp's fragments that hold dims < D
  const int frags = static_cast<int>(mine < 0 ? 0 : (mine > kFragsB ? kFragsB : mine));
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> g[kFragsB];
#pragma unroll
  for (int t = 0; t < kFragsB; ++t) wmma::fill_fragment(g[t], 0.f);
  for (int64_t c0 = 0; c0 < p.n; c0 += kTile) {
    float acc[kSub][kSub];
    // Ends with a barrier after every read of aux; the stage was last read before its score store.
    tile_products(f, p.n, p.d, r0, c0, stage, aux, acc);
    tile_h(bits, p, lse, c0, r, kHScale, acc);
#pragma unroll
    for (int i = 0; i < kSub; ++i)
#pragma unroll
      for (int j = 0; j < kSub; ++j) {
        const int at = (ty + kLanes * i) * kLdH + tx + kLanes * j;
        const scalar_t hi = static_cast<scalar_t>(acc[i][j]);
        h_hi[at] = hi;
        h_lo[at] = static_cast<scalar_t>(acc[i][j] - static_cast<float>(hi));
      }
    load_rows_16<kSlice, kLdF>(f, p.n, p.d, c0, slice0, vec, fs);
    __syncthreads();  // H and the F slice are complete
    const int64_t left = p.n - c0;
    const int steps = static_cast<int>(((left < kTile ? left : kTile) + 15) / 16);  // skip zero columns
    for (int s = 0; s < steps; ++s) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, mma_t, wmma::row_major> a_hi, a_lo;
      wmma::load_matrix_sync(a_hi, reinterpret_cast<const mma_t*>(h_hi + wr * 16 * kLdH + s * 16), kLdH);
      wmma::load_matrix_sync(a_lo, reinterpret_cast<const mma_t*>(h_lo + wr * 16 * kLdH + s * 16), kLdH);
#pragma unroll
      for (int t = 0; t < kFragsB; ++t) {
        if (t >= frags) break;  // uniform over the warp
        wmma::fragment<wmma::matrix_b, 16, 16, 16, mma_t, wmma::row_major> b;
        const uint16_t* b_at = fs + s * 16 * kLdF + wc * 64 + t * 16;
        wmma::load_matrix_sync(b, reinterpret_cast<const mma_t*>(b_at), kLdF);
        wmma::mma_sync(g[t], a_hi, b, g[t]);
        wmma::mma_sync(g[t], a_lo, b, g[t]);
      }
    }
    // the next tile writes the stage and aux after barriers of tile_products (D >= 1)
  }
  // Fragment t of every warp through aux ([64 rows][2 x 16 dims]), then coalesced stores.
  float* out = aux;
#pragma unroll
  for (int t = 0; t < kFragsB; ++t) {
    if (t * 16 >= width) break;  // uniform over the CTA
    __syncthreads();  // the MMAs (t = 0) or the copy of fragment t - 1 no longer read aux
    if (t < frags) wmma::store_matrix_sync(out + wr * 16 * kLdO + wc * 16, g[t], kLdO, wmma::mem_row_major);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTile * 32; idx += kThreads) {
      const int m = idx / 32, c = idx % 32;
      const int64_t row = r0 + m, dim = slice0 + (c / 16) * 64 + t * 16 + c % 16;
      if (row < p.n && dim < p.d) grad[row * p.d + dim] = static_cast<scalar_t>(out[m * kLdO + c] * scale);
    }
  }
}

// dF[:, slice] = coef H F[:, slice] with H = G + G^T (plr::pair_grad); grad has the features' dtype.
// One CTA per SM: the register accumulator takes ~200 registers (two CTAs' cap of 128 spills); the
// grid, (N / 64) x (D / 128) CTAs, is a few dozen for PLReMix's shapes, far fewer than the SMs.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 1)
    backward_kernel(const scalar_t* __restrict__ f, const uint64_t* __restrict__ bits, FwdParams p,
                    const float* __restrict__ lse, const int* __restrict__ nneg,
                    const float* __restrict__ coef_ptr, scalar_t* __restrict__ grad) {
  __shared__ __align__(128) unsigned char stage[stage_bytes<scalar_t>()];
  __shared__ __align__(128) float aux[kHsBytes / 4];  // score tile, hs, F slice, output staging
  const int64_t r0 = int64_t(blockIdx.x) * kTile, slice0 = int64_t(blockIdx.y) * kSlice;
  BwdRows r;
  init_rows(p, lse, nneg, r0, r);
  if constexpr (kTensorCores<scalar_t>) {
    backward_wmma(f, bits, p, lse, r, r0, slice0, *coef_ptr / kHScale, stage, aux, grad);
  } else {
    backward_simt(f, bits, p, lse, r, r0, slice0, *coef_ptr, stage, aux, grad);
  }
}

}  // namespace plr_cuda
}  // namespace lnl
