"""What the store hands to callers: frozen snapshots, never live ORM objects bound to a session."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from workers.jobs import FINAL_STATES, DeliveryState, JobState, Priority, Route, Stage
from workers.store.models import AuditLog, Delivery, Job, JobStage, Result, Segment

__all__ = ["AuditEntry", "DeliveryView", "JobView", "ResultView", "SegmentRecord", "StageView"]


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    idempotency_key: str | None
    source: str
    route: Route
    calling_ae_title: str | None
    study_instance_uid: str
    series_instance_uid: str
    instance_count: int
    completion_reason: str | None
    rule: str | None
    rules: tuple[str, ...]
    endpoint: str | None
    model: str | None
    priority: Priority
    state: JobState
    stage: Stage | None
    attempts: int
    error: str | None
    error_stage: Stage | None
    spool_path: str | None
    seg_path: str | None
    first_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    # the inline action (JSON) the job runs instead of a rule from the rules file; not hashed (a dict)
    action: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def of(cls, job: Job) -> JobView:
        values: dict[str, Any] = {field.name: getattr(job, field.name) for field in fields(cls)}
        values["rules"] = tuple(job.rules or ())
        values["action"] = copy.deepcopy(job.action)  # the view must not share the ORM object's dict
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StageView:
    stage: Stage
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None

    @classmethod
    def of(cls, row: JobStage) -> StageView:
        return cls(row.stage, row.attempt, row.started_at, row.finished_at, row.seconds)


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One segment of a SEG: what was asked (prompt, category) and what came back."""

    prompt: str
    category: str  # the endpoint's text_features
    pixel_count: int
    empty: bool
    segment_number: int | None = None  # None for an empty segment left out of the SEG
    volume_ml: float | None = None

    @classmethod
    def of(cls, row: Segment) -> SegmentRecord:
        return cls(
            prompt=row.prompt,
            category=row.category,
            pixel_count=row.pixel_count,
            empty=row.empty,
            segment_number=row.segment_number,
            volume_ml=row.volume_ml,
        )


@dataclass(frozen=True, slots=True)
class ResultView:
    job_id: str
    seg_sop_instance_uid: str
    seg_series_instance_uid: str
    created_at: datetime
    segments: tuple[SegmentRecord, ...]

    @classmethod
    def of(cls, row: Result) -> ResultView:
        return cls(
            job_id=row.job_id,
            seg_sop_instance_uid=row.seg_sop_instance_uid,
            seg_series_instance_uid=row.seg_series_instance_uid,
            created_at=row.created_at,
            segments=tuple(SegmentRecord.of(segment) for segment in row.segments),
        )


@dataclass(frozen=True, slots=True)
class DeliveryView:
    job_id: str
    destination: str
    state: DeliveryState
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Delivery) -> DeliveryView:
        return cls(**{field.name: getattr(row, field.name) for field in fields(cls)})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    job_id: str | None
    at: datetime
    actor: str
    event: str
    from_state: JobState | None
    to_state: JobState | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, row: AuditLog) -> AuditEntry:
        return cls(**{field.name: getattr(row, field.name) for field in fields(cls)})
