// Emulation stub: errors of emulated launches are thrown at the launch.
#pragma once
#include <c10/util/Exception.h>
#include "../../cuda_runtime.h"
#define C10_CUDA_CHECK(expr)                                                                    \
  do {                                                                                          \
    const cudaError_t lnl_emu_err = (expr);                                                     \
    TORCH_CHECK(lnl_emu_err == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(lnl_emu_err)); \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)
