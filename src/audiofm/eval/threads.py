"""Thread limits for probing: probe-sized problems run fastest single-threaded on shared machines."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator


@functools.cache
def warm_imports() -> None:
    """Import the probes' heavy dependencies up front so the first fit's time is not inflated."""
    import scipy.optimize  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # first use pulls in torch._dynamo


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` threads in torch, BLAS (threadpoolctl) and faiss; None: no change."""
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    # threadpoolctl only limits BLAS/OpenMP libraries already loaded: load scipy's and
    # scikit-learn's (a separate OpenBLAS build from numpy's) before setting the limit
    warm_imports()
    before = torch.get_num_threads()
    faiss_before = None
    try:
        import faiss

        faiss_before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)
        if faiss_before is not None:
            import faiss

            faiss.omp_set_num_threads(faiss_before)
