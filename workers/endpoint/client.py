"""The segmentation endpoint client: batching, retries, throttling, circuit breaking, fallback.

2D images stream through: they are cut into requests of at most ``max_images_per_request`` rows and
``max_request_bytes`` of JSON, at most ``max_in_flight`` requests are outstanding, and predictions
come back in input order while later batches are still being encoded, sent or decoded. A whole
series' base64 is never held at once. A 413 splits a request in half, recursively.

Every HTTP answer is classified once (:meth:`EndpointClient._post`): 200 → parsed; 408/424/429/5xx and
transport errors → retried with jittered exponential backoff (Retry-After honoured), counted by the
endpoint's circuit breaker; 400/401/403/404 → :class:`EndpointRejectedError`, never retried.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from config.settings import EndpointSettings
from workers.endpoint.auth import HeaderSource
from workers.endpoint.contract import (
    ContractError,
    Prediction2D,
    Row,
    decode_2d_response,
    decode_3d_response,
    encode_request,
)
from workers.endpoint.resilience import backoff_delay, gate_for, retry_after_seconds
from workers.errors import EndpointRejectedError, EndpointResponseError, EndpointUnavailableError

__all__ = ["EndpointClient", "ImageRequest", "JobContext"]

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({408, 424, 429, 500, 502, 503, 504})
_ENVELOPE_BYTES = 96
_ROW_OVERHEAD = 8


@dataclass(frozen=True, slots=True)
class JobContext:
    """Who is asking: carried into logs and errors."""

    job_id: str | None = None
    series_instance_uid: str | None = None


@dataclass(frozen=True, slots=True)
class ImageRequest:
    key: Hashable  # the caller's handle for this image (e.g. a frame), returned with its prediction
    png: bytes
    prompts: tuple[str, ...]


class _TooLargeError(Exception):
    """HTTP 413: the caller splits the request."""


class EndpointClient:
    def __init__(
        self,
        name: str,
        settings: EndpointSettings,
        *,
        fallback: EndpointClient | None = None,
        transport: httpx.BaseTransport | None = None,
        headers: HeaderSource | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._url = str(settings.url)
        self._fallback = fallback
        self._headers = headers or HeaderSource(settings)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._gate = gate_for(
            name,
            self._url,
            max_in_flight=settings.max_in_flight,
            threshold=settings.breaker_threshold,
            cooldown=settings.breaker_cooldown_s,
        )
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout_s)
        limits = httpx.Limits(
            max_connections=settings.max_in_flight * 2, max_keepalive_connections=settings.max_in_flight
        )
        self._http = httpx.Client(timeout=timeout, limits=limits, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def circuit_open_for(self) -> float:
        """Seconds the circuit stays open (0 when requests may go out): for the job's status."""
        return self._gate.breaker.open_for()

    # --- 2D ------------------------------------------------------------------------------------

    def predict_2d(
        self, images: Iterable[ImageRequest], context: JobContext | None = None
    ) -> Iterator[tuple[Hashable, Prediction2D]]:
        """``(key, prediction)`` for every image, in input order, streamed batch by batch."""
        context = context or JobContext()
        pending: deque[tuple[list[ImageRequest], Future[list[Prediction2D]]]] = deque()
        limit = self.settings.max_in_flight
        # One worker more than the endpoint's slots encodes or decodes while the others wait on HTTP
        # (the gate holds requests in flight to the limit), and batches that finished behind a slow
        # head of the queue wait in `pending`: the endpoint is never left idle, memory stays bounded.
        pool = ThreadPoolExecutor(limit + 1, thread_name_prefix=f"mipgw-{self.name}")
        try:
            for batch in self._batches(images):
                pending.append((batch, pool.submit(self._score_batch, batch, context)))
                while len(pending) > 2 * limit:
                    yield from _ready(pending.popleft())
            while pending:
                yield from _ready(pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batches(self, images: Iterable[ImageRequest]) -> Iterator[list[ImageRequest]]:
        batch: list[ImageRequest] = []
        size = _ENVELOPE_BYTES
        for image in images:
            row_size = _row_bytes(image)
            full = len(batch) >= self.settings.max_images_per_request
            if batch and (full or size + row_size > self.settings.max_request_bytes):
                yield batch
                batch, size = [], _ENVELOPE_BYTES
            batch.append(image)
            size += row_size
        if batch:
            yield batch

    def _score_batch(self, batch: list[ImageRequest], context: JobContext) -> list[Prediction2D]:
        rows = [Row(image.png, image.prompts) for image in batch]
        try:
            body = self._post_with_fallback(encode_request(rows), context)
        except _TooLargeError:
            if len(batch) == 1:
                raise EndpointRejectedError(
                    f"one {len(batch[0].png) / 1e6:.1f} MB image is too large for the endpoint (HTTP 413)",
                    endpoint=self.name,
                    status=413,
                    **_where(context),
                ) from None
            half = len(batch) // 2
            log.info("endpoint.split_batch", endpoint=self.name, rows=len(batch), **_where(context))
            return self._score_batch(batch[:half], context) + self._score_batch(batch[half:], context)
        try:
            return decode_2d_response(body, [len(image.prompts) for image in batch])
        except ContractError as exc:
            raise EndpointResponseError(str(exc), endpoint=self.name, **_where(context)) from exc

    # --- 3D ------------------------------------------------------------------------------------

    def predict_3d(self, nifti: bytes, prompts: Sequence[str], context: JobContext | None = None) -> bytes:
        """The label-map NIfTI bytes for one volume (the 3D endpoint takes one volume per request)."""
        context = context or JobContext()
        try:
            body = self._post_with_fallback(encode_request([Row(nifti, tuple(prompts))]), context)
        except _TooLargeError:
            raise EndpointRejectedError(
                f"a {len(nifti) / 1e6:.1f} MB volume is too large for the endpoint (HTTP 413)",
                endpoint=self.name,
                status=413,
                **_where(context),
            ) from None
        try:
            return decode_3d_response(body)
        except ContractError as exc:
            raise EndpointResponseError(str(exc), endpoint=self.name, **_where(context)) from exc

    # --- HTTP ----------------------------------------------------------------------------------

    def _post_with_fallback(self, body: bytes, context: JobContext) -> Any:
        try:
            return self._post(body, context)
        except EndpointUnavailableError as exc:
            if self._fallback is None:
                raise
            log.warning(
                "endpoint.fallback", endpoint=self.name, fallback=self._fallback.name, reason=exc.reason
            )
            return self._fallback._post(body, context)

    def _post(self, body: bytes, context: JobContext) -> Any:
        """Parsed JSON of a 200 answer; retries what is worth retrying, classifies the rest."""
        where = _where(context)
        last = "no attempt made"
        for attempt in range(self.settings.max_attempts):
            open_for = self._gate.breaker.open_for()
            if open_for > 0:
                raise EndpointUnavailableError(
                    f"circuit open after {self._gate.breaker.consecutive_failures} consecutive failures "
                    f"(last: {last}); next try in {open_for:.0f} s",
                    endpoint=self.name,
                    **where,
                )
            delay = backoff_delay(
                attempt, self.settings.backoff_initial_s, self.settings.backoff_max_s, self._rng
            )
            started = time.perf_counter()
            try:
                with self._gate.slot():
                    response = self._http.post(self._url, content=body, headers=self._headers.headers())
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                elapsed = time.perf_counter() - started
                if status == 200:
                    try:
                        parsed = json.loads(response.content)
                    except ValueError:
                        last = "HTTP 200 with a body that is not JSON"
                    else:
                        self._gate.breaker.record_success()
                        log.debug(
                            "endpoint.ok",
                            endpoint=self.name,
                            seconds=round(elapsed, 3),
                            bytes=len(body),
                            **where,
                        )
                        return parsed
                elif status == 413:
                    raise _TooLargeError
                elif status in RETRYABLE_STATUS or status >= 500:
                    last = f"HTTP {status}{_model_error(response)}"
                    server_wait = retry_after_seconds(response.headers.get("Retry-After"))
                    if server_wait is not None:
                        delay = min(server_wait, self.settings.backoff_max_s)
                else:
                    raise _rejected(self.name, self._url, response, where)
            self._gate.breaker.record_failure()
            if attempt + 1 < self.settings.max_attempts:
                log.warning(
                    "endpoint.retry",
                    endpoint=self.name,
                    attempt=attempt + 1,
                    reason=last,
                    wait_s=round(delay, 2),
                    **where,
                )
                self._sleep(delay)
        raise EndpointUnavailableError(
            f"gave up after {self.settings.max_attempts} attempts (last: {last})", endpoint=self.name, **where
        )


def _ready(
    item: tuple[list[ImageRequest], Future[list[Prediction2D]]],
) -> Iterator[tuple[Hashable, Prediction2D]]:
    batch, future = item
    for image, prediction in zip(batch, future.result(), strict=True):
        yield image.key, prediction


def _row_bytes(image: ImageRequest) -> int:
    return (len(image.png) + 2) // 3 * 4 + sum(len(p) + 3 for p in image.prompts) + _ROW_OVERHEAD


def _where(context: JobContext) -> dict[str, Any]:
    return {"job_id": context.job_id, "series_instance_uid": context.series_instance_uid}


def _model_error(response: httpx.Response) -> str:
    """Azure ML's account of a 424: the model container's own status and reason."""
    code = response.headers.get("ms-azureml-model-error-statuscode")
    reason = response.headers.get("ms-azureml-model-error-reason")
    return f" (model error {code}: {reason})" if code or reason else ""


def _rejected(name: str, url: str, response: httpx.Response, where: dict[str, Any]) -> EndpointRejectedError:
    status = response.status_code
    if status in (401, 403):
        reason = (
            f"the endpoint rejected the key (HTTP {status}): check the key, its secret file or the Entra role"
        )
    elif status == 404:
        reason = f"no deployment answers at {url} (HTTP 404): check the URL and the deployment's traffic"
    else:
        excerpt = " ".join(response.text[:200].split())
        reason = f"the endpoint rejected the request (HTTP {status}): {excerpt}"
    return EndpointRejectedError(reason, endpoint=name, status=status, **where)
