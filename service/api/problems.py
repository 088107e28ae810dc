"""Every error the HTTP API answers, as RFC 9457 problem details (``application/problem+json``).

The API's own errors, raised by the routes::

    ApiError                           status, title, detail; a problem type of its own
     ├── BadRequestError           400  the request cannot be understood (malformed multipart, bad UID)
     ├── UnauthorizedError         401  no key, or an unknown key (with WWW-Authenticate: Bearer)
     ├── ForbiddenError            403  a STOW-only key on another route
     ├── NotFoundError             404  no such job, or no SEG for it
     ├── ConflictError             409  the resource's state does not allow it
     ├── GoneError                 410  the file was on disk once and has expired
     ├── PayloadTooLargeError      413  the request exceeds ``api.max_request_bytes``
     ├── UnsupportedMediaTypeError 415  not multipart/related of application/dicom
     └── ServiceUnavailableError   503  a dependency (the job store) is down: try again

:func:`install_problem_handlers` is the one place where exceptions become responses: the ones above,
the job store's (:mod:`workers.store.errors`), FastAPI's validation errors, Starlette's HTTP errors
(unknown route, wrong method) and anything unexpected (500, logged with the request id; the detail
never echoes internals).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.status import HTTP_500_INTERNAL_SERVER_ERROR

from workers.store.errors import (
    InvalidTransitionError,
    JobNotFoundError,
    SchemaVersionError,
    StaleJobError,
    StoreError,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "NotFoundError",
    "PayloadTooLargeError",
    "Problem",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "install_problem_handlers",
    "problem_responses",
    "unexpected_problem",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:mip-gateway:problem:"

log = structlog.get_logger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details, plus the request id to find the logs by."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="the request path")
    request_id: str | None = None


class ApiError(Exception):
    status = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequestError(ApiError):
    status, slug, title = 400, "bad-request", "Bad request"


class UnauthorizedError(ApiError):
    status, slug, title = 401, "unauthorized", "A valid API key is required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="mip-gateway"'})


class ForbiddenError(ApiError):
    status, slug, title = 403, "forbidden", "This key may not use this route"


class NotFoundError(ApiError):
    status, slug, title = 404, "not-found", "Not found"


class ConflictError(ApiError):
    status, slug, title = 409, "conflict", "Not allowed in the resource's current state"


class GoneError(ApiError):
    status, slug, title = 410, "gone", "No longer available"


class PayloadTooLargeError(ApiError):
    status, slug, title = 413, "request-too-large", "Request too large"


class UnsupportedMediaTypeError(ApiError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class ServiceUnavailableError(ApiError):
    status, slug, title = 503, "unavailable", "Service unavailable"


_HTTP_TITLES = {
    400: "Bad request",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request parameters",
}


def problem_response(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str | None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": _TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _from_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(
        request, exc.status, exc.slug, exc.title, exc.detail, headers=exc.headers, **exc.extra
    )


def _from_store_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, JobNotFoundError):
        return problem_response(request, 404, "job-not-found", "No such job", str(exc))
    if isinstance(exc, InvalidTransitionError | StaleJobError):
        return problem_response(
            request, 409, "job-state-conflict", "Not allowed in the job's state", str(exc)
        )
    if isinstance(exc, SchemaVersionError):
        log.error("api.store_schema", error=str(exc))
        return problem_response(request, 503, "unavailable", "Job store not migrated", str(exc))
    return _unexpected(request, exc)


def _from_database_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("api.store_unavailable", error=str(exc).splitlines()[0][:300])
    return problem_response(
        request, 503, "unavailable", "Job store unavailable", "the job store cannot be reached; try again"
    )


def _from_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
        for error in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
    return problem_response(request, 422, "invalid-parameters", _HTTP_TITLES[422], detail, errors=errors)


def _from_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = _HTTP_TITLES.get(exc.status_code, "HTTP error")
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        request, exc.status_code, f"http-{exc.status_code}", title, detail, headers=dict(exc.headers or {})
    )


def unexpected_problem(request: Request, exc: BaseException) -> JSONResponse:
    """Anything no handler knows: a 500 whose detail never echoes internals (the log has them).

    Called by the request middleware (``service.api.app``), which sits inside Starlette's
    ServerErrorMiddleware, so the error is answered and logged once.
    """
    return _unexpected(request, exc)


def _unexpected(request: Request, exc: BaseException) -> JSONResponse:
    log.error("api.unexpected_error", error_type=type(exc).__name__, exc_info=exc)
    return problem_response(
        request,
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        "the gateway could not complete the request; the logs name the cause under this request id",
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _from_api_error)
    app.add_exception_handler(StoreError, _from_store_error)
    app.add_exception_handler(OperationalError, _from_database_error)
    app.add_exception_handler(RequestValidationError, _from_validation_error)
    app.add_exception_handler(StarletteHTTPException, _from_http_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problems a route may answer."""
    return {
        status: {
            "model": Problem,
            "description": _HTTP_TITLES.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
