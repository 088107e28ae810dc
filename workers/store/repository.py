"""Jobs: read, list, move through their states, retry (creating them is :mod:`workers.store.intake`).

Every function takes the caller's :class:`~sqlalchemy.orm.Session` (``with store.session() as s:``)
and returns frozen views. A state change is a compare-and-set on the job's ``version``: of two
sessions racing to move the same job, one wins and the other gets :class:`StaleJobError` (or
:class:`InvalidTransitionError` if it read the job after the winner committed). Each change is
written to the audit log in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from workers.jobs import FINAL_STATES, JobState, Priority, Stage
from workers.store.audit import append_audit
from workers.store.columns import require_aware, utcnow
from workers.store.errors import InvalidTransitionError, StaleJobError
from workers.store.intake import relative_path
from workers.store.models import Job
from workers.store.rows import load_job
from workers.store.stages import clear_stages
from workers.store.transitions import is_allowed
from workers.store.views import JobView

__all__ = [
    "get_job",
    "jobs_to_retry",
    "list_jobs",
    "retry_job",
    "set_first_run_at",
    "transition",
    "update_job",
]

# a successful end leaves no error behind from an earlier, transient failure
_CLEARS_ERROR = frozenset({JobState.DONE, JobState.NO_FINDINGS})


def get_job(session: Session, job_id: str) -> JobView:
    """Raises :class:`~workers.store.errors.JobNotFoundError` for an unknown id."""
    return JobView.of(load_job(session, job_id))


def list_jobs(
    session: Session,
    *,
    state: JobState | Collection[JobState] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobView]:
    """Newest first. ``since`` is inclusive and compares with ``created_at``."""
    statement = select(Job)
    if state is not None:
        states = [JobState(state)] if isinstance(state, str) else [JobState(s) for s in state]
        statement = statement.where(Job.state.in_(states))
    if study_uid is not None:
        statement = statement.where(Job.study_instance_uid == study_uid)
    if series_uid is not None:
        statement = statement.where(Job.series_instance_uid == series_uid)
    if since is not None:
        statement = statement.where(Job.created_at >= require_aware(since, "since"))
    statement = statement.order_by(Job.created_at.desc(), Job.id.desc()).limit(max(limit, 0)).offset(offset)
    return [JobView.of(job) for job in session.scalars(statement)]


def transition(
    session: Session,
    job_id: str,
    to_state: JobState,
    *,
    actor: str,
    stage: Stage | None = None,
    error: str | None = None,
    expected_state: JobState | None = None,
    expected_version: int | None = None,
    detail: dict[str, Any] | None = None,
) -> JobView:
    """Move the job to ``to_state`` if the lifecycle allows it; ``running`` counts an attempt.

    ``expected_state``/``expected_version`` refuse the move with :class:`StaleJobError` when the job
    is no longer what the caller last saw (e.g. a worker claiming a job it was handed as queued).
    """
    to_state = JobState(to_state)
    job = load_job(session, job_id)
    from_state = job.state
    if expected_state is not None and from_state != expected_state:
        raise StaleJobError(job_id, f"expected {JobState(expected_state)}, found {from_state}")
    if expected_version is not None and job.version != expected_version:
        raise StaleJobError(job_id, f"expected version {expected_version}, found {job.version}")
    if not is_allowed(from_state, to_state):
        hint = "a final state: use retry_job" if from_state in FINAL_STATES else ""
        raise InvalidTransitionError(job_id, from_state, to_state, hint)
    values: dict[str, Any] = {"state": to_state}
    if stage is not None:
        values["stage"] = Stage(stage)
    if to_state is JobState.RUNNING:
        values["attempts"] = Job.attempts + 1
    if error is not None:
        values["error"] = error
        values["error_stage"] = Stage(stage) if stage is not None else job.stage
    elif to_state in _CLEARS_ERROR:
        values["error"] = values["error_stage"] = None
    _compare_and_set(session, job, values, f"{from_state} → {to_state}")
    audit_detail = dict(detail or {})
    if error is not None:
        audit_detail["error"] = error
    append_audit(
        session,
        job_id=job_id,
        actor=actor,
        event="transition",
        from_state=from_state,
        to_state=to_state,
        detail={"stage": values.get("stage", job.stage), **audit_detail},
    )
    return get_job(session, job_id)


def retry_job(session: Session, job_id: str, *, actor: str, from_stage: Stage | None = None) -> JobView:
    """Put a job in a final state back to ``queued``; attempts are kept, the last error is cleared.

    With ``from_stage``, the checkpoints of that stage and every later one are dropped so they run
    again (e.g. ``Stage.INFER`` after a model change); earlier checkpoints still let the task skip.
    """
    job = load_job(session, job_id)
    from_state = job.state
    if from_state not in FINAL_STATES:
        raise InvalidTransitionError(job_id, from_state, JobState.QUEUED, "only a final job is retried")
    previous_error, previous_stage = job.error, job.error_stage
    _compare_and_set(session, job, {"state": JobState.QUEUED, "error": None, "error_stage": None}, "retry")
    cleared = clear_stages(session, job_id, from_stage) if from_stage is not None else []
    append_audit(
        session,
        job_id=job_id,
        actor=actor,
        event="retry",
        from_state=from_state,
        to_state=JobState.QUEUED,
        detail={
            "previous_error": previous_error,
            "previous_error_stage": previous_stage,
            "cleared_stages": [stage.value for stage in cleared],
        },
    )
    return get_job(session, job_id)


def jobs_to_retry(
    session: Session, state: JobState, *, since: datetime | None = None, limit: int = 1000
) -> list[JobView]:
    """Jobs in the final ``state`` (oldest first), for a bulk replay with :func:`retry_job`."""
    state = JobState(state)
    if state not in FINAL_STATES:
        raise ValueError(f"{state} is not a final state; only final jobs are retried")
    statement = select(Job).where(Job.state == state)
    if since is not None:
        statement = statement.where(Job.created_at >= require_aware(since, "since"))
    statement = statement.order_by(Job.created_at, Job.id).limit(limit)
    return [JobView.of(job) for job in session.scalars(statement)]


def update_job(
    session: Session,
    job_id: str,
    *,
    actor: str,
    rule: str | None = None,
    rules: Iterable[str] | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    priority: Priority | None = None,
    completion_reason: str | None = None,
    spool_path: str | None = None,
    seg_path: str | None = None,
    instance_count: int | None = None,
) -> JobView:
    """Record what the pipeline learned (the rule that matched, the endpoint, the paths); ``None``
    leaves a field as it is. Not a state change: the version is not bumped."""
    changes: dict[str, Any] = {
        "rule": rule,
        "rules": list(rules) if rules is not None else None,
        "endpoint": endpoint,
        "model": model,
        "priority": Priority(priority) if priority is not None else None,
        "completion_reason": completion_reason,
        "spool_path": relative_path(spool_path),
        "seg_path": relative_path(seg_path),
        "instance_count": instance_count,
    }
    changes = {name: value for name, value in changes.items() if value is not None}
    job = load_job(session, job_id)
    if changes:
        for name, value in changes.items():
            setattr(job, name, value)
        job.updated_at = utcnow()
        append_audit(session, job_id=job_id, actor=actor, event="updated", detail=changes)
    return JobView.of(job)


def set_first_run_at(session: Session, job_id: str, when: datetime) -> datetime:
    """Set the job's first-run datetime unless it is already set; returns the one that stands."""
    require_aware(when, "first_run_at")
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.first_run_at.is_(None))
        .values(first_run_at=when, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    first_run_at = load_job(session, job_id).first_run_at
    assert first_run_at is not None
    return first_run_at


def _compare_and_set(session: Session, job: Job, values: dict[str, Any], what: str) -> None:
    statement = (
        update(Job)
        .where(Job.id == job.id, Job.version == job.version)
        .values(version=job.version + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    result = cast("CursorResult[Any]", session.execute(statement))
    if result.rowcount != 1:
        raise StaleJobError(job.id, f"another session changed the job first ({what} not applied)")
