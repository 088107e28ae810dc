"""A job from received series to delivered SEG, stage by stage, with checkpoints in the job store.

Plain functions over :class:`Deps`, whose edges (endpoints, senders, the queue, series loading) are
callables or Protocols: the Celery tasks, the one-shot ``mip-gateway run`` and the tests wire them.
Errors are classified here once: the input is unusable → ``rejected``; a stage cannot complete →
``failed`` with the stage and reason; the endpoint or a PACS is briefly unavailable →
:class:`TransientJobError`, which the task layer retries.

Idempotency: a redelivered job skips what its checkpoints say is done (after ``persist`` it only
(re)queues deliveries); SEG UIDs and the content date come from the job, so a repeated build writes
the very same object; results and deliveries are keyed by SOP UID / destination.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

import pydicom
import structlog
from sqlalchemy.orm import Session

from config.rules_schema import Rule
from config.settings import Settings
from dicom_io.errors import DicomIOError
from dicom_io.reading import scan
from dicom_io.seg import AlgorithmInfo, SegmentationType
from dicom_io.series import Series, SeriesKind, assemble
from dicom_io.windows import ModelKind
from workers.delivery.base import Sender
from workers.endpoint.client import JobContext
from workers.errors import DeliveryError, EndpointError, GatewayError
from workers.job_rules import rule_for_job
from workers.jobs import FINAL_STATES, DeliveryState, JobState, Priority, Stage
from workers.rules import evaluate, facts_for
from workers.rules_loader import RulesSource
from workers.segmentation import (
    PhaseChoice,
    PromptGroup,
    SegmentationEndpoint,
    SegmentationTask,
    SeriesSegmentation,
    segment_series,
)
from workers.storage import DataDir, atomic_write_bytes
from workers.store import (
    JobView,
    SegmentRecord,
    Store,
    completed_stages,
    deliveries_for,
    ensure_job,
    get_job,
    record_result,
    results_for,
    set_first_run_at,
    stage_finished,
    stage_started,
    stages_for,
    transition,
    update_job,
    upsert_delivery,
)
from workers.store.errors import InvalidTransitionError, StaleJobError

__all__ = [
    "Deps",
    "Enqueuer",
    "TransientJobError",
    "deliver",
    "fail_job",
    "postpone",
    "process_job",
    "software_version",
]

log = structlog.get_logger(__name__)


class TransientJobError(GatewayError):
    """Worth retrying later: the task layer re-queues the job with a backoff."""

    retryable = True

    def __init__(self, job_id: str, stage: Stage, reason: str) -> None:
        self.job_id, self.stage, self.reason = job_id, stage, reason
        super().__init__(f"job {job_id}, stage {stage}: {reason}")


class Enqueuer(Protocol):
    def process(self, job_id: str, priority: Priority) -> None: ...

    def deliver(self, job_id: str, destination: str) -> None: ...

    def pull(self, job_id: str) -> None: ...


def software_version() -> str:
    try:
        return version("mip-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def load_from_spool(job: JobView, data: DataDir) -> list[Series]:
    """The series of a job as received into the data directory."""
    if job.spool_path is None:
        return []
    return assemble(scan([data.resolve(job.spool_path)]).instances)


@dataclass
class Deps:
    settings: Settings
    data: DataDir
    store: Store
    rules: RulesSource
    endpoint: Callable[[str], SegmentationEndpoint]
    sender: Callable[[str], Sender]
    enqueue: Enqueuer
    actor: str
    load_series: Callable[[JobView], list[Series]] | None = None
    notify: Callable[[JobView], None] = field(default=lambda job: None)
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    def series_for(self, job: JobView) -> list[Series]:
        return self.load_series(job) if self.load_series else load_from_spool(job, self.data)


def process_job(job_id: str, deps: Deps) -> JobState:
    """Run (or resume) a queued job; returns the state it reached."""
    with deps.store.session() as s:
        job = get_job(s, job_id)
        if job.state is JobState.RUNNING:
            # A redelivered task (its worker died) or a duplicate: take the job over only when nobody
            # has worked on it for a whole lease; otherwise another worker still has it.
            idle = (deps.now() - _last_activity(s, job)).total_seconds()
            if idle < deps.settings.visibility_timeout_s:
                log.info("job.busy", job_id=job_id, idle_s=round(idle, 1))
                return job.state
            job = transition(s, job_id, JobState.QUEUED, actor=deps.actor, expected_version=job.version)
        if job.state in (JobState.QUEUED, JobState.RECEIVED):
            if job.state is JobState.RECEIVED:
                job = transition(s, job_id, JobState.QUEUED, actor=deps.actor)
            job = transition(s, job_id, JobState.RUNNING, actor=deps.actor, stage=Stage.LOAD)
        else:
            log.info("job.not_runnable", job_id=job_id, state=str(job.state))
            return job.state
        done = completed_stages(s, job_id)
    structlog.contextvars.bind_contextvars(job_id=job_id, series_instance_uid=job.series_instance_uid)
    if Stage.PERSIST in done:
        return _queue_deliveries(job, deps)
    stage = Stage.LOAD
    try:
        stage, series = Stage.LOAD, _load(job, deps)
        if series is None:
            return _get(job_id, deps).state
        stage = Stage.MATCH
        rule = _match(job, series, deps)
        if rule is None:
            return JobState.SKIPPED
        job = _get(job_id, deps)
        stage = Stage.INFER
        outcome = _segment(job, series, rule, deps)
        stage = Stage.PERSIST
        return _persist(job, outcome, deps)
    except EndpointError as exc:
        if exc.retryable:
            raise TransientJobError(job_id, stage, exc.reason) from exc
        return fail_job(job_id, stage, str(exc), deps)
    except (DicomIOError, GatewayError, ValueError) as exc:
        return fail_job(job_id, stage, str(exc), deps)


def _last_activity(session: Session, job: JobView) -> dt.datetime:
    """The job's heartbeat: its last transition or the last stage that started or finished."""
    times = [job.updated_at]
    for stage in stages_for(session, job.id):
        times.append(stage.finished_at or stage.started_at)
    return max(times)


def _get(job_id: str, deps: Deps) -> JobView:
    with deps.store.session() as s:
        return get_job(s, job_id)


def _move(
    job_id: str, to: JobState, deps: Deps, *, stage: Stage | None = None, error: str | None = None
) -> JobView:
    with deps.store.session() as s:
        job = transition(s, job_id, to, actor=deps.actor, stage=stage, error=error)
    if to in FINAL_STATES:
        deps.notify(job)
    return job


def postpone(job_id: str, exc: TransientJobError, deps: Deps) -> None:
    """Back to ``queued`` with the reason on the job, so its status says what it is waiting for."""
    with deps.store.session() as s:
        transition(s, job_id, JobState.QUEUED, actor=deps.actor, stage=exc.stage, error=exc.reason)


def fail_job(job_id: str, stage: Stage, reason: str, deps: Deps) -> JobState:
    log.warning("job.failed", job_id=job_id, stage=str(stage), reason=reason)
    _move(job_id, JobState.FAILED, deps, stage=stage, error=reason)
    return JobState.FAILED


def _timed(job: JobView, stage: Stage, deps: Deps) -> _StageSpan:
    return _StageSpan(job, stage, deps)


class _StageSpan:
    def __init__(self, job: JobView, stage: Stage, deps: Deps) -> None:
        self.job, self.stage, self.deps = job, stage, deps

    def __enter__(self) -> None:
        with self.deps.store.session() as s:
            stage_started(s, self.job.id, self.stage, attempt=self.job.attempts)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            with self.deps.store.session() as s:
                stage_finished(s, self.job.id, self.stage, attempt=self.job.attempts)


def _load(job: JobView, deps: Deps) -> Series | None:
    with _timed(job, Stage.LOAD, deps):
        found = [s for s in deps.series_for(job) if s.series_instance_uid == job.series_instance_uid]
    if not found:
        _move(job.id, JobState.REJECTED, deps, stage=Stage.LOAD, error="no readable instance of the series")
        return None
    series = found[0]
    if series.kind is SeriesKind.NON_IMAGE:
        reason = "; ".join(p.message for p in series.problems) or "not an image series"
        _move(job.id, JobState.REJECTED, deps, stage=Stage.LOAD, error=reason)
        return None
    return series


def _match(job: JobView, series: Series, deps: Deps) -> Rule | None:
    """The rule this job runs; extra rules that fire become jobs of their own."""
    rules = deps.rules.current()
    try:
        if (rule := rule_for_job(job, rules)) is not None:
            return rule
    except KeyError:
        raise ValueError(f"rule {job.rule!r} is no longer in the rules file") from None
    with _timed(job, Stage.MATCH, deps):
        report = evaluate(rules, facts_for(series, route=job.route, calling_ae=job.calling_ae_title))
    fired = list(report.fired)
    if not fired:
        reasons = "; ".join(r.describe() for r in report.results) or report.note or "no rules"
        _move(job.id, JobState.SKIPPED, deps, stage=Stage.MATCH, error=f"no rule matched: {reasons}"[:2000])
        return None
    first, *others = fired
    names = [r.name for r in fired]
    with deps.store.session() as s:
        update_job(
            s,
            job.id,
            actor=deps.actor,
            rule=first.name,
            rules=names,
            endpoint=first.action.endpoint,
            model=str(first.action.model),
            priority=first.priority,
        )
        for rule in others:
            sibling, created = ensure_job(
                s,
                actor=deps.actor,
                source=job.source,
                route=job.route,
                calling_ae_title=job.calling_ae_title,
                study_instance_uid=job.study_instance_uid,
                series_instance_uid=job.series_instance_uid,
                instance_count=job.instance_count,
                completion_reason=job.completion_reason,
                rule=rule.name,
                rules=names,
                endpoint=rule.action.endpoint,
                model=str(rule.action.model),
                priority=rule.priority,
                spool_path=job.spool_path,
                state=JobState.QUEUED,
                idempotency_key=f"{job.idempotency_key or job.id}/rule:{rule.name}",
            )
            if created:
                deps.enqueue.process(sibling.id, rule.priority)
    return first


def _task(rule: Rule) -> SegmentationTask:
    action = rule.action
    nifti = action.nifti_options
    groups = tuple(PromptGroup(tuple(g.prompts), g.window) for g in action.groups)
    task = SegmentationTask(
        rule_name=rule.name,
        model=ModelKind(action.model),
        groups=groups,
        seg_type=SegmentationType(action.seg.type),
        series_description=action.seg.series_description or f"{rule.name} (MedImageParse)",
        series_number=action.seg.series_number or 9900,
        phases=PhaseChoice(action.phases),
    )
    if nifti is not None:
        task = replace(task, intensity=nifti.intensity, layout=nifti.layout)
    return task


def _segment(job: JobView, series: Series, rule: Rule, deps: Deps) -> SeriesSegmentation:
    with deps.store.session() as s:
        when = set_first_run_at(s, job.id, deps.now())
    endpoint_settings = deps.settings.endpoints.get(rule.action.endpoint)
    algorithm = AlgorithmInfo(
        endpoint_settings.model_name if endpoint_settings else "MedImageParse",
        endpoint_settings.model_version if endpoint_settings else "unknown",
        rule.action.endpoint,
    )
    seconds: dict[str, float] = {}
    with _timed(job, Stage.INFER, deps):
        outcome = segment_series(
            series,
            _task(rule),
            deps.endpoint(rule.action.endpoint),
            algorithm=algorithm,
            content_datetime=when,
            software_version=software_version(),
            context=JobContext(job.id, job.series_instance_uid),
            timer=lambda stage, spent: seconds.__setitem__(str(stage), seconds.get(str(stage), 0.0) + spent),
        )
    log.info("job.segmented", seconds={k: round(v, 3) for k, v in seconds.items()}, segs=len(outcome.segs))
    return outcome


def _persist(job: JobView, outcome: SeriesSegmentation, deps: Deps) -> JobState:
    written = [r for r in outcome.segs if r.dataset is not None]
    categories = dict(zip((s.prompt for s in outcome.segs[0].segments), outcome.categories, strict=True))
    with _timed(job, Stage.PERSIST, deps):
        for result in written:
            ds = result.dataset
            assert ds is not None
            path = deps.data.seg(job.study_instance_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            atomic_write_bytes(path, buffer.getvalue())
            segments = [
                SegmentRecord(
                    prompt=st.prompt,
                    category=categories.get(st.prompt) or "",
                    pixel_count=st.pixel_count,
                    empty=st.empty,
                    segment_number=st.segment_number,
                    volume_ml=st.volume_ml,
                )
                for st in result.segments
            ]
            with deps.store.session() as s:
                record_result(
                    s,
                    job.id,
                    ds.SOPInstanceUID,
                    ds.SeriesInstanceUID,
                    segments,
                    seg_path=deps.data.relative(path),
                    actor=deps.actor,
                )
    if not written:
        _move(job.id, JobState.NO_FINDINGS, deps, stage=Stage.PERSIST)
        deps.data.remove_work(job.id)
        return JobState.NO_FINDINGS
    return _queue_deliveries(_get(job.id, deps), deps)


def _queue_deliveries(job: JobView, deps: Deps) -> JobState:
    try:
        rule = rule_for_job(job, deps.rules.current())
    except KeyError:  # the SEG is kept: a retry after the rule is back delivers it
        return fail_job(job.id, Stage.DELIVER, f"rule {job.rule!r} is no longer in the rules file", deps)
    destinations = list(rule.action.destinations) if rule else []
    with deps.store.session() as s:
        known = {d.destination: d for d in deliveries_for(s, job.id)}
        for name in destinations:
            if name not in known:
                upsert_delivery(s, job.id, name, state=DeliveryState.PENDING, actor=deps.actor)
    if job.state is JobState.RUNNING:
        job = _move(job.id, JobState.DELIVERING, deps, stage=Stage.DELIVER)
    pending = [
        n for n in destinations if known.get(n) is None or known[n].state is not DeliveryState.DELIVERED
    ]
    if not pending:
        return _settle(job.id, deps)
    for name in pending:
        deps.enqueue.deliver(job.id, name)
    return JobState.DELIVERING


def deliver(job_id: str, destination: str, deps: Deps, *, last_attempt: bool = False) -> DeliveryState:
    """Send the job's SEG(s) to one destination, once; a retryable failure is re-raised for the task."""
    with deps.store.session() as s:
        job = get_job(s, job_id)
        results = results_for(s, job_id)
        state = {d.destination: d.state for d in deliveries_for(s, job_id)}.get(destination)
        if state is DeliveryState.DELIVERED:
            return state
        upsert_delivery(s, job_id, destination, state=DeliveryState.SENDING, actor=deps.actor)
    try:
        with deps.sender(destination) as sender:
            for result in results:
                sender.send(
                    deps.data.seg(
                        job.study_instance_uid, result.seg_series_instance_uid, result.seg_sop_instance_uid
                    ),
                    job_id=job_id,
                )
    except DeliveryError as exc:
        final = not exc.retryable or last_attempt
        with deps.store.session() as s:
            state = DeliveryState.FAILED if final else DeliveryState.PENDING
            upsert_delivery(s, job_id, destination, state=state, error=exc.reason, actor=deps.actor)
        if final:
            _settle(job_id, deps)
            return DeliveryState.FAILED
        raise
    with deps.store.session() as s:
        upsert_delivery(s, job_id, destination, state=DeliveryState.DELIVERED, actor=deps.actor)
    _settle(job_id, deps)
    return DeliveryState.DELIVERED


def _settle(job_id: str, deps: Deps) -> JobState:
    """Once no delivery is pending: done, or delivery_failed (the SEG stays on disk for a retry)."""
    with deps.store.session() as s:
        job = get_job(s, job_id)
        states = [d.state for d in deliveries_for(s, job_id)]
    if job.state is not JobState.DELIVERING or any(
        st in (DeliveryState.PENDING, DeliveryState.SENDING) for st in states
    ):
        return job.state
    target = JobState.DELIVERY_FAILED if DeliveryState.FAILED in states else JobState.DONE
    try:
        failed = target is JobState.DELIVERY_FAILED
        _move(
            job_id,
            target,
            deps,
            stage=Stage.DELIVER,
            error="a destination refused the SEG" if failed else None,
        )
    except (InvalidTransitionError, StaleJobError):
        return _get(job_id, deps).state  # another delivery task settled it first
    deps.data.remove_work(job_id)
    return target
