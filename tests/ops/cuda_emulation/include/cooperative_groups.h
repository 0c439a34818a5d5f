// Emulation stub (tests/ops/cuda_emulation): the thread block cluster API lnl's kernels use.
#pragma once
#include "../runtime.h"

namespace cooperative_groups {

class cluster_group {
 public:
  void sync() const { lnl_emu::wait(lnl_emu::State::kClusterBarrier); }
  unsigned block_rank() const { return lnl_emu::g_block->rank; }
  unsigned num_blocks() const { return static_cast<unsigned>(lnl_emu::g_cluster->size()); }
  template <typename T>
  T* map_shared_rank(T* addr, unsigned rank) const {
    return static_cast<T*>(lnl_emu::map_shared(addr, rank));
  }
};

inline cluster_group this_cluster() { return {}; }

}  // namespace cooperative_groups
