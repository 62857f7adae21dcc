"""Row-parallel kernels on one Python thread per core (used by knn, relation and weiper)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

_T = TypeVar("_T")
_R = TypeVar("_R")

_BLAS_LIMIT_LOCK = threading.Lock()


def _renew_lock() -> None:
    # A child forked while another thread held the lock would otherwise wait for it forever.
    global _BLAS_LIMIT_LOCK
    _BLAS_LIMIT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock)


def worker_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def split_rows(n: int) -> list[slice]:
    """``n`` rows in one contiguous slice per worker thread of :func:`map_threads`."""
    step = -(-n // worker_count())
    return [slice(i, i + step) for i in range(0, n, step)]


def map_threads(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[fn(item) for item in items]`` on one Python thread per core, BLAS single-threaded.

    Blockwise kernels make hundreds of small NumPy/BLAS (or torch) calls per chunk. A
    multi-threaded library synchronises its threads at every call, and when another process
    holds a core each of those barriers waits for the scheduler: the kernel then runs 5-20×
    slower. Independent Python threads never wait on each other (NumPy releases the GIL in BLAS
    calls and ufunc loops), so they use both cores of an idle machine and degrade only in
    proportion on a busy one. The lock stops two callers from interleaving threadpoolctl's
    process-wide limit, which restores whatever it found on entry.
    """
    workers = min(worker_count(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with _BLAS_LIMIT_LOCK, threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(
        workers, thread_name_prefix="unseen"
    ) as pool:
        return list(pool.map(fn, items))
