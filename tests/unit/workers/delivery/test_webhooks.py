"""Webhook signing and retries, on httpx.MockTransport."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog

from config.settings import WebhookSettings
from workers.delivery.webhooks import post_webhook, sign, verify_signature
from workers.errors import DeliveryError

SECRET = "SECRET-hook-5150"
NOW = 1_800_000_000.0
PAYLOAD = {"job_id": "job-9", "state": "done", "segments": [{"prompt": "liver", "volume_ml": 1.5}], "ä": "ü"}


def _settings(**overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {"url": "https://hooks.example.org/mipgw", "secret": SECRET, "max_attempts": 4}
    return WebhookSettings(**(values | overrides))


class Hook:
    def __init__(self, *script: int | Callable[[httpx.Request], httpx.Response]) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 204
        return step(request) if callable(step) else httpx.Response(step)


def _post(hook: Hook, settings: WebhookSettings | None = None, event: str = "done") -> list[float]:
    sleeps: list[float] = []
    clock = iter(NOW + i for i in range(100))
    post_webhook(
        settings or _settings(),
        event,
        PAYLOAD,
        transport=httpx.MockTransport(hook),
        sleep=sleeps.append,
        clock=lambda: next(clock),
        rng=random.Random(1),
    )
    return sleeps


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1800000000", body) == f"sha256={expected}"
    assert sign(SECRET.encode(), "1800000000", body) == f"sha256={expected}"


def test_verify_signature() -> None:
    body, ts = b'{"a":1}', "1800000000"
    good = sign(SECRET, ts, body)
    assert verify_signature(SECRET, ts, body, good, now=NOW)
    assert verify_signature(SECRET, ts, body, good, now=NOW + 299)
    assert not verify_signature(SECRET, ts, b'{"a":2}', good, now=NOW)  # tampered body
    assert not verify_signature("other", ts, body, good, now=NOW)  # wrong secret
    assert not verify_signature(SECRET, "1800000001", body, good, now=NOW)  # timestamp swapped
    assert not verify_signature(SECRET, ts, body, good, now=NOW + 301)  # stale
    assert not verify_signature(SECRET, ts, body, good, now=NOW - 301)  # from the future
    assert not verify_signature(SECRET, ts, body, good, tolerance_s=10, now=NOW + 11)
    assert not verify_signature(SECRET, "soon", body, good, now=NOW)
    assert not verify_signature(SECRET, ts, body, good.removeprefix("sha256="), now=NOW)


def test_the_post_is_compact_sorted_json_signed() -> None:
    hook = Hook()
    assert _post(hook) == []
    (request,) = hook.requests
    body = request.content
    assert body == json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Mipgw-Event"] == "done"
    assert request.headers["X-Mipgw-Timestamp"] == str(int(NOW))
    assert verify_signature(
        SECRET, request.headers["X-Mipgw-Timestamp"], body, request.headers["X-Mipgw-Signature"], now=NOW
    )


def test_without_a_secret_there_is_no_signature() -> None:
    hook = Hook()
    _post(hook, _settings(secret=None))
    assert "X-Mipgw-Signature" not in hook.requests[0].headers


def test_events_not_subscribed_are_not_posted() -> None:
    hook = Hook()
    _post(hook, _settings(events=("failed",)), event="done")
    assert hook.requests == []


def test_transient_failures_are_retried_each_attempt_signed_afresh() -> None:
    hook = Hook(503, lambda r: httpx.Response(429, headers={"Retry-After": "7"}), 500, 200)
    sleeps = _post(hook)
    assert len(hook.requests) == 4
    assert len(sleeps) == 3
    assert sleeps[1] >= 7  # Retry-After honoured
    stamps = [r.headers["X-Mipgw-Timestamp"] for r in hook.requests]
    assert len(set(stamps)) == 4
    assert len({r.headers["X-Mipgw-Delivery"] for r in hook.requests}) == 1
    for request in hook.requests:
        ts = request.headers["X-Mipgw-Timestamp"]
        assert verify_signature(SECRET, ts, request.content, request.headers["X-Mipgw-Signature"], now=NOW)


def test_transport_errors_are_retried_then_raised_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    hook = Hook(*[refuse] * 4)
    with pytest.raises(DeliveryError) as caught:
        _post(hook)
    assert len(hook.requests) == 4
    assert caught.value.retryable is True
    assert (
        caught.value.reason
        == "webhook done failed after 4 attempt(s): ConnectError: [Errno 111] Connection refused"
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_client_errors_are_final_at_once(status: int) -> None:
    hook = Hook(status)
    with pytest.raises(DeliveryError) as caught:
        _post(hook)
    assert len(hook.requests) == 1
    assert caught.value.retryable is False
    assert f"after 1 attempt(s): answered {status}" in caught.value.reason


def test_secrets_and_url_credentials_stay_out_of_errors_and_logs() -> None:
    settings = _settings(url=f"https://bob:{SECRET}@hooks.example.org/mipgw?key={SECRET}", max_attempts=2)
    with structlog.testing.capture_logs() as logs, pytest.raises(DeliveryError) as caught:
        _post(Hook(500, 500), settings)
    assert caught.value.destination == "https://hooks.example.org/mipgw"
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(logs)
    assert [entry["event"] for entry in logs] == ["webhook.attempt_failed"] * 2
    assert logs[0]["job_id"] == "job-9"
