"""What a benchmark's numbers depend on besides the code: the load of the (shared) machine and the
threads each backend was given. Every benchmark prints this line first and records it with its row,
so that a loaded machine or a mis-threaded anchor (faiss on 1 thread against lnl on 2) is visible."""

from __future__ import annotations

import os

import torch


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def backend_threads() -> dict[str, int | str]:
    """Threads per backend: lnl's CPU kernels and torch share ATen's pool; faiss and sklearn/BLAS
    have their own OpenMP/BLAS pools (absent packages are left out)."""
    threads: dict[str, int | str] = {"torch / lnl cpu kernels (ATen)": torch.get_num_threads()}
    try:
        import faiss

        threads["faiss (OpenMP)"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            threads[
                f"{pool.get('internal_api')} ({pool.get('user_api')}, {os.path.basename(pool.get('filepath', ''))})"
            ] = pool.get("num_threads")
    except ImportError:
        pass
    return threads


def machine_line() -> str:
    """One line: the load average and every backend's thread count."""
    threads = ", ".join(f"{name} {n}" for name, n in backend_threads().items())
    return f"{load_average()}; threads: {threads}"
