"""Creating jobs, idempotently: a known ``idempotency_key`` gives back the job it already made.

The key is unique in the database, so two sessions racing with the same key end with one job: the
loser's insert violates the constraint (on PostgreSQL after waiting for the winner's commit), its
savepoint rolls back and it reads the winner's job instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Any, NotRequired, TypedDict, Unpack
from uuid import uuid4

from sqlalchemy import select
from sqlalchemy.orm import Session

from workers.jobs import JobState, Priority, Route
from workers.store.audit import append_audit
from workers.store.columns import utcnow
from workers.store.models import Job
from workers.store.rows import insert_unless_exists
from workers.store.views import JobView

__all__ = ["NewJob", "create_job", "ensure_job", "find_job_by_key", "relative_path"]


class NewJob(TypedDict):
    """The fields a job starts with; the optional ones default as noted."""

    actor: str  # who creates it: "scp", "api", "cli", a worker
    source: str  # where the series came from: the calling AE title or a node name
    route: Route
    study_instance_uid: str
    series_instance_uid: str
    instance_count: int
    calling_ae_title: NotRequired[str | None]
    completion_reason: NotRequired[str | None]  # why the series was judged complete
    rule: NotRequired[str | None]
    rules: NotRequired[Iterable[str]]  # every rule that fired
    endpoint: NotRequired[str | None]
    model: NotRequired[str | None]
    action: NotRequired[dict[str, Any] | None]  # an inline action (JSON) that ``rule`` names
    priority: NotRequired[Priority]  # default: routine
    state: NotRequired[JobState]  # default: received
    spool_path: NotRequired[str | None]  # relative to the data directory
    idempotency_key: NotRequired[str | None]
    job_id: NotRequired[str | None]  # default: a new UUID4


def ensure_job(session: Session, **new: Unpack[NewJob]) -> tuple[JobView, bool]:
    """The job for ``idempotency_key`` if it exists, else a new one; ``True`` when it was created."""
    key = new.get("idempotency_key")
    if key is not None and (existing := find_job_by_key(session, key)) is not None:
        return existing, False
    now = utcnow()
    job = Job(
        id=new.get("job_id") or str(uuid4()),
        idempotency_key=key,
        source=new["source"],
        route=Route(new["route"]),
        calling_ae_title=new.get("calling_ae_title"),
        study_instance_uid=new["study_instance_uid"],
        series_instance_uid=new["series_instance_uid"],
        instance_count=new["instance_count"],
        completion_reason=new.get("completion_reason"),
        rule=new.get("rule"),
        rules=list(new.get("rules", ())),
        endpoint=new.get("endpoint"),
        model=new.get("model"),
        priority=Priority(new.get("priority", Priority.ROUTINE)),
        state=JobState(new.get("state", JobState.RECEIVED)),
        attempts=0,
        spool_path=relative_path(new.get("spool_path")),
        created_at=now,
        updated_at=now,
        version=1,
    )
    if (action := new.get("action")) is not None:
        job.action = action  # left unset otherwise: SQL NULL, not a JSON null
    conflict = insert_unless_exists(session, job)
    if conflict is not None:
        # another session created the same key between our read and our insert: theirs stands
        existing = find_job_by_key(session, key) if key is not None else None
        if existing is None:
            raise conflict
        return existing, False
    append_audit(
        session,
        job_id=job.id,
        actor=new["actor"],
        event="created",
        to_state=job.state,
        detail={
            "route": job.route.value,
            "source": job.source,
            "rule": job.rule,
            "instances": job.instance_count,
        },
    )
    return JobView.of(job), True


def create_job(session: Session, **new: Unpack[NewJob]) -> JobView:
    """:func:`ensure_job` without the flag: the existing job when the idempotency key is known."""
    return ensure_job(session, **new)[0]


def find_job_by_key(session: Session, idempotency_key: str) -> JobView | None:
    statement = select(Job).where(Job.idempotency_key == idempotency_key)
    job = session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()
    return None if job is None else JobView.of(job)


def relative_path(path: str | None) -> str | None:
    """Paths are stored relative to the data directory, so every node that mounts it finds them."""
    if path is not None and PurePath(path).is_absolute():
        raise ValueError(f"{path}: store paths relative to the data directory")
    return path
