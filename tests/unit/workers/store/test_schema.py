"""The migrations: they build the models' schema, guard the audit log, and downgrade to nothing."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from tests.unit.workers.store.job_factory import new_job
from workers.store import SchemaVersionError, Store, audit_for, get_job, open_store
from workers.store.columns import utcnow
from workers.store.models import Base

TABLES = {"jobs", "job_stages", "results", "segments", "deliveries", "audit_log"}
# anything that could hold who the patient is; the store keeps UIDs only
IDENTIFYING = re.compile(r"patient|name|birth|sex|accession|mrn|address|phone|physician|operator", re.I)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_migrations_build_the_models_schema_and_downgrade_to_nothing(empty_database: str) -> None:
    with open_store(empty_database) as store:
        with pytest.raises(SchemaVersionError, match="revision none"):
            store.check_schema()
        store.migrate()
        store.check_schema()
        assert store.revision() == "0002"
        assert tables(store.engine) == TABLES
        with store.engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
            )
        assert differences == []
        indexed = {tuple(ix["column_names"]) for ix in inspect(store.engine).get_indexes("jobs")}
        assert {("state",), ("study_instance_uid",), ("series_instance_uid",), ("created_at",)} <= indexed

        store.downgrade("base")
        assert store.revision() is None
        assert tables(store.engine) == set()
        with pytest.raises(SchemaVersionError):
            store.check_schema()
        store.migrate()  # and up again, triggers and all
        assert tables(store.engine) == TABLES


def test_migrating_twice_changes_nothing(empty_database: str) -> None:
    with open_store(empty_database, migrate=True) as store:
        job = new_job(store)
    with open_store(empty_database, migrate=True) as store:
        assert store.revision() == "0002"
        with store.session(readonly=True) as session:
            assert [entry.event for entry in audit_for(session, job.id)] == ["created"]


def test_no_column_can_hold_patient_identity(store: Store) -> None:
    declared = [
        f"{table.name}.{column.name}" for table in Base.metadata.tables.values() for column in table.c
    ]
    inspector = inspect(store.engine)
    migrated = [
        f"{table}.{column['name']}"
        for table in tables(store.engine)
        for column in inspector.get_columns(table)
    ]
    assert sorted(declared) == sorted(migrated)
    assert [column for column in migrated if IDENTIFYING.search(column)] == []


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor = 'forged'", "DELETE FROM audit_log"])
def test_the_database_refuses_to_rewrite_the_audit_log(store: Store, statement: str) -> None:
    job = new_job(store)
    with pytest.raises(DBAPIError, match="append-only"), store.session() as session:
        session.execute(text(f"{statement} WHERE job_id = :job_id"), {"job_id": job.id})
    with store.session(readonly=True) as session:
        assert [(entry.event, entry.actor) for entry in audit_for(session, job.id)] == [("created", "scp")]


def test_the_action_column_comes_and_goes_and_every_job_stays(empty_database: str) -> None:
    with open_store(empty_database) as store:
        store.migrate("0001")
        with store.engine.begin() as connection:  # a job as 0001 wrote it, with a stage checkpoint
            connection.execute(
                text(
                    "INSERT INTO jobs (id, source, route, study_instance_uid, series_instance_uid, "
                    "instance_count, rule, rules, priority, state, attempts, created_at, updated_at, "
                    "version) VALUES ('old', 'CT', 'dimse', '1.2.3', '1.2.3.4', 7, 'r', '[\"r\"]', "
                    "'routine', 'queued', 0, :now, :now, 1)"
                ),
                {"now": utcnow()},
            )
            connection.execute(
                text(
                    "INSERT INTO job_stages (job_id, stage, attempt, started_at) "
                    "VALUES ('old', 'load', 1, :now)"
                ),
                {"now": utcnow()},
            )
        store.migrate()
        assert store.revision() == "0002"
        inline = new_job(store, rule="adhoc-0123456789ab", action={"endpoint": "mip3d", "prompts": ["liver"]})
        with store.session(readonly=True) as session:
            old = get_job(session, "old")
            assert (old.series_instance_uid, old.instance_count, old.rules, old.action) == (
                "1.2.3.4",
                7,
                ("r",),
                None,
            )
            assert get_job(session, inline.id).action == {"endpoint": "mip3d", "prompts": ["liver"]}
            # unset means SQL NULL (not a JSON null), so "IS NULL" finds the jobs that run a named rule
            nulls = session.execute(text("SELECT id FROM jobs WHERE action IS NULL")).scalars().all()
            assert nulls == ["old"]

        store.downgrade("0001")
        assert store.revision() == "0001"
        assert "action" not in {column["name"] for column in inspect(store.engine).get_columns("jobs")}
        with store.engine.connect() as connection:
            # dropping the column in place: no table rebuild whose DROP would cascade into the stages
            assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 2
            assert connection.execute(text("SELECT count(*) FROM job_stages")).scalar() == 1
        store.migrate()
        with store.session(readonly=True) as session:
            assert get_job(session, inline.id).action is None  # the column came back empty
