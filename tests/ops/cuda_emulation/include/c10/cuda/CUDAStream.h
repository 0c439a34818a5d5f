// Emulation stub: one default stream; launches run synchronously.
#pragma once
#include "../../cuda_runtime.h"
namespace c10 {
namespace cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(int /*device*/ = -1) { return {}; }
}  // namespace cuda
}  // namespace c10
