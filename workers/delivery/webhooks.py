"""Signed webhook notifications (fire and forget: retried here, inline, with backoff).

Each POST carries the payload as compact JSON with sorted keys, and the headers

- ``X-Mipgw-Event``: the event (``done``, ``failed``, ...);
- ``X-Mipgw-Delivery``: one id per notification, the same on every retry (for de-duplication);
- ``X-Mipgw-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Mipgw-Signature``: ``sha256=<hex>``, the HMAC-SHA256 with the shared secret over the bytes
  ``<timestamp>.<body>`` (only when a secret is configured).

A receiver recomputes the HMAC over the raw body it received (not re-serialised JSON) and refuses
stale timestamps; :func:`verify_signature` does both.

Transport errors, 408, 429 and 5xx are retried up to ``max_attempts`` with jittered exponential
backoff (Retry-After honoured); other answers outside 2xx are final.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import structlog

from config.settings import WebhookSettings
from workers.delivery.base import public_url
from workers.endpoint.resilience import backoff_delay, retry_after_seconds
from workers.errors import DeliveryError

__all__ = ["post_webhook", "sign", "verify_signature"]

log = structlog.get_logger(__name__)

_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 30.0


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``<timestamp>.<body>``)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is ours for this body and the timestamp is within ``tolerance_s``."""
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - signed_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def post_webhook(
    settings: WebhookSettings,
    event: str,
    payload: Mapping[str, Any],
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> None:
    """POST ``payload`` for ``event`` if ``settings`` subscribe to it; DeliveryError when it fails."""
    url = str(settings.url)
    destination = public_url(url)
    if event not in settings.events:
        log.debug("webhook.skipped", url=destination, webhook_event=event)
        return
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
    delivery_id = uuid.uuid4().hex
    rng = rng or random.Random()
    bound = log.bind(
        url=destination, webhook_event=event, delivery_id=delivery_id, job_id=payload.get("job_id")
    )
    with httpx.Client(transport=transport, timeout=settings.timeout_s) as client:
        for attempt in range(settings.max_attempts):
            timestamp = str(int(clock()))
            headers = {
                "Content-Type": "application/json",
                "X-Mipgw-Event": event,
                "X-Mipgw-Delivery": delivery_id,
                "X-Mipgw-Timestamp": timestamp,
            }
            if settings.secret is not None:
                headers["X-Mipgw-Signature"] = sign(settings.secret.get_secret_value(), timestamp, body)
            wait: float | None = None
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem, retryable = f"{type(exc).__name__}: {exc}", True
            else:
                if response.is_success:
                    bound.info("webhook.sent", status=response.status_code, attempts=attempt + 1)
                    return
                problem = f"answered {response.status_code} {response.reason_phrase}".rstrip()
                retryable = response.status_code in _RETRYABLE_HTTP
                wait = retry_after_seconds(response.headers.get("Retry-After"), now=clock)
            last = attempt + 1 == settings.max_attempts
            bound.warning(
                "webhook.attempt_failed", attempt=attempt + 1, problem=problem, final=last or not retryable
            )
            if not retryable or last:
                raise DeliveryError(
                    f"webhook {event} failed after {attempt + 1} attempt(s): {problem}",
                    destination=destination,
                    retryable=retryable,
                )
            delay = backoff_delay(attempt, _BACKOFF_INITIAL_S, _BACKOFF_MAX_S, rng)
            sleep(min(max(delay, wait or 0.0), _BACKOFF_MAX_S))
