"""From received instances to queued jobs: the one place the listener and the API hand series over.

Each received instance is already durable in the spool when it reaches :class:`Intake`; the tracker
decides when its series is complete; a complete series becomes one job (route, calling AE, why it was
judged complete) and is queued — or, if the broker refuses it now, queued by a later tick
(:class:`~workers.enqueue_retry.RetryingEnqueuer`; the job itself is already in the store). The
job's idempotency key is the series and the exact set of SOP Instance UIDs it holds, so the same
series sent twice is processed once, while a series that grew (late instances) is processed again as
a new run.
"""

from __future__ import annotations

import hashlib
import threading

import structlog

from service.completion import ArrivalFacts, CompletedSeries, CompletionTracker
from workers.enqueue_retry import RetryingEnqueuer
from workers.jobs import JobState, Priority
from workers.pipeline import Enqueuer
from workers.storage import DataDir
from workers.store import JobView, Store, ensure_job

__all__ = ["Intake"]

log = structlog.get_logger(__name__)


class Intake:
    def __init__(
        self,
        data: DataDir,
        store: Store,
        enqueue: Enqueuer,
        tracker: CompletionTracker,
        *,
        actor: str,
        tick_s: float = 1.0,
    ) -> None:
        self.data = data
        self.store = store
        # the job is durable before its task is published: a broker that is down now gets it later
        self.enqueue = enqueue if isinstance(enqueue, RetryingEnqueuer) else RetryingEnqueuer(enqueue)
        self.tracker = tracker
        self.actor = actor
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # complete, but the store or queue failed: the tracker has let go of them, so tick() retries
        self._unsubmitted: list[CompletedSeries] = []
        self._unsubmitted_lock = threading.Lock()

    def received(self, facts: ArrivalFacts) -> JobView | None:
        """The job of a series this instance completed (by its announced count), or None.

        A job the store refuses now is retried at the next tick: the instance is durable either way,
        so the sender is told success and nothing it sent is dropped."""
        completed = self.tracker.arrived(facts)
        jobs = self._submit_or_retry([completed]) if completed else []
        return jobs[0] if jobs else None

    def association_opened(self, association: str, calling_ae: str | None = None) -> None:
        self.tracker.association_opened(association, calling_ae)

    def association_released(self, association: str) -> list[JobView]:
        return self._submit_or_retry(self.tracker.association_released(association))

    def association_aborted(self, association: str) -> None:
        self.tracker.association_aborted(association)

    def request_complete(self, series_uids: list[str], reason: str) -> list[JobView]:
        done = [self.tracker.complete(uid, reason) for uid in series_uids]
        return [self.submit(c) for c in done if c is not None]

    def tick(self) -> list[JobView]:
        self.enqueue.flush()
        with self._unsubmitted_lock:
            retry, self._unsubmitted = self._unsubmitted, []
        return self._submit_or_retry([*retry, *self.tracker.due()])

    def _submit_or_retry(self, completed: list[CompletedSeries]) -> list[JobView]:
        """Submit each; one refused now (a locked or unreachable database) is kept for the next tick."""
        jobs = []
        for series in completed:
            try:
                jobs.append(self.submit(series))
            except Exception:
                log.exception("intake.submit_failed", series_instance_uid=series.series_instance_uid)
                with self._unsubmitted_lock:
                    self._unsubmitted.append(series)
        return jobs

    def submit(self, completed: CompletedSeries) -> JobView:
        folder = self.data.incoming_series(completed.study_instance_uid, completed.series_instance_uid)
        sops = sorted(p.stem for p in folder.glob("*.dcm"))
        digest = hashlib.sha256("\n".join([completed.series_instance_uid, *sops]).encode()).hexdigest()
        with self.store.session() as s:
            job, created = ensure_job(
                s,
                actor=self.actor,
                source=completed.calling_ae or str(completed.route),
                route=completed.route,
                calling_ae_title=completed.calling_ae,
                study_instance_uid=completed.study_instance_uid,
                series_instance_uid=completed.series_instance_uid,
                instance_count=len(sops),
                completion_reason=completed.reason,
                spool_path=self.data.relative(folder),
                state=JobState.QUEUED,
                idempotency_key=f"series:{digest}",
            )
        if created:
            self.enqueue.process(job.id, Priority.ROUTINE)
            log.info(
                "series.queued",
                job_id=job.id,
                series_instance_uid=completed.series_instance_uid,
                instances=len(sops),
                reason=completed.reason,
            )
        else:
            log.info(
                "series.already_queued", job_id=job.id, series_instance_uid=completed.series_instance_uid
            )
        return job

    def start(self) -> None:
        """Run the idle timer in the background."""

        def loop() -> None:
            while not self._stop.wait(self._tick_s):
                try:
                    self.tick()
                except Exception:  # the timer must survive a bad second (a locked database...)
                    log.exception("intake.tick_failed")

        self._thread = threading.Thread(target=loop, name="mipgw-intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.enqueue.held() and not self.enqueue.flush(now=True):
            # the jobs are in the store: the workers' sweeper queues them after the visibility timeout
            log.warning("intake.stopped_with_unpublished_tasks", held=self.enqueue.held())
