"""The listener's counters, in process, for the metrics endpoint to expose (Prometheus-style totals).

mipgw_scp_instances_total{calling_ae}   instances stored
mipgw_scp_bytes_total{calling_ae}       data set bytes stored
mipgw_scp_repeats_total{calling_ae}     stored again under a SOP Instance UID already there
mipgw_scp_failures_total{outcome}       instances refused (a StoreOutcome name)
mipgw_scp_associations_total            associations accepted
mipgw_scp_refusals_total{reason}        association requests refused (a Refusal name)
mipgw_scp_dropped_connections_total     TCP connections closed at once: too many open
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from service.scp_status import Refusal, StoreOutcome

__all__ = ["CounterSnapshot", "ListenerCounters"]


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    instances: dict[str, int]
    bytes: dict[str, int]
    repeats: dict[str, int]
    failures: dict[str, int]
    associations: int
    refusals: dict[str, int]
    dropped_connections: int = 0

    @property
    def total_instances(self) -> int:
        return sum(self.instances.values())


@dataclass
class ListenerCounters:
    """Thread-safe totals since the listener started."""

    _instances: Counter[str] = field(default_factory=Counter)
    _bytes: Counter[str] = field(default_factory=Counter)
    _repeats: Counter[str] = field(default_factory=Counter)
    _failures: Counter[str] = field(default_factory=Counter)
    _refusals: Counter[str] = field(default_factory=Counter)
    _associations: int = 0
    _dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stored(self, calling_ae: str, size: int, *, repeated: bool) -> None:
        with self._lock:
            self._instances[calling_ae] += 1
            self._bytes[calling_ae] += size
            if repeated:
                self._repeats[calling_ae] += 1

    def failed(self, outcome: StoreOutcome) -> None:
        with self._lock:
            self._failures[outcome.name] += 1

    def accepted(self) -> None:
        with self._lock:
            self._associations += 1

    def refused(self, refusal: Refusal) -> None:
        with self._lock:
            self._refusals[refusal.name] += 1

    def connection_dropped(self) -> None:
        with self._lock:
            self._dropped += 1

    def snapshot(self) -> CounterSnapshot:
        with self._lock:
            return CounterSnapshot(
                instances=dict(self._instances),
                bytes=dict(self._bytes),
                repeats=dict(self._repeats),
                failures=dict(self._failures),
                associations=self._associations,
                refusals=dict(self._refusals),
                dropped_connections=self._dropped,
            )
