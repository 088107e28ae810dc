"""The job store: jobs, stage checkpoints, results and segments, deliveries, the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UID = sa.String(length=64)
ENUM = sa.String(length=32)
TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

AUDIT_MESSAGE = "audit_log is append-only"

POSTGRESQL_AUDIT_GUARD = (
    f"""
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{AUDIT_MESSAGE}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END
    $$
    """,
    "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)
POSTGRESQL_AUDIT_UNGUARD = (
    "DROP TRIGGER audit_log_no_truncate ON audit_log",
    "DROP TRIGGER audit_log_no_update_delete ON audit_log",
    "DROP FUNCTION audit_log_append_only()",
)
SQLITE_AUDIT_GUARD = tuple(
    f"CREATE TRIGGER audit_log_no_{op_name.lower()} BEFORE {op_name} ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, '{AUDIT_MESSAGE}: {op_name} refused'); END"
    for op_name in ("UPDATE", "DELETE")
)
SQLITE_AUDIT_UNGUARD = ("DROP TRIGGER audit_log_no_delete", "DROP TRIGGER audit_log_no_update")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("route", ENUM, nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("series_instance_uid", UID, nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("completion_reason", sa.String(length=128), nullable=True),
        sa.Column("rule", sa.String(length=128), nullable=True),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("priority", ENUM, nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("stage", ENUM, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_stage", ENUM, nullable=True),
        sa.Column("spool_path", sa.Text(), nullable=True),
        sa.Column("seg_path", sa.Text(), nullable=True),
        sa.Column("first_run_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    )
    for column in ("state", "study_instance_uid", "series_instance_uid", "created_at"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])

    op.create_table(
        "job_stages",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("stage", ENUM, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_stages_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_stages"),
        sa.UniqueConstraint("job_id", "stage", "attempt", name="uq_job_stages_job_id_stage_attempt"),
    )

    op.create_table(
        "results",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("seg_sop_instance_uid", UID, nullable=False),
        sa.Column("seg_series_instance_uid", UID, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_results_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_results"),
        sa.UniqueConstraint("seg_sop_instance_uid", name="uq_results_seg_sop_instance_uid"),
    )
    op.create_index("ix_results_job_id", "results", ["job_id"])

    op.create_table(
        "segments",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("result_id", ROW_ID, nullable=False),
        sa.Column("segment_number", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=128), nullable=False),
        sa.Column("pixel_count", sa.BigInteger(), nullable=False),
        sa.Column("volume_ml", sa.Float(), nullable=True),
        sa.Column("empty", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name="fk_segments_result_id_results", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_segments"),
    )
    op.create_index("ix_segments_result_id", "segments", ["result_id"])

    op.create_table(
        "deliveries",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_deliveries_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("job_id", "destination", name="uq_deliveries_job_id_destination"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("from_state", ENUM, nullable=True),
        sa.Column("to_state", ENUM, nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_job_id", "audit_log", ["job_id"])
    _execute(POSTGRESQL_AUDIT_GUARD, SQLITE_AUDIT_GUARD)


def downgrade() -> None:
    _execute(POSTGRESQL_AUDIT_UNGUARD, SQLITE_AUDIT_UNGUARD)
    op.drop_table("audit_log")
    op.drop_table("deliveries")
    op.drop_table("segments")
    op.drop_table("results")
    op.drop_table("job_stages")
    op.drop_table("jobs")


def _execute(postgresql_sql: Sequence[str], sqlite_sql: Sequence[str]) -> None:
    dialect = op.get_context().dialect.name
    statements = {"postgresql": postgresql_sql, "sqlite": sqlite_sql}.get(dialect)
    if statements is None:
        raise NotImplementedError(f"the job store supports PostgreSQL and SQLite, not {dialect}")
    for statement in statements:
        op.execute(statement)
