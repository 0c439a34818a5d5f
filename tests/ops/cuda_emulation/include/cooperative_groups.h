// Emulation stub (tests/ops/cuda_emulation): the cluster and grid API lnl's kernels use.
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

// Only valid in a cooperative launch (the emulation runs its blocks as one group, as a cluster).
class grid_group {
 public:
  void sync() const {
    if (!lnl_emu::g_cooperative) lnl_emu::fail("grid.sync() outside a cooperative launch");
    lnl_emu::wait(lnl_emu::State::kClusterBarrier);
  }
};

inline grid_group this_grid() { return {}; }

}  // namespace cooperative_groups
