"""The endpoint client against the mock endpoint over real HTTP (uvicorn on 127.0.0.1), fault by fault."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from config.settings import EndpointSettings
from service.mock_endpoint import FaultPlan, MockEndpointServer
from workers.endpoint.client import EndpointClient, ImageRequest, JobContext
from workers.errors import EndpointRejectedError, EndpointResponseError, EndpointUnavailableError

pytestmark = pytest.mark.integration

KEY = "mock-key-123"
_names = itertools.count()


@pytest.fixture(scope="module")
def mock() -> Iterator[MockEndpointServer]:
    with MockEndpointServer(key=KEY) as server:
        yield server


def _png(seed: int) -> bytes:
    """A 1024² grey image with one bright asymmetric blob whose place depends on the seed."""
    image = np.zeros((1024, 1024), dtype=np.uint8)
    y, x = 200 + 37 * seed % 500, 300 + 53 * seed % 400
    image[y : y + 180, x : x + 90] = 200
    image[y : y + 40, x + 90 : x + 160] = 200
    return bytes(cv2.imencode(".png", image)[1])


def _client(mock: MockEndpointServer, fault: str | None = None, **overrides: Any) -> EndpointClient:
    values: dict[str, Any] = {
        "url": mock.score_url,
        "model": "2d",
        "key": KEY,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 2,
        "max_attempts": 4,
        "breaker_threshold": 50,
    }
    values.update(overrides)
    name = f"mock-{next(_names)}"
    # each client its own fault counter key, so tests never share a fail-first budget
    headers = {"X-Mock-Fault": fault, "X-Mock-Fault-Key": name} if fault else {}
    return EndpointClient(name, EndpointSettings(**values, headers=headers))


def _requests(n: int, prompts: tuple[str, ...] = ("liver",)) -> list[ImageRequest]:
    return [ImageRequest(i, _png(i), prompts) for i in range(n)]


def test_2d_predictions_come_back_in_order_on_the_blobs(mock: MockEndpointServer) -> None:
    with _client(mock, max_images_per_request=3) as client:
        results = list(client.predict_2d(_requests(7, ("liver", "left kidney"))))
    assert [key for key, _ in results] == list(range(7))
    for key, prediction in results:
        sent = cv2.imdecode(np.frombuffer(_png(int(key)), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
        found = prediction.masks[0] >= 128
        assert (found & sent).sum() / (found | sent).sum() > 0.95
        assert prediction.categories == ("liver", "kidney")


@pytest.mark.parametrize("fault", ["fail-first=3;status=503", "fail-first=2;status=429;retry-after=1",
                                   "fail-first=2;status=424", "fail-first=2;drop-connection",
                                   "fail-first=1;malformed-json", "fail-first=2;status=502"])  # fmt: skip
def test_transient_faults_are_ridden_out(mock: MockEndpointServer, fault: str) -> None:
    with _client(mock, fault) as client:
        assert len(list(client.predict_2d(_requests(2)))) == 2


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("always=401", EndpointRejectedError, "rejected the key"),
        ("always=404", EndpointRejectedError, "no deployment answers"),
        ("always=400", EndpointRejectedError, "rejected the request"),
        ("always=503", EndpointUnavailableError, "gave up after 4 attempts"),
        ("wrong-shape", EndpointResponseError, "expected uint8"),
        ("wrong-count", EndpointResponseError, "items for"),
    ],
)
def test_final_faults_fail_with_a_reason(
    mock: MockEndpointServer, fault: str, error: type, message: str
) -> None:
    with _client(mock, fault) as client, pytest.raises(error, match=message) as err:
        list(client.predict_2d(_requests(2), JobContext("job-3", "1.2.3.4")))
    assert "job job-3" in str(err.value)
    assert KEY not in str(err.value)


def test_wrong_key_is_refused_at_once(mock: MockEndpointServer) -> None:
    with _client(mock, key="not-the-key") as client, pytest.raises(EndpointRejectedError, match="key") as err:
        list(client.predict_2d(_requests(1)))
    assert err.value.status == 401
    assert "not-the-key" not in str(err.value)


def test_413_above_a_row_limit_splits_the_batch(mock: MockEndpointServer) -> None:
    with _client(mock, "max-rows=2", max_images_per_request=8) as client:
        assert [k for k, _ in client.predict_2d(_requests(8))] == list(range(8))


def test_timeouts_are_retried_then_reported(mock: MockEndpointServer) -> None:
    with (
        _client(mock, "latency=1500", read_timeout_s=0.3, max_attempts=2) as client,
        pytest.raises(EndpointUnavailableError, match="timed out"),
    ):
        list(client.predict_2d(_requests(1)))


def test_circuit_opens_for_an_endpoint_that_keeps_failing(mock: MockEndpointServer) -> None:
    with _client(mock, "always=503", breaker_threshold=2, breaker_cooldown_s=60, max_attempts=5) as client:
        with pytest.raises(EndpointUnavailableError, match="circuit open after 2 consecutive failures"):
            list(client.predict_2d(_requests(1)))
        assert client.circuit_open_for > 50


def test_fallback_endpoint_answers_when_the_first_is_down(mock: MockEndpointServer) -> None:
    backup = _client(mock)
    primary_settings = EndpointSettings(
        url=mock.score_url, model="2d", key=KEY, max_attempts=2, backoff_initial_s=0.01,
        headers={"X-Mock-Fault": "always=503", "X-Mock-Fault-Key": "primary-down"},
    )  # fmt: skip
    with EndpointClient(f"primary-{next(_names)}", primary_settings, fallback=backup) as primary:
        assert len(list(primary.predict_2d(_requests(2)))) == 2


def test_requests_in_flight_respect_the_limit() -> None:
    # its own server: requests other tests abandoned on timeout may still be sleeping in the shared one
    with MockEndpointServer(key=KEY, faults=FaultPlan(latency_ms=150)) as server:
        with _client(server, max_images_per_request=1, max_in_flight=3) as client:
            assert len(list(client.predict_2d(_requests(9)))) == 9
        assert server.stats()["in_flight_max"] == 3
