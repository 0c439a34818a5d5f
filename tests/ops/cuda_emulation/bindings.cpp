// Python bindings of the emulated CUDA ops (csrc/*/*_cuda.cu compiled for the CPU emulation by
// build.py): the same arguments and results as torch.ops.lnl.<op>, on CPU tensors.
#include <torch/extension.h>

#include <string>

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("knn_labels", &knn_labels);
  m.def("gmm_kmeans", &lnl::gmm_kmeans_cuda);
  m.def("gmm_em", &lnl::gmm_em_cuda);
  m.def("plr_loss", &lnl::plr_loss_cuda);
  m.def("plr_loss_backward", &lnl::plr_loss_backward_cuda);
  m.def("plr_mask", &lnl::plr_mask_cuda);
}
