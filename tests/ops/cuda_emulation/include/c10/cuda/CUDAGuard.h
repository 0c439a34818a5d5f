// Emulation stub: device guards do nothing (the emulated "device" is the CPU).
#pragma once
#include <c10/core/Device.h>
#include <optional>
#include "../../cuda_runtime.h"
namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
struct OptionalCUDAGuard {
  explicit OptionalCUDAGuard(c10::Device) {}
  explicit OptionalCUDAGuard(std::optional<c10::Device>) {}
};
}  // namespace cuda
}  // namespace c10
