// Emulation stub (tests/ops/cuda_emulation): the runtime API the lnl kernels' host code uses.
#pragma once
#include "../runtime.h"

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorCooperativeLaunchTooLarge = 720,
  cudaErrorNotSupported = 801
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  const lnl_emu::Device& d = lnl_emu::device();
  *value = attr == cudaDevAttrMultiProcessorCount     ? d.sms
           : attr == cudaDevAttrComputeCapabilityMajor ? d.major
           : attr == cudaDevAttrCooperativeLaunch      ? 1
                                                       : d.max_smem_optin;
  return cudaSuccess;
}

inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid value"; }

template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      value > lnl_emu::device().max_smem_optin)
    return cudaErrorInvalidValue;
  lnl_emu::smem_limits()[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(value);
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }

// cudaLaunchKernelEx with the attributes lnl uses: a cluster dimension (along x), cooperative.
enum cudaLaunchAttributeID { cudaLaunchAttributeCooperative = 2, cudaLaunchAttributeClusterDimension = 4 };
union cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
  int cooperative;
  char pad[64];
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};

template <typename... Expected, typename... Actual>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Expected...), Actual&&... args) {
  unsigned cluster = 1;
  bool cooperative = false;
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    const cudaLaunchAttribute& a = config->attrs[i];
    if (a.id == cudaLaunchAttributeCooperative) {
      cooperative = a.val.cooperative != 0;
    } else if (a.id == cudaLaunchAttributeClusterDimension && a.val.clusterDim.y == 1 && a.val.clusterDim.z == 1) {
      cluster = a.val.clusterDim.x;
    } else {
      return cudaErrorInvalidValue;
    }
  }
  lnl_emu::LaunchConfig cfg(config->gridDim, config->blockDim, config->dynamicSmemBytes, config->stream, cluster);
  cfg.cooperative = cooperative;
  lnl_emu::launch(cfg, kernel, Expected(std::forward<Actual>(args))...);
  return cudaSuccess;
}

// The loaded code's PTX version (the emulation compiles every path: as sm_90 on a 9.x device).
struct cudaFuncAttributes {
  int ptxVersion;
  int binaryVersion;
};
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* /*kernel*/) {
  attr->ptxVersion = attr->binaryVersion = 10 * lnl_emu::device().major;
  return cudaSuccess;
}

// Clusters the emulated device holds at once: one block per SM.
inline cudaError_t cudaOccupancyMaxActiveClusters(int* count, const void* /*kernel*/, const cudaLaunchConfig_t* config) {
  unsigned cluster = 1;
  for (unsigned i = 0; i < config->numAttrs; ++i)
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension) cluster = config->attrs[i].val.clusterDim.x;
  *count = lnl_emu::device().major >= 9 ? lnl_emu::device().sms / static_cast<int>(cluster) : 0;
  return cudaSuccess;
}

// Blocks per SM the emulated device holds of any kernel (a cooperative launch may use sms x this).
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* count, const void* /*kernel*/, int /*threads*/,
                                                               size_t /*smem*/) {
  *count = lnl_emu::kBlocksPerSm;
  return cudaSuccess;
}
