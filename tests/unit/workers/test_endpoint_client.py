"""The endpoint client's edge cases, on httpx.MockTransport (the mock endpoint covers real HTTP)."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import structlog

from config.settings import EndpointSettings
from workers.endpoint.client import EndpointClient, ImageRequest, JobContext
from workers.endpoint.contract import decode_request, encode_2d_item, encode_3d_response
from workers.errors import EndpointRejectedError, EndpointResponseError, EndpointUnavailableError, PromptError

SECRET = "SECRET-KEY-4242"
_names = itertools.count()


def _settings(**overrides: Any) -> EndpointSettings:
    values: dict[str, Any] = {
        "url": "https://mip.example.org/score",
        "model": "2d",
        "key": SECRET,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 5,
        "max_attempts": 4,
        "breaker_threshold": 100,
    }
    values.update(overrides)
    return EndpointSettings(**values)


def _answer(request: httpx.Request) -> httpx.Response:
    """A correct 2D answer: each mask filled with its row index, so order can be checked."""
    rows = decode_request(json.loads(request.content))
    items = []
    for row in rows:
        marker = int(row.image.decode())
        masks = np.full((len(row.prompts), 1024, 1024), marker % 256, dtype=np.uint8)
        items.append(encode_2d_item(masks, ["liver"] * len(row.prompts)))
    return httpx.Response(200, json=items)


class Recorder:
    """A MockTransport handler with a script of answers and a log of requests."""

    def __init__(self, *script: Callable[[httpx.Request], httpx.Response] | int, then: Any = _answer) -> None:
        self.script = list(script)
        self.then = then
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            step = self.script.pop(0) if self.script else self.then
        if isinstance(step, int):
            return httpx.Response(step, text=f"status {step}")
        return step(request)

    def rows_per_request(self) -> list[int]:
        return [len(decode_request(json.loads(r.content))) for r in self.requests]


def _client(handler: Any, sleeps: list[float] | None = None, **overrides: Any) -> EndpointClient:
    waits = sleeps if sleeps is not None else []
    return EndpointClient(
        f"test-{next(_names)}",
        _settings(**overrides),
        transport=httpx.MockTransport(handler),
        sleep=waits.append,
    )


def _images(n: int, prompts: tuple[str, ...] = ("liver",), size: int = 10) -> list[ImageRequest]:
    return [ImageRequest(i, str(i).encode().ljust(size, b" "), prompts) for i in range(n)]


def test_batches_in_order_with_keys() -> None:
    recorder = Recorder()
    with _client(recorder, max_images_per_request=16) as client:
        results = list(client.predict_2d(_images(40)))
    assert sorted(recorder.rows_per_request()) == [8, 16, 16]  # batches go out concurrently
    assert [key for key, _ in results] == list(range(40))
    for key, prediction in results:
        assert prediction.masks.shape == (1, 1024, 1024)
        assert prediction.masks[0, 0, 0] == key
        assert prediction.categories == ("liver",)
    with _client(Recorder()) as client:
        ((_, both),) = list(client.predict_2d(_images(1, prompts=("liver", "spleen"))))
    assert both.masks.shape == (2, 1024, 1024)


def test_byte_budget_cuts_batches() -> None:
    recorder = Recorder()
    with _client(recorder, max_images_per_request=100, max_request_bytes=100_000) as client:
        list(client.predict_2d(_images(10, size=30_000)))
    assert max(recorder.rows_per_request()) <= 2
    assert all(len(r.content) <= 100_000 for r in recorder.requests)


def test_413_splits_in_half_and_single_image_is_rejected() -> None:
    def limit(request: httpx.Request) -> httpx.Response:
        rows = decode_request(json.loads(request.content))
        return httpx.Response(413) if len(rows) > 3 else _answer(request)

    recorder = Recorder(then=limit)
    with _client(recorder, max_images_per_request=16) as client:
        keys = [key for key, _ in client.predict_2d(_images(16))]
    assert keys == list(range(16))
    assert recorder.rows_per_request() == [16, 8, 4, 2, 2, 4, 2, 2, 8, 4, 2, 2, 4, 2, 2]
    with (
        _client(Recorder(then=lambda r: httpx.Response(413))) as client,
        pytest.raises(EndpointRejectedError, match="too large"),
    ):
        list(client.predict_2d(_images(1)))


def test_transient_failures_are_retried_honouring_retry_after() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    script = [
        lambda r: httpx.Response(503),
        lambda r: httpx.Response(429, headers={"Retry-After": "2"}),
        lambda r: httpx.Response(429, headers={"Retry-After": when}),
    ]
    sleeps: list[float] = []
    recorder = Recorder(*script)
    with _client(recorder, sleeps) as client:
        assert len(list(client.predict_2d(_images(1)))) == 1
    assert len(recorder.requests) == 4
    assert sleeps[0] <= 0.01  # jittered backoff, attempt 0
    assert sleeps[1] == 2.0
    assert 1.0 < sleeps[2] <= 3.0


def test_model_errors_of_a_424_are_logged() -> None:
    headers = {"ms-azureml-model-error-statuscode": "500", "ms-azureml-model-error-reason": "model_error"}
    recorder = Recorder(lambda r: httpx.Response(424, headers=headers))
    with structlog.testing.capture_logs() as logs, _client(recorder) as client:
        list(client.predict_2d(_images(1), JobContext("job-7", "1.2.3")))
    (retry,) = [entry for entry in logs if entry["event"] == "endpoint.retry"]
    assert retry["reason"] == "HTTP 424 (model error 500: model_error)"
    assert retry["job_id"] == "job-7"
    assert retry["series_instance_uid"] == "1.2.3"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "rejected the key"),
        (403, "rejected the key"),
        (404, "no deployment answers at https://mip.example.org/score"),
        (400, r"rejected the request \(HTTP 400\): status 400"),
    ],
)
def test_client_errors_are_final(status: int, message: str) -> None:
    recorder = Recorder(then=lambda r: httpx.Response(status, text=f"status {status}"))
    with _client(recorder) as client, pytest.raises(EndpointRejectedError, match=message) as err:
        list(client.predict_2d(_images(3), JobContext("job-1", "1.2.840.1")))
    assert len(recorder.requests) == 1
    assert err.value.retryable is False
    assert err.value.status == status
    assert "job job-1" in str(err.value)
    assert "series 1.2.840.1" in str(err.value)


def test_giving_up_is_retryable_and_names_the_last_failure() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    recorder = Recorder(then=refuse)
    sleeps: list[float] = []
    with _client(recorder, sleeps, max_attempts=3) as client, pytest.raises(EndpointUnavailableError) as err:
        client.predict_3d(b"\x1f\x8bvolume", ["liver"])
    assert len(recorder.requests) == 3
    assert len(sleeps) == 2
    assert err.value.retryable is True
    assert "gave up after 3 attempts (last: connection failed (ConnectError))" in str(err.value)


def test_malformed_json_is_retried_then_reported() -> None:
    recorder = Recorder(then=lambda r: httpx.Response(200, content=b'[{"image_features": "{'))
    with (
        _client(recorder, max_attempts=2) as client,
        pytest.raises(EndpointUnavailableError, match="not JSON"),
    ):
        list(client.predict_2d(_images(1)))


def test_wrong_shape_is_a_response_error_with_context() -> None:
    def small(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=[encode_2d_item(np.zeros((2, 512, 512), np.uint8), ["liver", "lung"])]
        )

    with _client(Recorder(then=small)) as client, pytest.raises(EndpointResponseError) as err:
        list(client.predict_2d(_images(1), JobContext("job-9", "1.2.3.4")))
    assert "expected uint8 [1, 1024, 1024]" in str(err.value)
    assert "job job-9" in str(err.value)


def test_circuit_opens_and_fails_fast_then_recovers() -> None:
    now = [0.0]
    recorder = Recorder(then=503)
    client = _client(recorder, max_attempts=10, breaker_threshold=3, breaker_cooldown_s=30)
    client._gate.breaker.clock = lambda: now[0]
    with pytest.raises(EndpointUnavailableError, match="circuit open after 3 consecutive failures"):
        list(client.predict_2d(_images(1)))
    assert len(recorder.requests) == 3
    with pytest.raises(EndpointUnavailableError, match="circuit open"):
        list(client.predict_2d(_images(1)))
    assert len(recorder.requests) == 3  # nothing sent while open
    assert client.circuit_open_for == 30
    now[0] = 31.0
    recorder.then = _answer
    assert len(list(client.predict_2d(_images(1)))) == 1
    assert client.circuit_open_for == 0


def test_fallback_takes_over_when_the_primary_is_unavailable() -> None:
    backup = Recorder()
    fallback = _client(backup)
    primary = EndpointClient(
        f"primary-{next(_names)}",
        _settings(max_attempts=2),
        fallback=fallback,
        transport=httpx.MockTransport(Recorder(then=503)),
        sleep=lambda s: None,
    )
    assert [k for k, _ in primary.predict_2d(_images(3))] == [0, 1, 2]
    assert len(backup.requests) == 1


def test_headers_carry_credentials_and_the_key_never_leaks(tmp_path: Path) -> None:
    recorder = Recorder(then=500)
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    with (
        structlog.testing.capture_logs() as logs,
        _client(
            recorder,
            key=None,
            key_file=key_file,
            deployment="blue",
            headers={"X-Site": "north"},
            max_attempts=2,
        ) as client,
        pytest.raises(EndpointUnavailableError) as err,
    ):
        list(client.predict_2d(_images(1)))
    sent = recorder.requests[0].headers
    assert sent["Authorization"] == f"Bearer {SECRET}"
    assert sent["azureml-model-deployment"] == "blue"
    assert sent["X-Site"] == "north"
    assert SECRET not in str(err.value)
    assert SECRET not in repr(logs)
    assert SECRET not in repr(_settings())
    key_file.write_text("ROTATED")
    recorder.then = _answer
    with _client(recorder, key=None, key_file=key_file) as client:
        list(client.predict_2d(_images(1)))
    assert recorder.requests[-1].headers["Authorization"] == "Bearer ROTATED"


def test_prompts_with_ampersand_are_never_sent() -> None:
    recorder = Recorder()
    with _client(recorder) as client, pytest.raises(PromptError, match="'&'"):
        list(client.predict_2d(_images(2, prompts=("liver & spleen",))))
    assert recorder.requests == []


def test_in_flight_requests_are_capped_per_endpoint() -> None:
    active = [0, 0]
    lock = threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return _answer(request)

    with _client(Recorder(then=slow), max_images_per_request=1, max_in_flight=3) as client:
        assert len(list(client.predict_2d(_images(12)))) == 12
    assert active[1] == 3


def test_results_stream_before_the_input_is_exhausted() -> None:
    consumed = [0]

    def images() -> Iterator[ImageRequest]:
        for image in _images(48):
            consumed[0] += 1
            yield image

    with _client(Recorder(), max_images_per_request=4, max_in_flight=2) as client:
        stream = client.predict_2d(images())
        next(stream)
        # at most 2·in-flight batches waiting plus the one being built (whose end is seen one image
        # late), not the series
        assert consumed[0] <= 4 * (2 * 2 + 1) + 1
        assert len(list(stream)) == 47


def test_3d_round_trip() -> None:
    volume = b"\x1f\x8b" + bytes(range(200))

    def answer(request: httpx.Request) -> httpx.Response:
        (row,) = decode_request(json.loads(request.content))
        assert row.prompts == ("liver", "left kidney")
        return httpx.Response(200, json=encode_3d_response(row.image[::-1]))

    recorder = Recorder(then=answer)
    with _client(recorder, model="3d") as client:
        assert client.predict_3d(volume, ["liver", "left kidney"]) == volume[::-1]
    body = json.loads(recorder.requests[0].content)
    assert body["input_data"]["index"] == [0]
    assert base64.b64decode(body["input_data"]["data"][0][0]) == volume
