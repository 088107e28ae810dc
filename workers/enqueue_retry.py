"""Queue messages the broker refused, published again as soon as it is back.

The listener and the API write a job to the store first and publish its task second. When the
broker is down at that moment (a Redis restart, a network blip) the job is durable but nobody is
told; the sweeper would find it only after the visibility timeout (hours). :class:`RetryingEnqueuer`
keeps what the broker refused, in order, and :meth:`flush` — called every tick of the intake's
timer — publishes it again with a growing pause between tries. What it holds lives only in this
process: if the process dies too, the sweeper is still the backstop. Tasks are idempotent, so a
message that did reach the broker before an error was raised costs a duplicate, never a second result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from workers.jobs import Priority
from workers.pipeline import Enqueuer

__all__ = ["RetryingEnqueuer"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Message:
    kind: str  # "process" / "deliver" / "pull"
    job_id: str
    argument: str | None  # the priority or the destination


class RetryingEnqueuer:
    """An :class:`~workers.pipeline.Enqueuer` that never raises: what fails is held for :meth:`flush`."""

    def __init__(
        self,
        inner: Enqueuer,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._initial = retry_initial_s
        self._max = retry_max_s
        self._clock = clock
        self._held: list[_Message] = []
        self._pause = retry_initial_s
        self._next_try = 0.0
        self._lock = threading.Lock()

    def process(self, job_id: str, priority: Priority) -> None:
        self._publish(_Message("process", job_id, str(priority)))

    def deliver(self, job_id: str, destination: str) -> None:
        self._publish(_Message("deliver", job_id, destination))

    def pull(self, job_id: str) -> None:
        self._publish(_Message("pull", job_id, None))

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def flush(self, *, now: bool = False) -> int:
        """Publish what is held, oldest first, once its pause is over (``now``: a last try, as the
        process stops); how many went out."""
        with self._lock:
            if not self._held or (self._clock() < self._next_try and not now):
                return 0
            pending, self._held = self._held, []
        sent = 0
        for n, message in enumerate(pending):
            try:
                self._send(message)
            except Exception as exc:
                with self._lock:
                    self._held[:0] = pending[n:]  # before anything refused meanwhile: keep the order
                    self._next_try = self._clock() + self._pause
                    self._pause = min(self._max, self._pause * 2)
                    left = len(self._held)
                log.warning("enqueue.still_refused", held=left, error=_describe(exc))
                break
            sent += 1
        else:
            with self._lock:
                self._pause = self._initial
        if sent:
            log.info("enqueue.published_late", count=sent)
        return sent

    def _publish(self, message: _Message) -> None:
        with self._lock:
            waiting = bool(self._held)
        if not waiting:
            try:
                self._send(message)
                return
            except Exception as exc:
                log.warning(
                    "enqueue.deferred", job_id=message.job_id, task=message.kind, error=_describe(exc)
                )
        with self._lock:
            if not self._held:
                self._next_try = self._clock() + self._pause
                self._pause = min(self._max, self._pause * 2)
            self._held.append(message)

    def _send(self, message: _Message) -> None:
        if message.kind == "process":
            self.inner.process(message.job_id, Priority(message.argument or Priority.ROUTINE))
        elif message.kind == "deliver":
            assert message.argument is not None
            self.inner.deliver(message.job_id, message.argument)
        else:
            self.inner.pull(message.job_id)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
