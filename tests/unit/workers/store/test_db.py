"""Opening the store: which URL, which driver, migrations under concurrent openers, sessions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from config.settings import Settings
from tests.unit.workers.store.job_factory import new_job, race
from workers.jobs import JobState
from workers.store import InvalidTransitionError, Store, database_url, get_job, open_store, transition
from workers.store.models import Job


def test_the_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    url = database_url(Settings(data_dir=tmp_path / "data"))
    assert url == f"sqlite+pysqlite:///{tmp_path}/data/mipgw.sqlite3"
    with open_store(url, migrate=True) as store:
        assert store.dialect == "sqlite"
    assert (tmp_path / "data" / "mipgw.sqlite3").is_file()


def test_a_configured_database_url_wins(tmp_path: Path) -> None:
    url = "postgresql+psycopg://mipgw@db.example:5432/mipgw"
    assert database_url(Settings(data_dir=tmp_path, database_url=url)) == url


@pytest.mark.parametrize("url", ["postgresql://u@db.example/mipgw", "postgres://u@db.example/mipgw"])
def test_postgresql_urls_get_psycopg_3_and_pre_ping(url: str) -> None:
    store = open_store(url)  # nothing connects until a session is used
    assert store.dialect == "postgresql"
    assert store.engine.dialect.driver == "psycopg"
    assert store.engine.pool._pre_ping
    store.close()


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="not 'mysql'"):
        open_store("mysql://u@db.example/mipgw")


def test_concurrent_openers_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'mipgw.sqlite3'}"

    def open_and_close() -> str | None:
        with open_store(url, migrate=True) as store:
            return store.revision()

    assert race(5, open_and_close) == ["0002"] * 5


def test_a_session_that_raises_is_rolled_back(store: Store) -> None:
    job = new_job(store)

    def queue_then_fail() -> None:
        with store.session() as session:
            transition(session, job.id, JobState.QUEUED, actor="api")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        queue_then_fail()
    with store.session(readonly=True) as session:
        assert get_job(session, job.id).state is JobState.RECEIVED


def test_sqlite_writers_wait_for_each_other_and_readers_do_not(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: the second writer waits for the first one's commit, then sees its change."""
    with open_store(f"sqlite+pysqlite:///{tmp_path / 'mipgw.sqlite3'}", migrate=True) as store:
        job = new_job(store)
        holding, outcome = threading.Event(), []

        def second_writer() -> None:
            holding.wait()
            try:
                with store.session() as session:
                    transition(session, job.id, JobState.QUEUED, actor="worker:b/2")
            except InvalidTransitionError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=second_writer)
        thread.start()
        with store.session() as session:
            transition(session, job.id, JobState.QUEUED, actor="worker:a/1")
            holding.set()
            with store.session(readonly=True) as reader:  # WAL: a reader is not blocked by the writer
                assert get_job(reader, job.id).state is JobState.RECEIVED
                count = reader.scalar(select(func.count()).select_from(Job))
                assert count == 1
            thread.join(0.3)
            assert thread.is_alive()  # still waiting for our write lock
        thread.join(10)
        assert len(outcome) == 1
        assert "queued → queued is not allowed" in str(outcome[0])


def test_check_schema_against_an_unmigrated_database(tmp_path: Path) -> None:
    with open_store(f"sqlite+pysqlite:///{tmp_path / 'empty.sqlite3'}") as store:
        assert store.revision() is None
        with store.session(readonly=True) as session:
            assert session.execute(text("SELECT 1")).scalar() == 1


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'mipgw.sqlite3'}"
    with open_store(url, busy_timeout_s=5) as store, store.session(readonly=True) as session:
        pragmas = {
            name: session.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1, "busy_timeout": 5000}


def test_a_migration_is_logged_once(tmp_path: Path) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'mipgw.sqlite3'}"
    with capture_logs() as first:
        open_store(url, migrate=True).close()
    with capture_logs() as second:
        open_store(url, migrate=True).close()
    migrated = [entry for entry in first if entry["event"] == "job store migrated"]
    assert [(e["from_revision"], e["to_revision"], e["dialect"]) for e in migrated] == [
        (None, "0002", "sqlite")
    ]
    assert [entry for entry in second if entry["event"] == "job store migrated"] == []


def test_a_new_file_locked_by_another_writer_is_waited_for_not_refused(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once (its busy timeout does not apply) while another
    connection writes to a file still in rollback mode: the opener tries again instead of failing.
    (The race CI once hit with five concurrent openers of one new file.)"""
    import sqlite3

    path = tmp_path / "mipgw.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        with open_store(f"sqlite+pysqlite:///{path}", migrate=True, busy_timeout_s=10) as store:
            assert store.revision() == "0002"
    finally:
        release.join()
        writer.close()
