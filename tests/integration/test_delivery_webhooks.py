"""Webhooks over real HTTP: a stdlib server on 127.0.0.1 that verifies the signature as a receiver would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import WebhookSettings
from tests.peers import WEBHOOK_SECRET as SECRET
from tests.peers import Receiver, free_ports, webhook_receiver
from workers.delivery import post_webhook
from workers.errors import DeliveryError

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as server:
        yield server


def _settings(url: str, **overrides: Any) -> WebhookSettings:
    return WebhookSettings(**({"url": url, "secret": SECRET, "events": ("done", "failed")} | overrides))


def test_a_signed_notification_is_accepted(receiver: Receiver) -> None:
    post_webhook(_settings(receiver.url), "done", {"job_id": "job-1", "segments": 2})
    assert receiver.accepted == [("done", {"job_id": "job-1", "segments": 2})]


def test_a_wrong_secret_is_refused_and_not_retried(receiver: Receiver) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_webhook(_settings(receiver.url, secret="not-the-secret"), "failed", {"job_id": "job-2"})
    assert receiver.answers == [401]
    assert caught.value.retryable is False
    assert "not-the-secret" not in str(caught.value)


def test_server_errors_are_retried_until_accepted(receiver: Receiver) -> None:
    receiver.script = [503, 500]
    post_webhook(_settings(receiver.url), "done", {"job_id": "job-3"}, sleep=lambda s: None)
    assert receiver.answers == [503, 500, 204]
    assert receiver.accepted == [("done", {"job_id": "job-3"})]


def test_a_receiver_that_is_down_fails_retryable() -> None:
    (port,) = free_ports()
    with pytest.raises(DeliveryError) as caught:
        post_webhook(
            _settings(f"http://127.0.0.1:{port}/hooks", max_attempts=2), "done", {}, sleep=lambda s: None
        )
    assert caught.value.retryable is True
    assert "ConnectError" in caught.value.reason
