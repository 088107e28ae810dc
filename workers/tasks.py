"""Thin Celery tasks with explicit names: each calls one pipeline function and decides retry-or-fail.

mipgw.process_job(job_id)          → workers.pipeline.process_job
mipgw.deliver(job_id, destination) → workers.pipeline.deliver
mipgw.sweep()                      → workers.sweeper.sweep (re-queue what a dead worker held)
"""

from __future__ import annotations

import random
from functools import lru_cache

import structlog
from celery import Celery, shared_task
from celery.app.task import Task

from config.settings import get_settings
from workers import pipeline
from workers.celery_app import DELIVERY_QUEUE, inference_queue
from workers.context import WorkerContext
from workers.errors import DeliveryError
from workers.jobs import Priority

__all__ = ["CeleryEnqueuer", "deliver_task", "process_job_task", "pull_task", "sweep_task", "worker_context"]

log = structlog.get_logger(__name__)


class CeleryEnqueuer:
    """Sends work to the queues by task name (no import of the task functions needed)."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def process(self, job_id: str, priority: Priority) -> None:
        self._app.send_task("mipgw.process_job", args=[job_id], queue=inference_queue(priority))

    def deliver(self, job_id: str, destination: str) -> None:
        self._app.send_task("mipgw.deliver", args=[job_id, destination], queue=DELIVERY_QUEUE)

    def pull(self, job_id: str) -> None:
        self._app.send_task("mipgw.pull", args=[job_id], queue=DELIVERY_QUEUE)


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """The process's context, from the environment's settings (each worker process opens its own)."""
    from celery import current_app

    return WorkerContext(get_settings(), CeleryEnqueuer(current_app))


def _backoff(retries: int, initial: float, maximum: float) -> float:
    return float(random.uniform(0.5, 1.0) * min(maximum, initial * 2 ** int(retries)))


@shared_task(name="mipgw.process_job", bind=True, max_retries=None)
def process_job_task(self: Task, job_id: str) -> str:
    context = worker_context()
    deps = context.deps()
    try:
        return str(pipeline.process_job(job_id, deps))
    except pipeline.TransientJobError as exc:
        retries = self.request.retries
        if retries >= context.settings.job_retries:
            reason = f"gave up after {retries + 1} tries: {exc.reason}"
            return str(pipeline.fail_job(job_id, exc.stage, reason, deps))
        pipeline.postpone(job_id, exc, deps)
        delay = _backoff(retries, 10.0, 600.0)
        log.warning("job.retry", job_id=job_id, stage=str(exc.stage), reason=exc.reason, wait_s=round(delay))
        raise self.retry(countdown=delay, exc=exc) from exc


@shared_task(name="mipgw.deliver", bind=True, max_retries=None)
def deliver_task(self: Task, job_id: str, destination: str) -> str:
    context = worker_context()
    deps = context.deps()
    node = context.settings.destinations.get(destination)
    attempts = node.max_attempts if node else 1
    last = self.request.retries + 1 >= attempts
    try:
        return str(pipeline.deliver(job_id, destination, deps, last_attempt=last))
    except DeliveryError as exc:
        assert node is not None
        delay = _backoff(self.request.retries, node.backoff_initial_s, node.backoff_max_s)
        log.warning(
            "delivery.retry", job_id=job_id, destination=destination, reason=exc.reason, wait_s=round(delay)
        )
        raise self.retry(countdown=delay, exc=exc) from exc


@shared_task(name="mipgw.pull", bind=True, max_retries=None)
def pull_task(self: Task, job_id: str) -> str:
    from workers.pull_jobs import pull_job

    context = worker_context()
    deps = context.deps()
    try:
        return str(pull_job(job_id, deps))
    except pipeline.TransientJobError as exc:
        retries = self.request.retries
        if retries >= context.settings.job_retries:
            return str(
                pipeline.fail_job(job_id, exc.stage, f"gave up after {retries + 1} tries: {exc.reason}", deps)
            )
        delay = _backoff(retries, 10.0, 600.0)
        log.warning("pull.retry", job_id=job_id, reason=exc.reason, wait_s=round(delay))
        raise self.retry(countdown=delay, exc=exc) from exc


@shared_task(name="mipgw.sweep")
def sweep_task() -> int:
    from workers.sweeper import sweep

    return sweep(worker_context().deps())
