"""Fault injection for the mock endpoint: what a real endpoint does on a bad day, on demand.

A spec is ``;``-separated items, each ``key=value`` or a bare flag::

    latency=200;fail-first=3;status=503;retry-after=1

=====================  =====================================================================
``latency=MS``         added delay before every answer
``fail-first=N``       only the first N requests of a fault key get the failure items below;
                       later ones are answered normally (latency and max-rows still apply)
``status=CODE``        with ``fail-first``: answer 408, 424, 429, 500, 502, 503 or 504
``always=CODE``        every request answers this status (400-599; 401, 404, 413 ...)
``retry-after=S``      a ``Retry-After: S`` header (whole seconds) on the status answers
``malformed-json``     200 with a truncated JSON body
``wrong-shape``        2D masks at half size; 3D label map one slice short
``wrong-count``        one response item fewer than request rows
``drop-connection``    response headers, part of the body, then the connection is closed
``drop-affine``        3D label map with qform and sform codes 0
``max-rows=N``         413 for requests with more than N rows
=====================  =====================================================================

``none`` (or an empty spec) means no faults. Counters for ``fail-first`` are kept per fault key:
the request's ``X-Mock-Fault-Key`` header, else the spec itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, fields, replace
from typing import Final

__all__ = ["FAIL_FIRST_STATUSES", "FaultCounters", "FaultPlan", "FaultSpecError"]

FAIL_FIRST_STATUSES: Final = frozenset({408, 424, 429, 500, 502, 503, 504})
_MAX_LATENCY_MS: Final = 600_000

_FLAGS: Final = ("malformed-json", "wrong-shape", "wrong-count", "drop-connection", "drop-affine")
_VALUED: Final = ("latency", "fail-first", "status", "always", "retry-after", "max-rows")


class FaultSpecError(ValueError):
    """A fault spec that does not parse; the message names the item and what was expected."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    latency_ms: int = 0
    fail_first: int = 0
    status: int | None = None
    always: int | None = None
    retry_after: int | None = None
    malformed_json: bool = False
    wrong_shape: bool = False
    wrong_count: bool = False
    drop_connection: bool = False
    drop_affine: bool = False
    max_rows: int | None = None

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        text = spec.strip()
        if text.lower() in ("", "none"):
            return cls()
        values: dict[str, object] = {}
        for item in (part.strip() for part in text.split(";")):
            if not item:
                continue
            key, has_value, value = (s.strip() for s in item.partition("="))
            key = key.lower()
            if key in _FLAGS:
                if has_value:
                    raise FaultSpecError(f"fault item {key!r} is a flag and takes no value")
                parsed: object = True
            elif key in _VALUED:
                if not value:
                    raise FaultSpecError(f"fault item {key!r} needs a value ({key}=...)")
                parsed = _whole_number(key, value)
            else:
                known = ", ".join(sorted(_FLAGS + _VALUED))
                raise FaultSpecError(f"unknown fault item {key!r}; known items: {known}")
            attribute = key.replace("-", "_") + ("_ms" if key == "latency" else "")
            if attribute in values:
                raise FaultSpecError(f"fault item {key!r} is given twice")
            values[attribute] = parsed
        plan = cls(**values)  # type: ignore[arg-type]
        plan.validate()
        return plan

    def validate(self) -> None:
        """Raise FaultSpecError for combinations that would not mean anything."""
        if not 0 <= self.latency_ms <= _MAX_LATENCY_MS:
            raise FaultSpecError(f"latency must be 0..{_MAX_LATENCY_MS} ms, got {self.latency_ms}")
        if self.status is not None and self.status not in FAIL_FIRST_STATUSES:
            allowed = ", ".join(map(str, sorted(FAIL_FIRST_STATUSES)))
            raise FaultSpecError(f"status must be one of {allowed}, got {self.status}")
        if self.always is not None and not 400 <= self.always <= 599:
            raise FaultSpecError(f"always must be an HTTP error status (400-599), got {self.always}")
        if self.status is not None and not self.fail_first:
            raise FaultSpecError("status applies to fail-first=N; use always=CODE for every request")
        if self.always is not None and self.fail_first:
            raise FaultSpecError("always and fail-first exclude each other")
        if self.fail_first and not self.failure_items():
            raise FaultSpecError(
                "fail-first=N needs a failure to scope: status=CODE or a flag such as drop-connection"
            )
        if self.retry_after is not None and self.status is None and self.always is None:
            raise FaultSpecError("retry-after goes with status=CODE or always=CODE")
        if self.max_rows is not None and self.max_rows < 1:
            raise FaultSpecError("max-rows must be at least 1")

    def failure_items(self) -> tuple[str, ...]:
        """The items ``fail-first`` scopes, as they are spelled in a spec."""
        names = [name for name in _FLAGS if getattr(self, name.replace("-", "_"))]
        return (*names, *(["status"] if self.status is not None else []))

    def benign(self) -> FaultPlan:
        """What is left for the requests after the first N: slowness and size limits."""
        return FaultPlan(latency_ms=self.latency_ms, max_rows=self.max_rows)

    def spec(self) -> str:
        """The canonical spec string (the default fault key); ``parse(plan.spec()) == plan``."""
        items = []
        for field in fields(self):
            value = getattr(self, field.name)
            name = field.name.removesuffix("_ms").replace("_", "-")
            if value is True:
                items.append(name)
            elif value not in (None, False, 0):
                items.append(f"{name}={value}")
        return ";".join(items) or "none"

    def with_latency(self, latency_ms: int) -> FaultPlan:
        plan = replace(self, latency_ms=latency_ms)
        plan.validate()
        return plan


class FaultCounters:
    """Per-key request counts for ``fail-first``, shared by the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def effective(self, plan: FaultPlan, key: str) -> FaultPlan:
        """The plan for this request: the whole plan while the key is within its first N requests."""
        if not plan.fail_first:
            return plan
        with self._lock:
            self._seen[key] += 1
            seen = self._seen[key]
        return plan if seen <= plan.fail_first else plan.benign()


def _whole_number(key: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise FaultSpecError(f"fault item {key!r} needs a whole number, got {value!r}")
    return int(value)
