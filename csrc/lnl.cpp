// The only TORCH_LIBRARY(lnl, ...) block: every operator schema of lnl._C, grouped by op.
// Kernels are bound per device in csrc/<op>/<op>_cpu.cpp (CPU) and csrc/<op>/<op>_cuda.cu (CUDA);
// fake (meta) kernels and autograd are registered from Python in lnl/ops/<op>.py.
// Adding an op: see csrc/README.md.
#include <Python.h>
#include <torch/library.h>

// Importing lnl._C only has to run the static registrars below; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(lnl, m) {
  // kNN label retrieval: LRA-Diffusion utils/knn_utils.py (lnl/ops/knn.py).
  // metric: "cosine" | "ip" | "l2"; chunk: query rows per block (0 = automatic).
  m.def(
      "knn_labels(Tensor queries, Tensor keys, Tensor key_labels, int k, int num_classes, "
      "str metric, bool exclude_self, int chunk) -> (Tensor indices, Tensor scores, Tensor votes)");
  // The same through cuBLAS score tiles and a running top-k select (CUDA only; k <= 256, no float64):
  // a candidate that backend="auto"'s tuner measures against knn_labels's tile kernel.
  m.def(
      "knn_labels_gemm(Tensor queries, Tensor keys, Tensor key_labels, int k, int num_classes, "
      "str metric, bool exclude_self, int chunk) -> (Tensor indices, Tensor scores, Tensor votes)");

  // >>> gmm schemas (lnl/ops/gmm_reference.py)
  // k-means init replaying sklearn's KMeans(K, n_init=1): uniforms float64 [G, U] are the host's
  // RandomState draws; returns int64 labels [G, N].
  m.def("gmm_kmeans(Tensor x, Tensor lengths, Tensor uniforms, int n_components) -> Tensor labels");
  // EM from exactly one of init_labels, init_resp or (weights, means, covs); status 1 = a covariance
  // was not positive definite.
  m.def(
      "gmm_em(Tensor x, Tensor lengths, Tensor? init_labels, Tensor? init_resp, Tensor? weights, "
      "Tensor? means, Tensor? covs, int n_components, int max_iter, float tol, float reg_covar) -> "
      "(Tensor weights, Tensor means, Tensor covs, Tensor resp, Tensor lower_bound, Tensor n_iter, "
      "Tensor converged, Tensor status)");
  // <<< gmm schemas

  // >>> plr schemas (lnl/ops/plr_reference.py)
  // PLReMix's PLR loss over view-major features [V*B, D]; candidate sets from cand [B, k'] (int64),
  // labels [B] (int64), kappa (0 = top-1 only). Returns (objective, value, lse[N], n_neg[N] int32);
  // the objective carries the loss's gradient (flat: mean of v_a over rows with a negative).
  m.def(
      "plr_loss(Tensor features, Tensor cand, Tensor labels, int kappa, int num_classes, "
      "float temperature, float base_temperature, bool flat) -> "
      "(Tensor objective, Tensor value, Tensor lse, Tensor n_neg)");
  m.def(
      "plr_loss_backward(Tensor grad, Tensor features, Tensor cand, Tensor labels, Tensor lse, "
      "Tensor n_neg, int kappa, int num_classes, float temperature, float base_temperature, "
      "bool flat) -> Tensor");
  // Debug/test mask int8 [B, B]: +1 diagonal, -1 disjoint candidate sets, 0 neglected.
  m.def("plr_mask(Tensor cand, Tensor labels, int kappa, int num_classes) -> Tensor");
  // <<< plr schemas
}
