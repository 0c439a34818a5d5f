// CUDA batched GMM EM and k-means init (specs/plremix_dividemix.md §11.1); device code in
// gmm_kernels.cuh. Problems with N <= kSmallN run one team each for the whole fit (one launch): a
// block, or on sm_90+ a cluster of kCluster blocks when the problems are few and large enough that
// one SM each would leave the GPU idle (use_clusters: DivideMix's and PLReMix's one fit of 50k).
// Larger problems split every pass over up to kMaxBlocks blocks per problem, with a per-problem
// update kernel after each pass (2 launches per EM iteration, all queued without a host
// synchronisation; finished problems return at once). k-means runs one team per problem whatever N.
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
constexpr int64_t kSmallN = 65536;
constexpr int64_t kPointsPerBlock = 8192;
constexpr int64_t kMaxBlocks = 1024;
constexpr int kUpdateThreads = 128;
constexpr int kCluster = 8;             // blocks per problem in a cluster: the portable maximum
constexpr int64_t kClusterMinN = 16384;  // below, a cluster's barriers cost more than its SMs save

// Whether G problems of N points run a cluster each rather than a block each: sm_90+, at least
// kClusterMinN points, and few enough problems that every cluster has its SMs at once.
// LNL_GMM_CLUSTERS=0 in the environment turns clusters off (benchmarks/bench_gmm.py compares).
bool use_clusters(int64_t G, int64_t N) {
  const char* env = std::getenv("LNL_GMM_CLUSTERS");
  if (N < kClusterMinN || (env != nullptr && std::string(env) == "0")) return false;
  int dev = 0, major = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return major >= 9 && G * kCluster <= sms;
}

// How many clusters of `kernel` the device holds at once: 0 when the loaded code has no clusters
// (an sm_90+ GPU JIT-compiling compute_80 PTX gets the trapping stub) or none fits. Cached: the
// occupancy query costs more than a launch.
int max_active_clusters(const void* kernel, cudaLaunchConfig_t cfg) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(kernel, dev);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  int fits = 0;
  if (attr.ptxVersion >= 90) C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&fits, kernel, &cfg));
  return cache[key] = fits;
}

// Launches `kernel` (a team kernel instantiated for kCluster) over G clusters of kCluster blocks
// when the device holds all G at once; false otherwise (the caller launches one block per problem).
template <typename... Params, typename... Args>
bool launch_clusters(void (*kernel)(Params...), int64_t G, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(G * kCluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute cluster = {};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kCluster;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cfg.attrs = &cluster;
  cfg.numAttrs = 1;
  if (max_active_clusters(reinterpret_cast<const void*>(kernel), cfg) < G) return false;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...));
  return true;
}

template <typename F>
void dispatch_d(int64_t d, const F& f) {
  if (d == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, 2>{});
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

// The multi-block path: state buffers on the device, 2 launches per EM iteration.
template <typename scalar_t, int D>
void em_multiblock(const gmm_cuda::EmArgs<scalar_t>& a, int64_t G, const at::Tensor& x,
                   cudaStream_t stream) {
  const int blocks = static_cast<int>(std::min(kMaxBlocks, (a.N + kPointsPerBlock - 1) / kPointsPerBlock));
  const auto dopt = x.options().dtype(at::kDouble);
  const int64_t model_doubles = sizeof(gmm::Model) / sizeof(double);
  at::Tensor models = at::empty({G, model_doubles}, dopt);
  at::Tensor lb = at::empty({G}, dopt);
  at::Tensor active = at::ones({G}, x.options().dtype(at::kInt));
  at::Tensor ok = at::ones({G}, x.options().dtype(at::kInt));
  at::Tensor not_finite = at::zeros({G}, x.options().dtype(at::kInt));
  at::Tensor partial = at::empty({G, blocks, gmm::kNumStats}, dopt);
  gmm_cuda::EmState st{reinterpret_cast<gmm::Model*>(models.data_ptr<double>()), lb.data_ptr<double>(),
                       active.data_ptr<int>(), ok.data_ptr<int>(), not_finite.data_ptr<int>(),
                       partial.data_ptr<double>(), blocks};
  const dim3 grid(static_cast<unsigned>(G), blocks);  // problems on x: no 65535 cap
  const int upd = static_cast<int>((G + kUpdateThreads - 1) / kUpdateThreads);
  gmm_cuda::em_finite_kernel<scalar_t, D><<<grid, kThreads, 0, stream>>>(a, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (a.mode != 2) {
    gmm_cuda::em_partial_kernel<scalar_t, D><<<grid, kThreads, 0, stream>>>(a, st, 1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  gmm_cuda::em_update_kernel<scalar_t, D><<<upd, kUpdateThreads, 0, stream>>>(a, st, G, 0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  for (int64_t it = 1; it <= a.max_iter; ++it) {
    gmm_cuda::em_partial_kernel<scalar_t, D><<<grid, kThreads, 0, stream>>>(a, st, 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gmm_cuda::em_update_kernel<scalar_t, D><<<upd, kUpdateThreads, 0, stream>>>(a, st, G, it);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  gmm_cuda::em_resp_kernel<scalar_t, D><<<grid, kThreads, 0, stream>>>(a, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  gmm_cuda::em_store_kernel<scalar_t, D><<<upd, kUpdateThreads, 0, stream>>>(a, st, G);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
      constexpr int D = decltype(dc)::value;
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const int64_t* lp = len.data_ptr<int64_t>();
      const double* up = u.data_ptr<double>();
      int64_t* out = labels.data_ptr<int64_t>();
      const int K = static_cast<int>(n_components);
      if (use_clusters(G, N) && launch_clusters(gmm_cuda::kmeans_team_kernel<scalar_t, D, kCluster>, G, stream, xp,
                                                lp, up, u.size(1), out, N, K))
        return;
      gmm_cuda::kmeans_team_kernel<scalar_t, D, 1><<<G, kThreads, 0, stream>>>(xp, lp, up, u.size(1), out, N, K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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
        constexpr int DD = decltype(dc)::value;
        if (N <= kSmallN) {
          if (use_clusters(G, N) && launch_clusters(gmm_cuda::em_team_kernel<scalar_t, DD, kCluster>, G, stream, a))
            return;
          gmm_cuda::em_team_kernel<scalar_t, DD, 1><<<G, kThreads, 0, stream>>>(a);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else {
          em_multiblock<scalar_t, DD>(a, G, x, stream);
        }
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
