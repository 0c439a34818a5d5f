// Python bindings of the emulated CUDA ops (csrc/*/*_cuda.cu compiled for the CPU emulation by
// build.py): the same arguments and results as torch.ops.lnl.<op>, on CPU tensors.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "cuda_runtime.h"

#include "gmm/gmm.h"
#include "knn/knn.h"
#include "plr/plr.h"

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels(const at::Tensor& queries, const at::Tensor& keys,
                                                          const at::Tensor& key_labels, int64_t k,
                                                          int64_t num_classes, const std::string& metric,
                                                          bool exclude_self, int64_t chunk) {
  return lnl::knn_labels_cuda(queries, keys, key_labels, k, num_classes, metric, exclude_self, chunk);
}

// The GEMM + select variant; tile_elements: scores per GEMM tile (0: the op's default).
std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_labels_gemm(const at::Tensor& queries, const at::Tensor& keys,
                                                               const at::Tensor& key_labels, int64_t k,
                                                               int64_t num_classes, const std::string& metric,
                                                               bool exclude_self, int64_t chunk, int64_t tile_elements) {
  return lnl::knn_labels_gemm_tiles(queries, keys, key_labels, k, num_classes, metric, exclude_self, chunk,
                                    tile_elements);
}

// The emulated device's SM count, opt-in shared memory per block and compute capability (what
// launch shapes depend on).
void set_device(int sms, int max_smem_optin, int major) {
  TORCH_CHECK(max_smem_optin <= static_cast<int>(lnl_emu::kMaxDynamicSmem), "at most ", lnl_emu::kMaxDynamicSmem);
  lnl_emu::device() = {sms, max_smem_optin, major};
}

// (blocks, threads, dynamic shared bytes, blocks per cluster) of each launch since the last call.
std::vector<std::vector<int64_t>> launches() {
  auto out = lnl_emu::launch_log();
  lnl_emu::launch_log().clear();
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_device", &set_device, py::arg("sms"), py::arg("max_smem_optin"), py::arg("major") = 9);
  m.def("launches", &launches);
  m.def("knn_labels", &knn_labels);
  m.def("knn_labels_gemm", &knn_labels_gemm, py::arg("queries"), py::arg("keys"), py::arg("key_labels"), py::arg("k"),
        py::arg("num_classes"), py::arg("metric"), py::arg("exclude_self"), py::arg("chunk"),
        py::arg("tile_elements") = 0);
  m.def("gmm_kmeans", &lnl::gmm_kmeans_cuda);
  m.def("gmm_em", &lnl::gmm_em_cuda);
  m.def("plr_loss", &lnl::plr_loss_cuda);
  m.def("plr_loss_backward", &lnl::plr_loss_backward_cuda);
  m.def("plr_mask", &lnl::plr_mask_cuda);
}
