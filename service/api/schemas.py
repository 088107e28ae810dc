"""The JSON bodies of the jobs routes (pydantic at the edge; the store hands out frozen views)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from config.rules_schema import Action, action_problems
from dicom_io.uids import is_valid_uid
from workers.jobs import DeliveryState, JobState, Priority, Route, Stage
from workers.store import AuditEntry, DeliveryView, JobView, ResultView, StageView

__all__ = [
    "BulkRetry",
    "DeliveryOut",
    "JobDetail",
    "JobList",
    "JobSummary",
    "JobsCreated",
    "PullRequest",
    "ResultOut",
    "SegmentOut",
    "SkippedRetry",
    "StageOut",
    "StateChange",
]


UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
RULE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError("not a DICOM UID: digits and dots, no leading zeros, at most 64 characters")
    return value


# the pattern is documented for clients and fuzzers; is_valid_uid is what decides
Uid = Annotated[
    str,
    Field(json_schema_extra={"pattern": UID_PATTERN, "minLength": 1, "maxLength": 64}),
    AfterValidator(_uid),
]


class PullRequest(BaseModel):
    """``POST /jobs``: fetch a study (or one of its series) from a configured source node."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"study_instance_uid": "1.2.826.0.1.3680043.8.498.1", "source": "pacs"},
                {
                    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
                    "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
                    "source": "pacs",
                    "rules": ["ct-abdomen-organs-3d"],
                    "priority": "stat",
                },
            ]
        },
    )

    study_instance_uid: Uid
    series_instance_uid: Uid | None = Field(
        default=None, description="pull this series only; without it, every series of the study"
    )
    source: str = Field(min_length=1, max_length=64, description="a node configured under `sources`")
    rules: list[Annotated[str, Field(min_length=1, max_length=64, pattern=RULE_NAME_PATTERN)]] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="run these rules (one job per series and rule); without: match the rules as usual",
    )
    action: Action | None = Field(
        default=None,
        description="run this action instead of rules: the `action` of a rule in the rules file (endpoint, "
        "model, prompts or prompt_groups, window, nifti, seg, destinations), checked the same way; "
        "one job per series, its rule named adhoc-<digest of the action>",
    )
    priority: Priority | None = Field(default=None, description="default: the rule's, else routine")

    @field_validator("action")
    @classmethod
    def _action(cls, action: Action | None, info: ValidationInfo) -> Action | None:
        if action is None:
            return None
        if info.data.get("rules") is not None:
            raise ValueError("give rules or an action, not both")
        # what the rules file checks across fields (prompts xor prompt_groups, windows for the model...)
        if problems := action_problems(action):
            raise ValueError(
                "; ".join(f"{'.'.join(map(str, ('action', *path)))}: {m}" for path, m in problems)
            )
        return action


class JobSummary(BaseModel):
    id: str
    state: JobState
    study_instance_uid: str
    series_instance_uid: str
    rule: str | None = Field(description="the rule this job runs (set once rules were matched)")
    rules: list[str] = Field(description="every rule that fired for the series")
    route: Route
    calling_ae: str | None
    source: str
    instance_count: int
    completion_reason: str | None = Field(description="why the series was judged complete")
    endpoint: str | None
    model: str | None
    action: dict[str, Any] | None = Field(
        default=None, description="the inline action the job runs (POST /jobs with `action`), else null"
    )
    priority: Priority
    stage: Stage | None
    attempts: int
    error: str | None
    error_stage: Stage | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: JobView) -> JobSummary:
        return cls(
            id=job.id,
            state=job.state,
            study_instance_uid=job.study_instance_uid,
            series_instance_uid=job.series_instance_uid,
            rule=job.rule,
            rules=list(job.rules),
            route=job.route,
            calling_ae=job.calling_ae_title,
            source=job.source,
            instance_count=job.instance_count,
            completion_reason=job.completion_reason,
            endpoint=job.endpoint,
            model=job.model,
            action=job.action,
            priority=job.priority,
            stage=job.stage,
            attempts=job.attempts,
            error=job.error,
            error_stage=job.error_stage,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class JobsCreated(BaseModel):
    jobs: list[JobSummary] = Field(description="one job per series (and per rule when rules are named)")


class JobList(BaseModel):
    jobs: list[JobSummary]
    limit: int
    offset: int


class StateChange(BaseModel):
    state: JobState
    from_state: JobState | None
    at: datetime
    actor: str
    event: str
    error: str | None = None

    @classmethod
    def of(cls, entry: AuditEntry) -> StateChange:
        assert entry.to_state is not None
        error = (entry.detail or {}).get("error")
        return cls(
            state=entry.to_state,
            from_state=entry.from_state,
            at=entry.at,
            actor=entry.actor,
            event=entry.event,
            error=str(error) if error is not None else None,
        )


class StageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    stage: Stage
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None

    @classmethod
    def of(cls, stage: StageView) -> StageOut:
        return cls.model_validate(stage)


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    segment_number: int | None = Field(description="None: the segment was empty and left out of the SEG")
    prompt: str
    category: str = Field(description="the category the endpoint reported (text_features)")
    pixel_count: int
    volume_ml: float | None
    empty: bool


class ResultOut(BaseModel):
    index: int = Field(description="use as ?index= on the seg and preview routes")
    seg_sop_instance_uid: str
    seg_series_instance_uid: str
    created_at: datetime
    segments: list[SegmentOut]

    @classmethod
    def of(cls, index: int, result: ResultView) -> ResultOut:
        return cls(
            index=index,
            seg_sop_instance_uid=result.seg_sop_instance_uid,
            seg_series_instance_uid=result.seg_series_instance_uid,
            created_at=result.created_at,
            segments=[SegmentOut.model_validate(s) for s in result.segments],
        )


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    destination: str
    state: DeliveryState
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, delivery: DeliveryView) -> DeliveryOut:
        return cls.model_validate(delivery)


class JobDetail(JobSummary):
    states: list[StateChange] = Field(description="every state the job entered, from the audit log")
    stages: list[StageOut] = Field(description="every attempt of every stage, with its timing")
    results: list[ResultOut]
    deliveries: list[DeliveryOut]


class SkippedRetry(BaseModel):
    id: str
    reason: str


class BulkRetry(BaseModel):
    state: JobState
    retried: list[str]
    skipped: list[SkippedRetry]
