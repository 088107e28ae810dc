"""Stage checkpoints: one ``job_stages`` row per (job, stage, attempt) with its start, end and seconds.

A stage is done once any attempt of it has finished; a redelivered task asks :func:`completed_stages`
and skips those. Rows rather than a JSON column on ``jobs``: two workers touching different stages
never rewrite one shared document, the history of every attempt stays, and per-stage durations can
be queried across jobs (metrics) with plain SQL on both backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from workers.jobs import Stage
from workers.store.columns import utcnow
from workers.store.errors import JobNotFoundError, StageNotStartedError
from workers.store.models import Job, JobStage
from workers.store.rows import insert_unless_exists
from workers.store.views import StageView

__all__ = ["clear_stages", "completed_stages", "stage_finished", "stage_started", "stages_for"]

STAGE_ORDER: Sequence[Stage] = tuple(Stage)


def stage_started(session: Session, job_id: str, stage: Stage, *, attempt: int) -> StageView:
    """Record the start of ``stage``; the job's ``stage`` becomes it. Starting the same attempt again
    (a redelivered task) restarts its clock and forgets an earlier finish."""
    stage = Stage(stage)
    now = utcnow()
    moved = cast(
        "CursorResult[Any]",
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(stage=stage, updated_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    if moved.rowcount != 1:
        raise JobNotFoundError(job_id)
    row = _row(session, job_id, stage, attempt)
    if row is None:
        row = JobStage(job_id=job_id, stage=stage, attempt=attempt, started_at=now)
        conflict = insert_unless_exists(session, row)
        if conflict is not None:
            row = _row(session, job_id, stage, attempt)
            if row is None:
                raise conflict
    row.started_at, row.finished_at, row.seconds = now, None, None
    session.flush()
    return StageView.of(row)


def stage_finished(session: Session, job_id: str, stage: Stage, *, attempt: int | None = None) -> StageView:
    """Mark the stage's latest (or the given) attempt finished: a checkpoint. Finishing it twice
    keeps the first finish."""
    stage = Stage(stage)
    row = _row(session, job_id, stage, attempt)
    if row is None:
        raise StageNotStartedError(job_id, stage.value, attempt)
    if row.finished_at is None:
        row.finished_at = utcnow()
        row.seconds = max((row.finished_at - row.started_at).total_seconds(), 0.0)
        session.flush()
    return StageView.of(row)


def completed_stages(session: Session, job_id: str) -> set[Stage]:
    statement = select(JobStage.stage).where(JobStage.job_id == job_id, JobStage.finished_at.is_not(None))
    return set(session.scalars(statement))


def stages_for(session: Session, job_id: str) -> list[StageView]:
    """Every attempt of every stage, in the order they started."""
    statement = select(JobStage).where(JobStage.job_id == job_id).order_by(JobStage.started_at, JobStage.id)
    return [StageView.of(row) for row in session.scalars(statement)]


def clear_stages(session: Session, job_id: str, from_stage: Stage) -> list[Stage]:
    """Forget the checkpoints of ``from_stage`` and every later stage; returns the stages dropped."""
    later = list(STAGE_ORDER[STAGE_ORDER.index(Stage(from_stage)) :])
    dropped = completed_stages(session, job_id) & set(later)
    session.execute(
        delete(JobStage)
        .where(JobStage.job_id == job_id, JobStage.stage.in_(later))
        .execution_options(synchronize_session=False)
    )
    return [stage for stage in STAGE_ORDER if stage in dropped]


def _row(session: Session, job_id: str, stage: Stage, attempt: int | None) -> JobStage | None:
    statement = select(JobStage).where(JobStage.job_id == job_id, JobStage.stage == stage)
    if attempt is not None:
        statement = statement.where(JobStage.attempt == attempt)
    statement = statement.order_by(JobStage.attempt.desc()).limit(1).with_for_update()
    return session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()
