"""The job store's tables. UIDs only: no patient name, ID, birth date or accession number, anywhere.

    jobs        one received series × one rule (or an inline action); state, stage, error, file paths
    job_stages  one row per (job, stage, attempt): the checkpoints a redelivered task resumes from
    results     the SEG written for a job (by SOP Instance UID), with one ``segments`` row per segment
    deliveries  one row per (job, destination): state and attempts of sending the SEG there
    audit_log   append-only history of every change (triggers refuse UPDATE and DELETE)

The schema itself lives in the Alembic migrations; ``tests`` check that they match these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from workers.jobs import DeliveryState, JobState, Priority, Route, Stage
from workers.store.columns import JSON_DOCUMENT, ROW_ID, StrEnumType, UTCDateTime, utcnow

__all__ = ["AuditLog", "Base", "Delivery", "Job", "JobStage", "Result", "Segment"]

UID = String(64)

# Stable constraint names, so migrations can drop and alter them by name on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    route: Mapped[Route] = mapped_column(StrEnumType(Route))
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    instance_count: Mapped[int] = mapped_column(Integer)
    completion_reason: Mapped[str | None] = mapped_column(String(128))
    rule: Mapped[str | None] = mapped_column(String(128))
    rules: Mapped[list[str]] = mapped_column(JSON_DOCUMENT)  # every rule that fired, in order
    # an inline action (the rules file's Action as JSON) for a job made with its own prompts; ``rule``
    # then names it (adhoc-<digest>) and the rules file is not consulted
    action: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOCUMENT, nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[Priority] = mapped_column(StrEnumType(Priority))
    state: Mapped[JobState] = mapped_column(StrEnumType(JobState), index=True)
    stage: Mapped[Stage | None] = mapped_column(StrEnumType(Stage))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_stage: Mapped[Stage | None] = mapped_column(StrEnumType(Stage))
    spool_path: Mapped[str | None] = mapped_column(Text)  # relative to the data directory
    seg_path: Mapped[str | None] = mapped_column(Text)  # relative to the data directory
    first_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # set once: deterministic SEGs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # bumped by every state change; compare-and-set on it is the optimistic lock
    version: Mapped[int] = mapped_column(Integer, default=1)


class JobStage(Base):
    __tablename__ = "job_stages"
    __table_args__ = (UniqueConstraint("job_id", "stage", "attempt"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[Stage] = mapped_column(StrEnumType(Stage))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seconds: Mapped[float | None] = mapped_column(Float)


class Result(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seg_sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    seg_series_instance_uid: Mapped[str] = mapped_column(UID)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    segments: Mapped[list[Segment]] = relationship(
        order_by="Segment.id", lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    segment_number: Mapped[int | None] = mapped_column(Integer)  # None: empty, not written to the SEG
    prompt: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(128))  # the endpoint's text_features
    pixel_count: Mapped[int] = mapped_column(BigInteger)
    volume_ml: Mapped[float | None] = mapped_column(Float)
    empty: Mapped[bool] = mapped_column(Boolean)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("job_id", "destination"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(StrEnumType(DeliveryState))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditLog(Base):
    """Append-only. No foreign key to ``jobs``: the history outlives a purged job, and a job row can be
    deleted without the DB cascading a DELETE into this table (which its triggers refuse)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[JobState | None] = mapped_column(StrEnumType(JobState))
    to_state: Mapped[JobState | None] = mapped_column(StrEnumType(JobState))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOCUMENT)
