"""Re-queue what a dead worker was holding, and expire old files.

Redis hands a task back after its visibility timeout; the embedded SQLite broker forgets a message a
killed worker had taken. Either way the job store knows: a job still ``queued`` or ``running`` that
nobody touched for longer than the visibility timeout, or a delivery still ``pending``/``sending``,
is queued again; so is the pull of a ``received`` job (``POST /jobs``) whose task never ran — the
broker may have been down when the API queued it. Tasks are idempotent, so an unlucky duplicate
costs time, never a second result.
"""

from __future__ import annotations

import datetime as dt

import structlog

from workers.jobs import DeliveryState, JobState, Route
from workers.pipeline import Deps
from workers.store import deliveries_for, list_jobs

__all__ = ["sweep"]

log = structlog.get_logger(__name__)


def sweep(deps: Deps, *, now: dt.datetime | None = None, stale_after_s: float | None = None) -> int:
    """Re-queue stale work; returns how many jobs or deliveries were queued again."""
    now = now or deps.now()
    cutoff = now - dt.timedelta(seconds=stale_after_s or deps.settings.visibility_timeout_s)
    requeued = 0
    with deps.store.session(readonly=True) as s:
        stale = [
            job
            for job in list_jobs(
                s,
                state=(JobState.RECEIVED, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING),
                limit=10_000,
            )
            if job.updated_at < cutoff
        ]
        waiting = {job.id: deliveries_for(s, job.id) for job in stale if job.state is JobState.DELIVERING}
    for job in stale:
        if job.state is JobState.DELIVERING:
            for delivery in waiting[job.id]:
                if (
                    delivery.state in (DeliveryState.PENDING, DeliveryState.SENDING)
                    and delivery.updated_at < cutoff
                ):
                    deps.enqueue.deliver(job.id, delivery.destination)
                    requeued += 1
        elif job.state is JobState.RECEIVED:
            if job.route is Route.API:  # a POST /jobs job waiting for its pull
                deps.enqueue.pull(job.id)
                requeued += 1
        else:
            deps.enqueue.process(job.id, job.priority)
            requeued += 1
    if requeued:
        log.warning("sweep.requeued", count=requeued)
    expired = deps.data.expire(deps.settings.retention_days)
    if expired:
        log.info("sweep.expired", series_folders=expired)
    return requeued
