"""The jobs routes: read them, fetch their SEGs and a preview, replay them.

    POST /jobs                       pull a study (or a series) from a source node: one job per series
                                     (and named rule), or per series with an inline action (prompts...)
    GET  /jobs                       newest first; ?state= (repeat), study, series, since, limit, offset
    GET  /jobs/{id}                  states (audit log), stages with timings, rules, results, deliveries
    GET  /jobs/{id}/seg              the SEG (application/dicom); several: ?index=n, or all as multipart
    GET  /jobs/{id}/preview.png      the middle source slice with each segment outlined
    POST /jobs/{id}/retry            a job in a final state back to queued, and queued (409 otherwise)
    POST /jobs/retry?state=failed    the same for every job in that final state; returns the ids

``POST /jobs`` shares the key dependency and the JobSummary answer with the reads; what a pull
request becomes (checks, idempotency, series, jobs) is :mod:`service.api.pulls`. Store errors
(unknown job, a state that does not allow the move) become problems in :mod:`service.api.problems`;
nothing is caught here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, get_args

import structlog
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from service.api import pulls
from service.api.auth import Scope, require_key
from service.api.context import ApiContext, get_context
from service.api.preview import render_preview
from service.api.problems import GoneError, NotFoundError, problem_responses
from service.api.schemas import (
    BulkRetry,
    DeliveryOut,
    JobDetail,
    JobList,
    JobsCreated,
    JobSummary,
    PullRequest,
    ResultOut,
    SkippedRetry,
    StageOut,
    StateChange,
)
from workers.jobs import FINAL_STATES, JobState, Stage
from workers.store import (
    InvalidTransitionError,
    JobView,
    ResultView,
    StaleJobError,
    audit_for,
    deliveries_for,
    get_job,
    jobs_to_retry,
    list_jobs,
    results_for,
    retry_job,
    stages_for,
)

__all__ = ["router"]

log = structlog.get_logger(__name__)

Context = Annotated[ApiContext, Depends(get_context)]
FinalState = Literal["done", "no_findings", "failed", "rejected", "skipped", "delivery_failed"]
assert set(get_args(FinalState)) == set(FINAL_STATES)  # the schema offers exactly the final states
UidQuery = Query(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
_LOCATION = {"Location": {"description": "the first job", "schema": {"type": "string"}}}
IndexQuery = Query(ge=0, le=10_000, description="which SEG (see results[].index)")

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    dependencies=[Depends(require_key(Scope.API))],
    responses=problem_responses(401, 403, 422, 503),
)


@router.get("", response_model=JobList, summary="list jobs, newest first")
def get_jobs(
    context: Context,
    state: Annotated[list[JobState] | None, Query(description="repeat for several")] = None,
    study: Annotated[str | None, UidQuery] = None,
    series: Annotated[str | None, UidQuery] = None,
    since: Annotated[dt.datetime | None, Query(description="ISO 8601; created at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JobList:
    with context.store.session(readonly=True) as s:
        jobs = list_jobs(
            s,
            state=state or None,
            study_uid=study,
            series_uid=series,
            since=_aware(since),
            limit=limit,
            offset=offset,
        )
    return JobList(jobs=[JobSummary.of(job) for job in jobs], limit=limit, offset=offset)


@router.post(
    "",
    response_model=JobsCreated,
    status_code=201,
    summary="pull a study (or one series) from a source node: one job per series",
    responses={
        200: {
            "model": JobsCreated,
            "description": "the jobs an earlier request with this Idempotency-Key made",
            "headers": _LOCATION,
        },
        201: {
            "description": "the jobs made, each in state received, their pulls queued",
            "headers": _LOCATION,
        },
        **problem_responses(404, 409, 502),
    },
)
def post_jobs(
    context: Context,
    body: PullRequest,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=128,
            pattern=r"^[!-~]+$",
            description="the same key and body give back the same jobs (200); another body is 409",
        ),
    ] = None,
) -> JobsCreated:
    # a sync route runs in the thread pool: the source query (QIDO-RS / C-FIND) never blocks the loop
    planned = pulls.plan(context.settings, body, idempotency_key)
    with structlog.contextvars.bound_contextvars(
        study_instance_uid=body.study_instance_uid, source=body.source
    ):
        jobs = pulls.replayed(context.store, planned)
        if jobs is not None:
            response.status_code = 200
            log.info("jobs.pull_replayed", jobs=len(jobs))
        else:
            series = pulls.resolve_series(planned, calling_ae=context.settings.ae_title)
            jobs, created = pulls.create_jobs(context.store, planned, series, actor=context.actor)
            for job_id in created:  # after the commit: the worker finds the job received
                context.enqueue.pull(job_id)
            if not created:  # a twin request with the same key made them first
                response.status_code = 200
            log.info("jobs.pull_requested", series=len(series), jobs=len(jobs), queued=len(created))
    response.headers["Location"] = f"/jobs/{jobs[0].id}"
    return JobsCreated(jobs=[JobSummary.of(job) for job in jobs])


@router.post(
    "/retry",
    response_model=BulkRetry,
    status_code=202,
    summary="replay every job in a final state",
)
def retry_jobs(
    context: Context,
    state: Annotated[FinalState, Query(description="the final state whose jobs are replayed")],
    since: Annotated[dt.datetime | None, Query(description="ISO 8601; created at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> BulkRetry:
    with context.store.session(readonly=True) as s:
        candidates = jobs_to_retry(s, JobState(state), since=_aware(since), limit=limit)
    retried: list[str] = []
    skipped: list[SkippedRetry] = []
    for candidate in candidates:
        try:
            job = _retry(context, candidate.id, None)
        except (InvalidTransitionError, StaleJobError) as exc:  # moved by someone else meanwhile
            skipped.append(SkippedRetry(id=candidate.id, reason=str(exc)))
            continue
        retried.append(job.id)
    log.info("jobs.bulk_retry", state=str(state), retried=len(retried), skipped=len(skipped))
    return BulkRetry(state=JobState(state), retried=retried, skipped=skipped)


@router.get("/{job_id}", response_model=JobDetail, summary="a job in full", responses=problem_responses(404))
def get_job_detail(context: Context, job_id: str) -> JobDetail:
    with context.store.session(readonly=True) as s:
        job = get_job(s, job_id)
        audit = audit_for(s, job_id)
        stages = stages_for(s, job_id)
        results = results_for(s, job_id)
        deliveries = deliveries_for(s, job_id)
    return JobDetail(
        **JobSummary.of(job).model_dump(),
        states=[StateChange.of(entry) for entry in audit if entry.to_state is not None],
        stages=[StageOut.of(stage) for stage in stages],
        results=[ResultOut.of(index, result) for index, result in enumerate(results)],
        deliveries=[DeliveryOut.of(delivery) for delivery in deliveries],
    )


@router.get(
    "/{job_id}/seg",
    response_class=Response,
    summary="the job's SEG (all of them as multipart/related when there are several and no index)",
    responses={
        200: {"content": {"application/dicom": {}, 'multipart/related; type="application/dicom"': {}}},
        **problem_responses(404, 410),
    },
)
def get_job_seg(context: Context, job_id: str, index: Annotated[int | None, IndexQuery] = None) -> Response:
    job, results = _results(context, job_id)
    if index is None and len(results) > 1:
        paths = [_seg_path(context, job, result) for result in results]
        boundary = f"mipgw-{job.id}"
        return StreamingResponse(
            _multipart(paths, boundary),
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )
    result = _pick(results, index)
    return FileResponse(
        _seg_path(context, job, result),
        media_type="application/dicom",
        filename=f"{result.seg_sop_instance_uid}.dcm",
    )


@router.get(
    "/{job_id}/preview.png",
    response_class=Response,
    summary="the middle source slice with each segment's outline",
    responses={200: {"content": {"image/png": {}}}, **problem_responses(400, 404, 410)},
)
def get_job_preview(
    context: Context,
    job_id: str,
    index: Annotated[int | None, IndexQuery] = None,
    slice_index: Annotated[int | None, Query(alias="slice", ge=0, le=100_000)] = None,
) -> Response:
    job, results = _results(context, job_id)
    preview = render_preview(context.data, job, _pick(results, index), slice_index)
    headers = {"X-Preview-Slice": f"{preview.slice_index}/{preview.slices}", "Cache-Control": "no-store"}
    return Response(preview.png, media_type="image/png", headers=headers)


@router.post(
    "/{job_id}/retry",
    response_model=JobSummary,
    status_code=202,
    summary="replay a job in a final state",
    responses=problem_responses(404, 409),
)
def retry_one(
    context: Context,
    job_id: str,
    from_stage: Annotated[Stage | None, Query(description="run this stage and every later one again")] = None,
) -> JobSummary:
    return JobSummary.of(_retry(context, job_id, from_stage))


def _retry(context: ApiContext, job_id: str, from_stage: Stage | None) -> JobView:
    with context.store.session() as s:
        job = retry_job(s, job_id, actor=context.actor, from_stage=from_stage)
    # queued after the commit, so the worker that takes it sees the job queued
    context.enqueue.process(job.id, job.priority)
    log.info("job.retried", job_id=job.id, series_instance_uid=job.series_instance_uid)
    return job


def _results(context: ApiContext, job_id: str) -> tuple[JobView, list[ResultView]]:
    with context.store.session(readonly=True) as s:
        job = get_job(s, job_id)
        results = results_for(s, job_id)
    if not results:
        raise NotFoundError(f"job {job_id} has no SEG (state {job.state})")
    return job, results


def _pick(results: list[ResultView], index: int | None) -> ResultView:
    index = 0 if index is None else index
    if index >= len(results):
        raise NotFoundError(f"the job has {len(results)} SEG(s); index {index} does not exist")
    return results[index]


def _seg_path(context: ApiContext, job: JobView, result: ResultView) -> Path:
    path = context.data.seg(
        job.study_instance_uid, result.seg_series_instance_uid, result.seg_sop_instance_uid
    )
    if not path.is_file():
        raise GoneError("the SEG file is no longer in the data directory (retention)")
    return path


def _multipart(paths: list[Path], boundary: str) -> Iterator[bytes]:
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _aware(when: dt.datetime | None) -> dt.datetime | None:
    """An ISO datetime without an offset is read as UTC."""
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when
