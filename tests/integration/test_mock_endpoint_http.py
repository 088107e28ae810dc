"""The mock endpoint over real HTTP (uvicorn on loopback), as the gateway's client will meet it.

Every fault mode is checked from the client's side of the wire: status codes, headers, bodies that
do not parse, and a connection that drops mid-response.
"""

from __future__ import annotations

import gzip
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from service.mock import NOTICE, FaultPlan, MockEndpointServer
from service.mock.segment2d import segment_png
from tests.unit.service import mock_samples
from workers.endpoint.contract import (
    Row,
    decode_2d_response,
    decode_3d_response,
    encode_request,
)

pytestmark = pytest.mark.integration

KEY = "integration-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG = mock_samples.png_bytes(mock_samples.grey_image())
SMALL_PNG = mock_samples.png_bytes(mock_samples.grey_image(64))


@pytest.fixture(scope="module")
def mock() -> Iterator[MockEndpointServer]:
    with MockEndpointServer(key=KEY) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, timeout=30) as client:
        yield client


def _small_body(rows: int = 1) -> bytes:
    return encode_request([Row(SMALL_PNG, ("liver",))] * rows)


def test_2d_round_trip(mock: MockEndpointServer, client: httpx.Client) -> None:
    rows = [Row(PNG, ("liver", "liver tumor")), Row(PNG, ("left lung",))]
    response = client.post(mock.score_url, content=encode_request(rows))
    assert response.status_code == 200
    predictions = decode_2d_response(response.json(), [2, 1])
    assert predictions[0].categories == ("liver", "tumor")
    assert predictions[1].categories == ("lung",)
    assert np.array_equal(predictions[0].masks, segment_png(PNG, 2))
    assert np.array_equal(predictions[1].masks, segment_png(PNG, 1))


def test_3d_round_trip_keeps_the_grid(mock: MockEndpointServer, client: httpx.Client) -> None:
    source = mock_samples.nifti_image()
    response = client.post(mock.score_url, content=encode_request([Row(mock_samples.nifti_gz(), ("a", "b"))]))
    assert response.status_code == 200
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(decode_3d_response(response.json())))
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
    assert int(mask.header["sform_code"]) == 2
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1, 2}


def test_3d_drop_affine(mock: MockEndpointServer, client: httpx.Client) -> None:
    response = client.post(
        mock.score_url,
        content=encode_request([Row(mock_samples.nifti_gz(), ("a",))]),
        headers={"X-Mock-Fault": "drop-affine"},
    )
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(decode_3d_response(response.json())))
    assert int(mask.header["qform_code"]) == 0
    assert int(mask.header["sform_code"]) == 0
    assert mask.shape == mock_samples.volume().shape


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_score_needs_the_key(mock: MockEndpointServer, headers: dict[str, str]) -> None:
    response = httpx.post(mock.score_url, content=_small_body(), headers=headers)
    assert response.status_code == 401
    assert "error" in response.json()


def test_root_needs_no_key(mock: MockEndpointServer) -> None:
    assert httpx.get(mock.url).text.strip() == NOTICE


def test_fail_first_then_recover_per_key(mock: MockEndpointServer, client: httpx.Client) -> None:
    spec = {"X-Mock-Fault": "fail-first=3;status=503;retry-after=1"}
    first = {**spec, "X-Mock-Fault-Key": "test-fail-first-a"}
    statuses = [client.post(mock.score_url, content=_small_body(), headers=first) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 503, 503, 200]
    assert statuses[0].headers["Retry-After"] == "1"
    assert "Retry-After" not in statuses[3].headers
    other = {**spec, "X-Mock-Fault-Key": "test-fail-first-b"}
    assert client.post(mock.score_url, content=_small_body(), headers=other).status_code == 503


def test_424_carries_the_model_error_headers(mock: MockEndpointServer, client: httpx.Client) -> None:
    response = client.post(mock.score_url, content=_small_body(), headers={"X-Mock-Fault": "always=424"})
    assert response.status_code == 424
    assert response.headers["ms-azureml-model-error-statuscode"] == "500"
    assert response.headers["ms-azureml-model-error-reason"] == "model_error"


@pytest.mark.parametrize("status", [401, 404, 408, 413, 429, 500, 502, 504])
def test_always_status(mock: MockEndpointServer, client: httpx.Client, status: int) -> None:
    response = client.post(
        mock.score_url, content=_small_body(), headers={"X-Mock-Fault": f"always={status}"}
    )
    assert response.status_code == status
    assert response.json()["error"].startswith(f"mock fault: {status}")


def test_malformed_json(mock: MockEndpointServer, client: httpx.Client) -> None:
    response = client.post(mock.score_url, content=_small_body(), headers={"X-Mock-Fault": "malformed-json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_drop_connection_is_a_transport_error(mock: MockEndpointServer, client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(mock.score_url, content=_small_body(), headers={"X-Mock-Fault": "drop-connection"})
    assert client.post(mock.score_url, content=_small_body()).status_code == 200  # the client recovers


def test_max_rows(mock: MockEndpointServer, client: httpx.Client) -> None:
    limit = {"X-Mock-Fault": "max-rows=2"}
    too_many = client.post(mock.score_url, content=_small_body(3), headers=limit)
    assert too_many.status_code == 413
    assert "limit of 2" in too_many.json()["error"]
    assert client.post(mock.score_url, content=_small_body(2), headers=limit).status_code == 200


def test_process_plan_and_latency_overlap_in_flight() -> None:
    with MockEndpointServer(faults=FaultPlan.parse("latency=300;fail-first=1;status=503")) as mock:
        body = _small_body()
        assert httpx.post(mock.score_url, content=body).status_code == 503
        mock_stats_before = httpx.delete(mock.stats_url).json()
        assert mock_stats_before["requests"] == 0
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(lambda _: httpx.post(mock.score_url, content=body).status_code, range(4))
            )
        elapsed = time.perf_counter() - started
        assert statuses == [200] * 4
        assert 0.3 <= elapsed < 1.1  # slept side by side, not one after another
        stats = httpx.get(mock.stats_url).json()
        assert stats["requests"] == 4
        assert stats["in_flight_max"] >= 2
        assert stats["handler_seconds"] >= 4 * 0.3


def _mip_gateway() -> list[str]:
    script = Path(sys.executable).with_name("mip-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def test_cli_port_zero_prints_url_and_stops_on_sigterm() -> None:
    env = {**os.environ, "MIPGW_MOCK_KEY": "from-env"}
    command = [*_mip_gateway(), "mock-endpoint", "--port", "0", "--latency-ms", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "no URL printed"
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            prefix = "mock endpoint listening on "
            assert line.startswith(prefix)
            url = line.removeprefix(prefix)
            assert url.startswith("http://127.0.0.1:")
            assert not url.endswith(":0")
            assert httpx.get(url).text.strip() == NOTICE
            assert httpx.post(f"{url}/score", content=_small_body()).status_code == 401
            scored = httpx.post(
                f"{url}/score", content=_small_body(), headers={"Authorization": "Bearer from-env"}
            )
            assert scored.status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        assert proc.returncode == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # exactly one line on stdout


def test_cli_rejects_a_bad_fault_spec() -> None:
    result = subprocess.run(
        [*_mip_gateway(), "mock-endpoint", "--port", "0", "--fault", "explode"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown fault item 'explode'" in result.stderr
    assert result.stdout == ""
