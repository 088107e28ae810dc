"""What the front door received, counted in this process: instances and bytes per route and calling AE.

A plain, thread-safe tally with no exporter attached, so the DICOM listener and the STOW-RS route
feed the same object without importing the HTTP stack; ``service.api.metrics`` turns it into
Prometheus counters (``mipgw_instances_received_total``, ``mipgw_received_bytes_total``)::

    counters = ReceiveCounters()
    counters.received(Route.DIMSE, "CT_SCANNER", nbytes)

Counts live as long as the process: a scrape of another process (a listener started on its own)
does not see them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from workers.jobs import Route

__all__ = ["ReceiveCounters", "ReceivedTally"]


@dataclass(frozen=True, slots=True)
class ReceivedTally:
    route: Route
    calling_ae: str  # "" when the route has none (STOW-RS)
    instances: int
    bytes: int


class ReceiveCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[Route, str], list[int]] = {}

    def received(self, route: Route, calling_ae: str | None, nbytes: int) -> None:
        """One instance stored durably (count it only then)."""
        key = (Route(route), (calling_ae or "").strip())
        with self._lock:
            tally = self._counts.setdefault(key, [0, 0])
            tally[0] += 1
            tally[1] += max(int(nbytes), 0)

    def snapshot(self) -> list[ReceivedTally]:
        with self._lock:
            items = sorted(self._counts.items())
        return [ReceivedTally(route, ae, count, size) for (route, ae), (count, size) in items]
