"""Row access the repository modules share: loading a job fresh, inserting unless a unique key exists."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workers.store.errors import JobNotFoundError
from workers.store.models import Base, Job

__all__ = ["insert_unless_exists", "load_job"]


def load_job(session: Session, job_id: str, *, for_update: bool = False) -> Job:
    """The job as the database has it now (not a copy cached earlier in this session)."""
    statement = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    if for_update:
        statement = statement.with_for_update()  # PostgreSQL row lock; SQLite already holds the write lock
    job = session.execute(statement).scalar_one_or_none()
    if job is None:
        raise JobNotFoundError(job_id)
    return job


def insert_unless_exists(session: Session, row: Base) -> IntegrityError | None:
    """Insert ``row`` in a savepoint; on a constraint violation roll back to it and return the error.

    The caller then reads the existing row, and re-raises the error if there is none (it was not a
    duplicate). With a concurrent inserter the unique constraint decides which one wins, and the loser
    reads the winner's row (PostgreSQL makes it wait for the winner's commit first).
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        return exc
    return None
