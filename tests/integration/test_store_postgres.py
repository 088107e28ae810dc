"""The job store on a real PostgreSQL: what SQLite cannot show (advisory lock, row races, time zones).

The repository's own tests run on PostgreSQL too (``tests/unit/workers/store``, backend parameter);
these add what is PostgreSQL's alone. Each test gets a throwaway database; without a reachable server
they skip (see ``MIPGW_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.unit.workers.store.backends import temporary_postgres_database
from tests.unit.workers.store.job_factory import move, new_job, race
from workers.jobs import JobState
from workers.store import StaleJobError, Store, get_job, open_store, transition
from workers.store.models import Job
from workers.store.rows import load_job

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with open_store(database, migrate=True) as opened:
        yield opened


def test_concurrent_openers_queue_on_the_advisory_lock(database: str) -> None:
    def open_and_close() -> str | None:
        with open_store(database, migrate=True) as opened:
            return opened.revision()

    assert race(6, open_and_close) == ["0002"] * 6
    with open_store(database) as opened, opened.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_a_move_read_before_a_concurrent_commit_is_stale(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session A reads the job, B moves it and commits, then A's compare-and-set finds no row."""
    job = new_job(store)
    move(store, job.id, JobState.QUEUED)
    a_has_read, b_committed = threading.Event(), threading.Event()

    def load_then_wait(session: Session, job_id: str, *, for_update: bool = False) -> Job:
        loaded = load_job(session, job_id, for_update=for_update)
        if threading.current_thread().name == "a":
            a_has_read.set()
            b_committed.wait(10)
        return loaded

    monkeypatch.setattr("workers.store.repository.load_job", load_then_wait)
    errors: list[Exception] = []

    def session_a() -> None:
        try:
            with store.session() as session:
                transition(session, job.id, JobState.RUNNING, actor="worker:a/1")
        except StaleJobError as exc:
            errors.append(exc)

    thread = threading.Thread(target=session_a, name="a")
    thread.start()
    a_has_read.wait(10)
    move(store, job.id, JobState.REJECTED)
    b_committed.set()
    thread.join(10)
    assert len(errors) == 1
    assert "another session changed the job first (queued → running not applied)" in str(errors[0])
    with store.session(readonly=True) as session:
        assert get_job(session, job.id).state is JobState.REJECTED


def test_the_audit_log_cannot_be_truncated(store: Store) -> None:
    new_job(store)
    with pytest.raises(DBAPIError, match="append-only: TRUNCATE refused"), store.session() as session:
        session.execute(text("TRUNCATE audit_log"))


def test_timestamps_are_timestamptz_and_read_back_in_utc(store: Store) -> None:
    job = new_job(store)
    with store.engine.connect() as connection:
        kinds = connection.execute(
            text(
                "SELECT DISTINCT data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND column_name IN "
                "('created_at', 'updated_at', 'first_run_at', 'at', 'started_at', 'delivered_at')"
            )
        ).scalars()
        assert set(kinds) == {"timestamp with time zone"}
    with store.session(readonly=True) as session:
        session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
        again = get_job(session, job.id)
    assert again.created_at == job.created_at
    assert again.created_at.tzinfo is UTC


def test_a_readonly_session_cannot_write(store: Store) -> None:
    job = new_job(store)
    with pytest.raises(DBAPIError, match="read-only transaction"), store.session(readonly=True) as session:
        transition(session, job.id, JobState.QUEUED, actor="api")
