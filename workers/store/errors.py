"""The errors the job store raises; callers translate them in one place (API → HTTP, tasks → retry-or-fail).

    StoreError
     ├── JobNotFoundError          no job with that id
     ├── InvalidTransitionError    the job's state does not allow the move (final states: retry_job)
     ├── StaleJobError             another session moved the job first (optimistic concurrency)
     ├── StageNotStartedError      a stage finished that was never started
     ├── ResultConflictError       a SEG SOP Instance UID already recorded for another job
     └── SchemaVersionError        the database is not migrated to this code's head revision

Messages name the job id and states, never patient data (the store holds none).
"""

from __future__ import annotations

from workers.jobs import JobState

__all__ = [
    "InvalidTransitionError",
    "JobNotFoundError",
    "ResultConflictError",
    "SchemaVersionError",
    "StageNotStartedError",
    "StaleJobError",
    "StoreError",
]


class StoreError(Exception):
    """Base of the job store's errors."""


class JobNotFoundError(StoreError, LookupError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: not found")


class InvalidTransitionError(StoreError):
    def __init__(self, job_id: str, from_state: JobState, to_state: JobState, hint: str = "") -> None:
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
        message = f"job {job_id}: {from_state} → {to_state} is not allowed"
        super().__init__(f"{message} ({hint})" if hint else message)


class StaleJobError(StoreError):
    """The job changed since it was read: reload it and decide again (never blindly retry the move)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: {reason}")


class StageNotStartedError(StoreError):
    def __init__(self, job_id: str, stage: str, attempt: int | None) -> None:
        self.job_id = job_id
        self.stage = stage
        self.attempt = attempt
        which = f"stage {stage}" + (f" attempt {attempt}" if attempt is not None else "")
        super().__init__(f"job {job_id}: {which} finished but never started")


class ResultConflictError(StoreError):
    def __init__(self, seg_sop_instance_uid: str, job_id: str, other_job_id: str) -> None:
        self.seg_sop_instance_uid = seg_sop_instance_uid
        self.job_id = job_id
        self.other_job_id = other_job_id
        super().__init__(
            f"job {job_id}: SEG {seg_sop_instance_uid} is already recorded for job {other_job_id}"
        )


class SchemaVersionError(StoreError):
    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"database schema is at revision {current or 'none'}, this code needs {head}: "
            "run the migrations (open_store(url, migrate=True))"
        )
