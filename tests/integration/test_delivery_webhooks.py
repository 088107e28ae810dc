"""Webhooks over real HTTP: a stdlib server on 127.0.0.1 that verifies the signature as a receiver would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from config.settings import WebhookSettings
from tests.peers import free_ports
from workers.delivery import post_webhook, verify_signature
from workers.errors import DeliveryError

pytestmark = pytest.mark.integration

SECRET = "hook-secret-31337"


class Receiver(ThreadingHTTPServer):
    """Answers each POST with the next status of ``script`` (then 204); 401 for a bad signature."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[int] = []
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/mipgw"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = verify_signature(
            SECRET, self.headers["X-Mipgw-Timestamp"], body, self.headers.get("X-Mipgw-Signature", "")
        )
        status = (self.server.script.pop(0) if self.server.script else 204) if signed else 401
        if status == 204:
            self.server.accepted.append((self.headers["X-Mipgw-Event"], json.loads(body)))
        self.server.answers.append(status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


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
