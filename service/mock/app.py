"""The mock endpoint's HTTP face: Azure ML's ``POST /score`` plus ``GET /`` and ``GET /stats``.

Error answers carry ``{"error": "<message>"}``. Each scoring request runs in the threadpool (reading
the body is the only await), so concurrent requests overlap as on a multi-worker deployment, and
injected latency sleeps a worker thread, never the event loop.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from service.mock.faults import FaultCounters, FaultPlan, FaultSpecError
from service.mock.scoring import ScoringError, parse_rows, score_rows
from service.mock.stats import Stats

__all__ = ["NOTICE", "DroppedConnectionError", "create_app"]

NOTICE: Final = "mip-gateway mock endpoint — NOT A MODEL: classical thresholding for integration testing only"
FAULT_HEADER: Final = "X-Mock-Fault"
FAULT_KEY_HEADER: Final = "X-Mock-Fault-Key"
# what Azure ML adds to a 424 to say what the model container answered (contract §6)
MODEL_ERROR_HEADERS: Final = {
    "ms-azureml-model-error-statuscode": "500",
    "ms-azureml-model-error-reason": "model_error",
}


@dataclass
class _MockState:
    key: str | None
    faults: FaultPlan
    counters: FaultCounters = field(default_factory=FaultCounters)
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True, slots=True)
class _Outcome:
    response: Response
    rows: int = 0


class DroppedConnectionError(Exception):
    """Raised mid-response on purpose: uvicorn then closes the connection without finishing it."""


class _DroppedConnectionResponse(Response):
    """Headers that promise a body, a part of it, then an exception so the server hangs up."""

    _PROMISED_BYTES: Final = 1 << 20
    _SENT: Final = b'[{"image_features":"'

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")
        self.headers["content-length"] = str(self._PROMISED_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self._SENT, "more_body": True})
        raise DroppedConnectionError("mock fault: drop-connection")


class _QuietDroppedConnections(logging.Filter):
    # uvicorn logs every exception an app raises with a traceback; these ones are the point.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnectionError))


_QUIET_FILTER: Final = _QuietDroppedConnections()


def create_app(*, key: str | None = None, faults: FaultPlan | None = None) -> FastAPI:
    """The mock endpoint; with ``key``, ``/score`` wants ``Authorization: Bearer <key>``."""
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if _QUIET_FILTER not in uvicorn_errors.filters:
        uvicorn_errors.addFilter(_QUIET_FILTER)
    state = _MockState(key=key or None, faults=faults or FaultPlan())
    app = FastAPI(title=NOTICE, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mock = state

    @app.get("/")
    def index(request: Request) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"service": "mip-gateway mock endpoint", "model": False, "notice": NOTICE})
        return PlainTextResponse(NOTICE + "\n")

    @app.get("/stats")
    def stats() -> JSONResponse:
        return JSONResponse(state.stats.snapshot())

    @app.delete("/stats")
    def reset_stats() -> JSONResponse:
        state.stats.reset()
        return JSONResponse(state.stats.snapshot())

    @app.post("/score")
    async def score(request: Request) -> Response:
        started = state.stats.begin()
        outcome = _Outcome(_error(HTTPStatus.INTERNAL_SERVER_ERROR, "mock endpoint failed"))
        try:
            body = await request.body()
            outcome = await run_in_threadpool(_handle, state, request.headers, body)
        finally:
            response = outcome.response
            dropped = isinstance(response, _DroppedConnectionResponse)
            state.stats.end(started, "dropped" if dropped else str(response.status_code), outcome.rows)
        return response

    return app


def _handle(state: _MockState, headers: Headers, body: bytes) -> _Outcome:
    if state.key is not None and not _authorised(headers.get("authorization", ""), state.key):
        challenge = {"WWW-Authenticate": "Bearer"}
        return _Outcome(_error(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer key", challenge))
    try:
        plan = FaultPlan.parse(headers[FAULT_HEADER]) if FAULT_HEADER in headers else state.faults
    except FaultSpecError as exc:
        return _Outcome(_error(HTTPStatus.BAD_REQUEST, f"bad {FAULT_HEADER} header: {exc}"))
    plan = state.counters.effective(plan, headers.get(FAULT_KEY_HEADER) or plan.spec())
    if plan.latency_ms:
        time.sleep(plan.latency_ms / 1000)
    status = plan.always if plan.always is not None else plan.status
    if status is not None:
        return _Outcome(_fault_status(status, plan.retry_after))
    if plan.drop_connection:
        return _Outcome(_DroppedConnectionResponse())
    try:
        rows, kind = parse_rows(body)
        if plan.max_rows is not None and len(rows) > plan.max_rows:
            raise ScoringError(
                f"{len(rows)} rows exceed this endpoint's limit of {plan.max_rows} (mock fault: max-rows)",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        content = score_rows(rows, kind, plan)
    except ScoringError as exc:
        return _Outcome(_error(exc.status, exc.message))
    return _Outcome(Response(content, media_type="application/json"), rows=len(rows))


def _authorised(header: str, key: str) -> bool:
    scheme, _, token = header.strip().partition(" ")
    # compare_digest: the time taken must not tell how much of a guessed key was right
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _fault_status(status: int, retry_after: int | None) -> Response:
    headers = dict(MODEL_ERROR_HEADERS) if status == HTTPStatus.FAILED_DEPENDENCY else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return _error(status, f"mock fault: {status} {phrase}", headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": message}).encode()
    return Response(body, status_code=int(status), media_type="application/json", headers=headers)
