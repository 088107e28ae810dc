"""One process-wide thread pool for the mock's per-row (2D) and per-slice (3D) work.

OpenCV, zlib and most numpy loops release the GIL, so rows and slices run in parallel. One shared
pool, not one per request, keeps concurrent requests from multiplying threads past the CPU count.
Only request threads may submit: a task that waited on the pool from inside it could deadlock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

_MAX_WORKERS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def parallel_map(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(item) for item in items]`` on the shared pool, results in input order."""
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = min(_MAX_WORKERS, os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mock-segment")
    return list(_pool.map(function, items))
