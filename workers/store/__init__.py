"""The job store: jobs, their stage checkpoints, results, deliveries and audit log, in SQL.

SQLite (WAL) under the data directory by default, PostgreSQL in production; Alembic migrations are
packaged here and run in code (``open_store(url, migrate=True)``). Callers get frozen views::

    store = open_store(database_url(settings), migrate=True)
    with store.session() as session:
        job = create_job(session, actor="scp", source="CT_SCANNER", route=Route.DIMSE, ...)
        transition(session, job.id, JobState.QUEUED, actor="scp")
"""

from workers.store.audit import append_audit, audit_for, worker_actor
from workers.store.db import Store, alembic_config, database_url, open_store
from workers.store.errors import (
    InvalidTransitionError,
    JobNotFoundError,
    ResultConflictError,
    SchemaVersionError,
    StageNotStartedError,
    StaleJobError,
    StoreError,
)
from workers.store.intake import NewJob, create_job, ensure_job, find_job_by_key
from workers.store.outputs import deliveries_for, record_result, result_for, results_for, upsert_delivery
from workers.store.repository import (
    get_job,
    jobs_to_retry,
    list_jobs,
    retry_job,
    set_first_run_at,
    transition,
    update_job,
)
from workers.store.stages import completed_stages, stage_finished, stage_started, stages_for
from workers.store.transitions import ALLOWED_TRANSITIONS, is_allowed
from workers.store.views import AuditEntry, DeliveryView, JobView, ResultView, SegmentRecord, StageView

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AuditEntry",
    "DeliveryView",
    "InvalidTransitionError",
    "JobNotFoundError",
    "JobView",
    "NewJob",
    "ResultConflictError",
    "ResultView",
    "SchemaVersionError",
    "SegmentRecord",
    "StageNotStartedError",
    "StageView",
    "StaleJobError",
    "Store",
    "StoreError",
    "alembic_config",
    "append_audit",
    "audit_for",
    "completed_stages",
    "create_job",
    "database_url",
    "deliveries_for",
    "ensure_job",
    "find_job_by_key",
    "get_job",
    "is_allowed",
    "jobs_to_retry",
    "list_jobs",
    "open_store",
    "record_result",
    "result_for",
    "results_for",
    "retry_job",
    "set_first_run_at",
    "stage_finished",
    "stage_started",
    "stages_for",
    "transition",
    "update_job",
    "upsert_delivery",
    "worker_actor",
]
