"""Run one call from many threads at once (real HTTP through the app, real database)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_concurrently(n: int, call: Callable[[int], T]) -> list[T]:
    """``call(i)`` for i in 0..n-1, all released together by a barrier; results in order."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))
