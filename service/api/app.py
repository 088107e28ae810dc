"""The FastAPI app: STOW-RS, jobs, health and metrics, behind bearer keys, answering problems.

    app = create_app(settings, store=store, intake=intake, enqueue=CeleryEnqueuer(celery))

The caller owns the edges (store, intake with its idle timer, queue) and their lifetimes;
``mip-gateway api`` (:mod:`service.commands.api`) wires them from the settings and runs uvicorn.

Every request gets an id (``X-Request-ID`` from the client when it is a plain token, else a new
one), echoed in the response and bound to the log context with the method and path; routes add the
study and series UIDs they touch. Nothing about the patient is logged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from uuid import uuid4

import structlog
from fastapi import FastAPI
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings
from service.api import health, jobs, metrics, pulls, stow
from service.api.auth import NO_KEYS, ApiKeys, NoApiKeysError
from service.api.context import ApiContext
from service.api.health import BrokerProbe, Readiness
from service.api.metrics import ApiMetrics
from service.api.problems import install_problem_handlers, unexpected_problem
from service.intake import Intake
from service.metrics import ReceiveCounters
from workers.celery_app import broker_url
from workers.pipeline import Enqueuer, software_version
from workers.storage import DataDir
from workers.store import Store

__all__ = ["create_app"]

log = structlog.get_logger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(
    settings: Settings,
    *,
    store: Store,
    intake: Intake,
    enqueue: Enqueuer,
    counters: ReceiveCounters | None = None,
    allow_no_auth: bool = False,
    readiness: Readiness | None = None,
    collectors: Sequence[Collector] = (),
) -> FastAPI:
    """Raises :class:`NoApiKeysError` when no key is configured and ``allow_no_auth`` is not set.

    ``counters`` is the process's receive tally (shared with a listener in the same process);
    ``collectors`` are more Prometheus collectors for ``/metrics`` (e.g. the listener's own counters).
    """
    keys = ApiKeys.from_settings(settings.api)
    if not keys.configured():
        if not allow_no_auth:
            raise NoApiKeysError(NO_KEYS)
        log.warning("api.insecure_no_auth", detail="every route is open: no API key is required")
    broker = BrokerProbe(broker_url(settings))
    counters = counters or ReceiveCounters()
    context = ApiContext(
        settings=settings,
        data=DataDir(settings.data_dir),
        store=store,
        intake=intake,
        enqueue=enqueue,
        keys=keys if keys.configured() else None,
        counters=counters,
        readiness=readiness or Readiness(settings, store, broker),
        metrics=ApiMetrics(store, broker, counters, collectors),
    )
    app = FastAPI(
        title="mip-gateway",
        version=software_version(),
        summary="DICOM gateway for MedImageParse: STOW-RS in, jobs and DICOM SEG out",
        docs_url=None,  # the interactive pages fetch scripts from a CDN; /openapi.json is served
        redoc_url=None,
    )
    app.state.context = context
    for module in (stow, jobs, health, metrics):
        app.include_router(module.router)
    pulls.document_pull_choices(app, settings)
    install_problem_handlers(app)
    app.add_middleware(_RequestContext, context=context)
    return app


class _RequestContext:
    """Request id, log context, one access log line, the request counter, and the last-resort 500."""

    def __init__(self, app: ASGIApp, context: ApiContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        begin = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            request_id=request_id, method=scope["method"], path=scope["path"]
        ):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started:
                    raise
                await unexpected_problem(Request(scope), exc)(scope, receive, send_with_id)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                self.context.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
                log.info(
                    "http.request",
                    route=route,
                    status=status,
                    seconds=round(time.perf_counter() - begin, 4),
                )
