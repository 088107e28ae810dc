"""STOW-RS (PS3.18 §10.5): ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``.

The body (``multipart/related; type="application/dicom"``) is read as a stream from the ASGI receive
channel and parsed as it arrives (:mod:`service.api.multipart`); each part's octets go to a temp file
in ``<data>/incoming/.stow/`` in 1 MiB writes (:mod:`service.api.stow_receiver`), and only a
finished part is read (its header, from the file), checked and handed to the spool and the intake
(:mod:`service.api.stow_parts`). Memory per request is bounded by the chunk, a few write batches and
headers — never by the study's size.

Every stored instance is fed to the intake as it is stored (route ``stow``, the request as its
association, so the idle timer leaves the request's series alone while it runs); at the end every
series the request carried is complete: "a whole study in one request is complete on arrival".

Answer (``application/dicom+json``): ReferencedSOPSequence (0008,1199) for stored instances and
FailedSOPSequence (0008,1198) with FailureReason (0008,1197) for the others (codes in
:mod:`service.api.stow_parts`); 200 all stored, 202 some, 409 none. Problems: 400 malformed body or
study UID, 413 over ``api.max_request_bytes`` (from Content-Length before reading, or while
streaming: parts stored by then stay in the spool and their series complete as for a released
association — a regular stack at once, anything else by the idle timer), 415
not multipart/related of application/dicom (or no part was application/dicom), 503 the intake could
not queue the series (the instances are stored: resending the request is safe). No RetrieveURL is
given: the gateway does not serve WADO-RS.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

import anyio.to_thread
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from dicom_io.uids import is_valid_uid
from service.api.auth import Scope, require_key
from service.api.context import get_context
from service.api.multipart import MultipartParser, parse_media_type
from service.api.problems import (
    BadRequestError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    problem_responses,
)
from service.api.stow_parts import PartOutcome, PartSink
from service.api.stow_receiver import PartReceiver
from service.intake import Intake

__all__ = ["DICOM_JSON", "STOW_COMPLETION_REASON", "router", "stow_boundary", "stow_response"]

DICOM_JSON = "application/dicom+json"
STOW_COMPLETION_REASON = "the STOW-RS request carried the series"

log = structlog.get_logger(__name__)

_STORE_RESPONSE = {"type": "object", "description": "DICOM JSON: ReferencedSOPSequence, FailedSOPSequence"}
_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "PS3.10 instances, one per part",
        "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string"}}},
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "every instance stored", "content": {DICOM_JSON: {"schema": _STORE_RESPONSE}}},
    202: {"description": "some instances stored", "content": {DICOM_JSON: {"schema": _STORE_RESPONSE}}},
    409: {"description": "no instance stored", "content": {DICOM_JSON: {"schema": _STORE_RESPONSE}}},
    **problem_responses(400, 401, 403, 413, 415, 422, 503),
}

router = APIRouter(tags=["STOW-RS"], dependencies=[Depends(require_key(Scope.STOW))])


@router.post(
    "/dicomweb/studies",
    summary="Store instances (STOW-RS)",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_OPENAPI,
)
async def store_instances(request: Request) -> Response:
    return await _store(request, None)


@router.post(
    "/dicomweb/studies/{study}",
    summary="Store instances of one study (STOW-RS)",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_OPENAPI,
)
async def store_study_instances(request: Request, study: str) -> Response:
    if not is_valid_uid(study):
        raise BadRequestError("the study in the path is not a valid DICOM UID")
    return await _store(request, study)


def stow_boundary(content_type: str | None) -> str:
    """The multipart boundary of a STOW-RS request, or the problem with its Content-Type."""
    if not content_type:
        raise UnsupportedMediaTypeError('no Content-Type: send multipart/related; type="application/dicom"')
    try:
        media, params = parse_media_type(content_type)
        root = parse_media_type(params["type"])[0] if "type" in params else None
    except ValueError as exc:
        raise UnsupportedMediaTypeError(f"unreadable Content-Type ({exc})") from exc
    if media != "multipart/related":
        raise UnsupportedMediaTypeError(f'{media} is not multipart/related; type="application/dicom"')
    if root not in (None, "application/dicom"):
        raise UnsupportedMediaTypeError(f"parts of type {root} are not accepted, only application/dicom")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise BadRequestError("multipart/related needs a boundary parameter of 1 to 70 characters")
    return boundary


async def _store(request: Request, study: str | None) -> Response:
    context = get_context(request)
    boundary = stow_boundary(request.headers.get("content-type"))
    limit = context.settings.api.max_request_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"{int(declared)} bytes exceed the limit of {limit} (api.max_request_bytes)"
        )
    if study is not None:
        structlog.contextvars.bind_contextvars(study_instance_uid=study)
    association = f"stow:{uuid4().hex}"  # never the client's request id: it need not be unique
    sink = PartSink(
        context.data,
        context.intake,
        context.counters,
        association,
        study,
        context.settings.listener.spool_reserve_bytes,
    )
    receiver = PartReceiver(sink, context.data.root / "incoming" / ".stow")
    started = time.perf_counter()
    await anyio.to_thread.run_sync(context.intake.association_opened, association)
    try:
        await receiver.consume(request.stream(), MultipartParser(boundary), limit)
        series = sorted({o.series_instance_uid for o in receiver.outcomes if o.stored})
        try:
            if series:
                await anyio.to_thread.run_sync(
                    context.intake.request_complete, series, STOW_COMPLETION_REASON
                )
        except Exception as exc:
            log.error("stow.queue_failed", series=len(series), error=str(exc).splitlines()[0][:300])
            raise ServiceUnavailableError(
                "instances stored, but their series could not be queued: resend"
            ) from exc
    except ClientDisconnect:
        log.warning("stow.client_gone", parts=len(receiver.outcomes), bytes=receiver.received)
        return Response(status_code=400)
    finally:
        await receiver.close()
        await anyio.to_thread.run_sync(_release, context.intake, association)
    outcomes = receiver.outcomes
    status = stow_status(outcomes)
    stored = sum(o.stored for o in outcomes)
    log.info(
        "stow.done",
        status=status,
        stored=stored,
        failed=len(outcomes) - stored,
        series=len(series),
        bytes=receiver.received,
        seconds=round(time.perf_counter() - started, 3),
    )
    return JSONResponse(stow_response(outcomes), status_code=status, media_type=DICOM_JSON)


def stow_status(outcomes: list[PartOutcome]) -> int:
    if not outcomes:
        raise BadRequestError("the request carried no part")
    stored = sum(o.stored for o in outcomes)
    if stored == len(outcomes):
        return 200
    if stored:
        return 202
    if all(o.media_type_refused for o in outcomes):
        raise UnsupportedMediaTypeError("no part was application/dicom")
    return 409


def stow_response(outcomes: list[PartOutcome]) -> dict[str, Any]:
    """The Store Instances Response Module as DICOM JSON (tags in ascending order)."""
    body: dict[str, Any] = {}
    failed = [_sop_item(o) for o in outcomes if not o.stored]
    stored = [_sop_item(o) for o in outcomes if o.stored]
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    return body


def _sop_item(outcome: PartOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": _ui(outcome.sop_class_uid),
        "00081155": _ui(outcome.sop_instance_uid),
    }
    if outcome.failure is not None:
        item["00081197"] = {"vr": "US", "Value": [int(outcome.failure)]}
    return item


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _release(intake: Intake, association: str) -> None:
    try:
        intake.association_released(association)
    except Exception as exc:  # the request is answered; its series still complete by the idle timer
        log.error("stow.release_failed", error=str(exc).splitlines()[0][:300])
