"""Backoff, Retry-After, the per-endpoint concurrency limit and the circuit breaker.

The limit and the breaker belong to the endpoint, not to one client: every task of a worker process
that talks to endpoint "mip2d" shares one :class:`EndpointGate`, so N concurrent jobs never put more
than ``max_in_flight`` requests on a metered GPU deployment, and one job's discovery that the
endpoint is down spares the others the wait.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["CircuitBreaker", "EndpointGate", "backoff_delay", "gate_for", "retry_after_seconds"]


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, initial·2^attempt)]."""
    return rng.uniform(0.0, min(maximum, initial * (2.0**attempt)))


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None when absent/invalid."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed attempts; lets one trial through after ``cooldown``."""

    threshold: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    _failures: int = 0
    _open_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open_for(self) -> float:
        """Seconds until a request may be tried again; 0 when the circuit is closed (or half-open)."""
        with self._lock:
            return max(0.0, self._open_until - self.clock())

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._open_until = self.clock() + self.cooldown

    @property
    def consecutive_failures(self) -> int:
        return self._failures


@dataclass
class EndpointGate:
    """What all clients of one endpoint in this process share."""

    slots: threading.BoundedSemaphore
    breaker: CircuitBreaker
    max_in_flight: int

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.slots.acquire()
        try:
            yield
        finally:
            self.slots.release()


_gates: dict[tuple[str, str], EndpointGate] = {}
_gates_lock = threading.Lock()


def gate_for(name: str, url: str, *, max_in_flight: int, threshold: int, cooldown: float) -> EndpointGate:
    """The process-wide gate of one endpoint (created on first use with these limits)."""
    with _gates_lock:
        gate = _gates.get((name, url))
        if gate is None:
            gate = EndpointGate(
                threading.BoundedSemaphore(max_in_flight), CircuitBreaker(threshold, cooldown), max_in_flight
            )
            _gates[(name, url)] = gate
        return gate
