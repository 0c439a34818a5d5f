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
  // kNN label retrieval: specs/kernels_and_anchors.md §1, specs/lra_dmlp.md §A.5.
  // metric: "cosine" | "ip" | "l2"; chunk: query rows per block (0 = automatic).
  m.def(
      "knn_labels(Tensor queries, Tensor keys, Tensor key_labels, int k, int num_classes, "
      "str metric, bool exclude_self, int chunk) -> (Tensor indices, Tensor scores, Tensor votes)");

  // >>> gmm schemas (specs/plremix_dividemix.md §11.1)
  // <<< gmm schemas

  // >>> plr schemas (specs/plremix_dividemix.md §5.6, §5.7, §11.2)
  // <<< plr schemas
}
