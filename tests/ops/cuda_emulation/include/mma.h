// Emulation stub of nvcuda::wmma for m16n16k16: each lane holds the whole fragment (the hardware's
// lane layout is opaque to correct code); load, mma and store are warp collectives (all 32 lanes).
// mma_sync accumulates in float32 in k order (the hardware's order within a fragment is unspecified).
#pragma once
#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {

// The hardware's requirements on wmma pointers and leading dimensions (CUDA C++ guide, wmma).
template <typename T>
void check_operand(const T* p, unsigned ld, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) lnl_emu::fail(std::string(what) + ": pointer not 256-bit aligned");
  if ((ld * sizeof(T)) % 16 != 0) lnl_emu::fail(std::string(what) + ": leading dimension not a multiple of 16 bytes");
}

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "emulated wmma: m16n16k16 only");
  T x[16][16];  // logical [row][col]: matrix_a M x K, matrix_b K x N, accumulator M x N
};

// matrix_a (M x K) or matrix_b (K x N) from memory: logical element (r, c) at p[r * ld + c]
// (row_major) or p[c * ld + r] (col_major).
template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
  static_assert(std::is_same_v<Use, matrix_a> || std::is_same_v<Use, matrix_b>, "operands only");
  check_operand(p, ld, "wmma::load_matrix_sync");
  __syncwarp();
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r][c] = std::is_same_v<Layout, row_major> ? p[r * ld + c] : p[c * ld + r];
  __syncwarp();
}

template <typename T>
void fill_fragment(fragment<accumulator, 16, 16, 16, T>& f, T v) {
  for (auto& row : f.x)
    for (auto& e : row) e = v;
}

template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  __syncwarp();
  float out[16][16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = c.x[i][j];
      for (int k = 0; k < 16; ++k) acc += static_cast<float>(a.x[i][k]) * static_cast<float>(b.x[k][j]);
      out[i][j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
  __syncwarp();
}

template <typename T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ld, layout_t layout) {
  check_operand(p, ld, "wmma::store_matrix_sync");
  __syncwarp();
  if (threadIdx.x % 32 == 0)
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) (layout == mem_row_major ? p[i * ld + j] : p[j * ld + i]) = f.x[i][j];
  __syncwarp();
}

}  // namespace wmma
}  // namespace nvcuda
