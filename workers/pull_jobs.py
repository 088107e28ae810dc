"""A job that starts at a source node: pull its series into the spool, then queue it like any other.

``POST /jobs`` creates jobs in state ``received`` with the source node's name as their source; the
``mipgw.pull`` task brings the instances in (WADO-RS, C-GET or C-MOVE, see :mod:`workers.pull`) and
hands the job to the pipeline with the reason it is complete ("pulled by WADO-RS from …: 120
instances").
"""

from __future__ import annotations

import structlog

from workers.errors import DeliveryError
from workers.jobs import JobState, Stage
from workers.pipeline import Deps, TransientJobError, fail_job
from workers.pull import pull
from workers.store import get_job, transition, update_job

__all__ = ["pull_job"]

log = structlog.get_logger(__name__)


def pull_job(job_id: str, deps: Deps) -> JobState:
    with deps.store.session() as s:
        job = get_job(s, job_id)
    if job.state is not JobState.RECEIVED:
        return job.state  # already pulled (a redelivered task)
    node = deps.settings.sources.get(job.source)
    if node is None:
        return fail_job(job_id, Stage.LOAD, f"source {job.source!r} is not configured", deps)
    try:
        pulled = pull(
            job.source,
            node,
            job.study_instance_uid,
            job.series_instance_uid,
            deps.data,
            calling_ae=deps.settings.ae_title,
            move_destination=deps.settings.ae_title,  # C-MOVE: to our own listener
        )
    except DeliveryError as exc:
        if exc.retryable:
            raise TransientJobError(job_id, Stage.LOAD, exc.reason) from exc
        return fail_job(job_id, Stage.LOAD, exc.reason, deps)
    count = pulled.series.get(job.series_instance_uid, 0)
    if count == 0:
        return fail_job(job_id, Stage.LOAD, f"{job.source} holds no instance of the series", deps)
    folder = deps.data.incoming_series(job.study_instance_uid, job.series_instance_uid)
    with deps.store.session() as s:
        update_job(
            s,
            job_id,
            actor=deps.actor,
            spool_path=deps.data.relative(folder),
            instance_count=count,
            completion_reason=f"pulled by {pulled.how}: {count} instance(s)",
        )
        job = transition(s, job_id, JobState.QUEUED, actor=deps.actor, stage=Stage.LOAD)
    deps.enqueue.process(job_id, job.priority)
    log.info("job.pulled", job_id=job_id, source=job.source, instances=count)
    return JobState.QUEUED
