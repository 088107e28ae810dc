"""The migrations: they build the models' schema, guard the audit log, and downgrade to nothing."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from tests.unit.workers.store.job_factory import new_job
from workers.store import SchemaVersionError, Store, audit_for, open_store
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
        assert store.revision() == "0001"
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
        assert store.revision() == "0001"
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
