"""Process-level counters of the mock endpoint, served at ``GET /stats``.

Benchmarks read ``in_flight_max`` to see how many requests a client really had outstanding at once,
which the client cannot tell about itself once connection pools and thread pools are involved.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

__all__ = ["Stats"]


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; requests in flight stay counted, so the gauge stays true."""
        with self._lock:
            self._requests = 0
            self._rows = 0
            self._in_flight_max = self._in_flight
            self._handler_seconds = 0.0
            self._outcomes: Counter[str] = Counter()
            self._since = time.time()

    def begin(self) -> float:
        with self._lock:
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)
        return time.perf_counter()

    def end(self, started: float, outcome: str, rows: int) -> None:
        """``outcome``: the status code as text, or ``"dropped"`` for a dropped connection."""
        elapsed = time.perf_counter() - started
        with self._lock:
            self._in_flight -= 1
            self._requests += 1
            self._rows += rows
            self._handler_seconds += elapsed
            self._outcomes[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "rows": self._rows,
                "in_flight": self._in_flight,
                "in_flight_max": self._in_flight_max,
                "handler_seconds": round(self._handler_seconds, 6),
                "outcomes": dict(sorted(self._outcomes.items())),
                "since": self._since,
            }
