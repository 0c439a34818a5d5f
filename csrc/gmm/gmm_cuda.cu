// CUDA batched GMM EM and k-means init (lnl/ops/gmm_reference.py); device code in
// gmm_kernels.cuh. Every fit is one launch of a team kernel, shaped by launch_teams:
//  * one problem of more than kSmallN points: a cooperative launch of up to one block per
//    kPointsPerBlock points (at most what the device holds at once), summing through global memory;
//  * on sm_90, a few problems of kClusterMinN points or more: a thread block cluster of 8 blocks
//    each (all clusters resident at once; the loaded code must have clusters);
//  * otherwise one block per problem (per-class fits; several problems too large for clusters).
// LNL_GMM_CLUSTERS=0 in the environment turns clusters off (benchmarks/bench_gmm.py compares).
// Kernels are instantiated per dtype (which also sets the E-step's precision), D, K (2, or the
// generic kernels for other K) and team kind.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "gmm/gmm.h"
#include "gmm/gmm_kernels.cuh"

namespace lnl {
namespace {

using gmm_cuda::kThreads;
constexpr int64_t kSmallN = 65536;          // above, one problem takes a cooperative grid
constexpr int64_t kPointsPerBlock = 8192;   // a grid team's blocks: one per this many points
constexpr int64_t kClusterMinN = 16384;     // below, a cluster's barriers cost more than its SMs save
using BlockKind = std::integral_constant<int, gmm_cuda::kBlock>;
using ClusterKind = std::integral_constant<int, gmm_cuda::kCluster>;
using GridKind = std::integral_constant<int, gmm_cuda::kGrid>;

int current_device() {
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

int device_attribute(cudaDeviceAttr attr) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, current_device()));
  return value;
}

// A per-(kernel, device) value computed once: the occupancy queries cost more than a launch.
template <typename F>
int cached(const void* kernel, const F& compute) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  const auto key = std::make_pair(kernel, current_device());
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  return it != cache.end() ? it->second : cache[key] = compute();
}

cudaLaunchConfig_t team_config(int64_t blocks, cudaStream_t stream, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Blocks one problem of N points gets in a cooperative launch: one per kPointsPerBlock points, at
// most as many as the device holds at once (a grid barrier needs them all resident).
template <typename... Params>
int grid_blocks(void (*kernel)(Params...), int64_t N) {
  const void* k = reinterpret_cast<const void*>(kernel);
  const int per_sm = cached(k, [&] {
    int n = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, kThreads, 0));
    return n;
  });
  const int64_t resident = int64_t(per_sm) * device_attribute(cudaDevAttrMultiProcessorCount);
  return static_cast<int>(std::min(resident, (N + kPointsPerBlock - 1) / kPointsPerBlock));
}

// Whether G problems of N points run a cluster each: sm_90+, at least kClusterMinN points, the
// loaded code has clusters (PTX >= 9.0: an sm_90 GPU JIT-compiling compute_80 PTX gets the trapping
// stub) and the device holds all G clusters at once.
template <typename... Params>
bool clusters_fit(void (*kernel)(Params...), int64_t G, int64_t N) {
  const char* env = std::getenv("LNL_GMM_CLUSTERS");
  if (N < kClusterMinN || (env != nullptr && std::string(env) == "0")) return false;
  if (device_attribute(cudaDevAttrComputeCapabilityMajor) < 9 ||
      G * gmm_cuda::kClusterBlocks > device_attribute(cudaDevAttrMultiProcessorCount))
    return false;
  const void* k = reinterpret_cast<const void*>(kernel);
  const int resident = cached(k, [&] {
    cudaFuncAttributes attr;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, k));
    if (attr.ptxVersion < 90) return 0;
    cudaLaunchAttribute cluster = {};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = gmm_cuda::kClusterBlocks;
    cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    const cudaLaunchConfig_t cfg = team_config(gmm_cuda::kClusterBlocks, nullptr, &cluster);
    int n = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, k, &cfg));
    return n;
  });
  return resident >= G;
}

// Launches one fit per problem (G problems of N points) in the shape the module comment describes.
// kernel_for(kind) is the team kernel for that kind; args are its arguments before the team's
// (blocks per problem, global exchange).
template <typename KernelFor, typename... Args>
void launch_teams(const KernelFor& kernel_for, int64_t G, int64_t N, const at::Tensor& x, cudaStream_t stream,
                  Args... args) {
  TORCH_CHECK(G <= std::numeric_limits<int>::max() / gmm_cuda::kClusterBlocks, "gmm (CUDA): ", G,
              " problems exceed a grid");
  if (G == 1 && N > kSmallN && device_attribute(cudaDevAttrCooperativeLaunch)) {
    const auto kernel = kernel_for(GridKind{});
    const int blocks = grid_blocks(kernel, N);
    if (blocks >= 2) {
      at::Tensor xch = at::empty({2 * blocks * gmm_cuda::kMaxTeamSum}, x.options().dtype(at::kDouble));
      cudaLaunchAttribute coop = {};
      coop.id = cudaLaunchAttributeCooperative;
      coop.val.cooperative = 1;
      const cudaLaunchConfig_t cfg = team_config(blocks, stream, &coop);
      const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, args..., blocks, xch.data_ptr<double>());
      if (err == cudaSuccess) return;
      // a partition (MPS, a smaller context) that cannot hold the grid: the shapes below need no residency
      if (err != cudaErrorCooperativeLaunchTooLarge && err != cudaErrorNotSupported) C10_CUDA_CHECK(err);
      (void)cudaGetLastError();  // clears this launch's error only: the one checked above
    }
  }
  const auto cluster_kernel = kernel_for(ClusterKind{});
  if (clusters_fit(cluster_kernel, G, N)) {
    cudaLaunchAttribute cluster = {};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = gmm_cuda::kClusterBlocks;
    cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    const cudaLaunchConfig_t cfg = team_config(G * gmm_cuda::kClusterBlocks, stream, &cluster);
    C10_CUDA_CHECK(cudaLaunchKernelEx(&cfg, cluster_kernel, args..., 0, static_cast<double*>(nullptr)));
    return;
  }
  const auto block_kernel = kernel_for(BlockKind{});
  block_kernel<<<G, kThreads, 0, stream>>>(args..., 0, static_cast<double*>(nullptr));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename F>
void dispatch_d(int64_t d, const F& f) {
  if (d == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, 2>{});
}

// K = 2 (DivideMix, PLReMix, the self-test's usual case) has its own kernels; other K (1..kMaxK, as
// check_gmm_inputs / check_kmeans_inputs enforce) run the generic ones (see gmm_kernels.cuh).
template <typename F>
void dispatch_k(int64_t k, const F& f) {
  if (k == 2) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, gmm_cuda::kAnyK>{});
}

template <typename scalar_t>
gmm_cuda::EmArgs<scalar_t> make_args(const at::Tensor& x, const at::Tensor& len, const at::Tensor* init,
                                     int mode, std::vector<at::Tensor>& out, int64_t K, int64_t max_iter,
                                     double tol, double reg) {
  gmm_cuda::EmArgs<scalar_t> a{};
  a.x = x.data_ptr<scalar_t>();
  a.lengths = len.data_ptr<int64_t>();
  if (mode == 0) a.labels = init[0].data_ptr<int64_t>();
  if (mode == 1) a.resp0 = init[0].data_ptr<scalar_t>();
  if (mode == 2) {
    a.w0 = init[0].data_ptr<scalar_t>();
    a.mu0 = init[1].data_ptr<scalar_t>();
    a.cov0 = init[2].data_ptr<scalar_t>();
  }
  a.w = out[0].data_ptr<scalar_t>();
  a.mu = out[1].data_ptr<scalar_t>();
  a.cov = out[2].data_ptr<scalar_t>();
  a.resp = out[3].data_ptr<scalar_t>();
  a.lower_bound = out[4].data_ptr<scalar_t>();
  a.n_iter = out[5].data_ptr<int64_t>();
  a.converged = out[6].data_ptr<bool>();
  a.status = out[7].data_ptr<int64_t>();
  a.N = x.size(1);
  a.K = static_cast<int>(K);
  a.mode = mode;
  a.max_iter = max_iter;
  a.tol = tol;
  a.reg = reg;
  a.eps10 = 10.0 * std::numeric_limits<scalar_t>::epsilon();
  return a;
}

}  // namespace

at::Tensor gmm_kmeans_cuda(const at::Tensor& x_in, const at::Tensor& lengths, const at::Tensor& uniforms,
                           int64_t n_components) {
  check_kmeans_inputs(x_in, lengths, uniforms, n_components);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), len = lengths.contiguous(), u = uniforms.contiguous();
  const int64_t G = x.size(0), N = x.size(1);
  at::Tensor labels = at::empty({G, N}, x.options().dtype(at::kLong));
  if (G == 0 || N == 0) return labels.zero_();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gmm_kmeans_cuda", [&] {
    dispatch_d(x.size(2), [&](auto dc) {
      dispatch_k(n_components, [&](auto kc) {
        constexpr int D = decltype(dc)::value, KT = decltype(kc)::value;
        const auto kernel_for = [](auto kind) {
          return &gmm_cuda::kmeans_team_kernel<scalar_t, D, KT, decltype(kind)::value>;
        };
        launch_teams(kernel_for, G, N, x, stream, x.data_ptr<scalar_t>(), len.data_ptr<int64_t>(),
                     u.data_ptr<double>(), u.size(1), labels.data_ptr<int64_t>(), N, static_cast<int>(n_components));
      });
    });
  });
  return labels;
}

GmmOut gmm_em_cuda(const at::Tensor& x_in, const at::Tensor& lengths,
                   const std::optional<at::Tensor>& init_labels, const std::optional<at::Tensor>& init_resp,
                   const std::optional<at::Tensor>& weights, const std::optional<at::Tensor>& means,
                   const std::optional<at::Tensor>& covs, int64_t n_components, int64_t max_iter,
                   double tol, double reg_covar) {
  // lengths (and init_labels) are not read back here: the Python layer validates them.
  const int mode = check_gmm_inputs(x_in, lengths, init_labels, init_resp, weights, means, covs,
                                    n_components, max_iter, tol, reg_covar);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), len = lengths.contiguous();
  const int64_t G = x.size(0), N = x.size(1), D = x.size(2), K = n_components;
  TORCH_CHECK(G == 0 || N > 0, "gmm_em (CUDA): problems of N=0 points");
  at::Tensor init[3];
  if (mode == 0) init[0] = init_labels->contiguous();
  if (mode == 1) init[0] = init_resp->contiguous();
  if (mode == 2) init[0] = weights->contiguous(), init[1] = means->contiguous(), init[2] = covs->contiguous();
  const auto opt = x.options();
  std::vector<at::Tensor> out = {
      at::empty({G, K}, opt), at::empty({G, K, D}, opt), at::empty({G, K, D, D}, opt),
      at::empty({G, N, K}, opt), at::empty({G}, opt), at::empty({G}, opt.dtype(at::kLong)),
      at::empty({G}, opt.dtype(at::kBool)), at::empty({G}, opt.dtype(at::kLong))};
  if (G > 0 && N > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gmm_em_cuda", [&] {
      const auto a = make_args<scalar_t>(x, len, init, mode, out, K, max_iter, tol, reg_covar);
      dispatch_d(D, [&](auto dc) {
        dispatch_k(K, [&](auto kc) {
          constexpr int DD = decltype(dc)::value, KT = decltype(kc)::value;
          const auto kernel_for = [](auto kind) {
            return &gmm_cuda::em_team_kernel<scalar_t, DD, KT, decltype(kind)::value>;
          };
          launch_teams(kernel_for, G, N, x, stream, a);
        });
      });
    });
  }
  return {out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]};
}

TORCH_LIBRARY_IMPL(lnl, CUDA, m) {
  m.impl("gmm_kmeans", &gmm_kmeans_cuda);
  m.impl("gmm_em", &gmm_em_cuda);
}

}  // namespace lnl
