"""The audit log: every change to a job, appended, never updated or deleted (the database refuses both).

Actors name who acted: ``"api"``, ``"scp"``, ``"cli"``, or a worker as ``"worker:<host>/<pid>"``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from workers.jobs import JobState
from workers.store.models import AuditLog
from workers.store.views import AuditEntry

__all__ = ["append_audit", "audit_for", "worker_actor"]


def worker_actor() -> str:
    return f"worker:{socket.gethostname()}/{os.getpid()}"


def append_audit(
    session: Session,
    *,
    job_id: str | None,
    actor: str,
    event: str,
    from_state: JobState | None = None,
    to_state: JobState | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    session.add(
        AuditLog(
            job_id=job_id,
            actor=actor,
            event=event,
            from_state=from_state,
            to_state=to_state,
            detail=dict(detail) if detail else None,
        )
    )


def audit_for(session: Session, job_id: str) -> list[AuditEntry]:
    """The job's history, oldest first."""
    rows = session.scalars(select(AuditLog).where(AuditLog.job_id == job_id).order_by(AuditLog.id))
    return [AuditEntry.of(row) for row in rows]
