"""The mock endpoint app: routing, refusals and auth, as a scoring script would answer.

Each app runs on a real uvicorn on loopback (cheap: ~20 ms to start), with an httpx client on it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from service.mock import NOTICE, FaultPlan, MockEndpointServer
from tests.unit.service import mock_samples
from workers.endpoint.contract import (
    ContractError,
    Row,
    decode_2d_response,
    decode_3d_response,
    encode_request,
)

PNG = mock_samples.png_bytes(mock_samples.grey_image(64))
NIFTI = mock_samples.nifti_gz()


@contextmanager
def _serve(*, key: str | None = None, faults: FaultPlan | None = None) -> Iterator[httpx.Client]:
    with MockEndpointServer(key=key, faults=faults) as server, httpx.Client(base_url=server.url) as client:
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with _serve() as client:
        yield client


def _body(*rows: tuple[bytes, str]) -> bytes:
    data = [[base64.b64encode(image).decode(), text] for image, text in rows]
    return json.dumps({"input_data": {"columns": ["image", "text"], "index": [0], "data": data}}).encode()


def test_root_says_it_is_not_a_model(client: httpx.Client) -> None:
    text = client.get("/")
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.strip() == NOTICE
    document = client.get("/", headers={"Accept": "application/json"}).json()
    assert document["model"] is False
    assert document["notice"] == NOTICE


def test_2d_rows_score_with_categories(client: httpx.Client) -> None:
    response = client.post("/score", content=encode_request([Row(PNG, ("liver", "tumor")), Row(PNG, ("x",))]))
    assert response.status_code == 200
    items = response.json()
    assert [item["text_features"] for item in items] == [["liver", "tumor"], ["other"]]
    features = json.loads(items[0]["image_features"])
    assert features["shape"] == [2, 64, 64]  # the input's size: only 1024² decodes as the contract wants
    assert features["dtype"] == "uint8"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (json.dumps({"data": []}).encode(), "input_data"),
        (json.dumps({"input_data": {"columns": ["text", "image"], "data": []}}).encode(), "columns"),
        (_body((PNG, "liver"), (b"GIF89a....", "liver")), "row 1: image is neither"),
        (_body((PNG, " & ")), "row 0: text holds no prompt"),
        (_body((PNG, "liver"), (NIFTI, "liver")), "not both"),
        (_body((NIFTI, "liver"), (NIFTI, "liver")), "exactly one volume"),
        (_body((b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "liver")), "row 0: image is not a decodable PNG"),
        (_body((b"\x1f\x8b" + b"\x00" * 40, "liver")), "row 0: gzip stream is damaged"),
    ],
)
def test_bodies_that_break_the_contract_get_400(client: httpx.Client, body: bytes, message: str) -> None:
    response = client.post("/score", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_only_post_score_scores(client: httpx.Client) -> None:
    assert client.post("/", content=encode_request([Row(PNG, ("liver",))])).status_code == 405
    assert client.get("/score").status_code == 405


def test_bearer_key() -> None:
    body = encode_request([Row(PNG, ("liver",))])
    with _serve(key="s3cret") as client:
        missing = client.post("/score", content=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert set(missing.json()) == {"error"}
        assert (
            client.post("/score", content=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        assert (
            client.post("/score", content=body, headers={"Authorization": "Basic s3cret"}).status_code == 401
        )
        assert (
            client.post("/score", content=body, headers={"Authorization": "bearer s3cret"}).status_code == 200
        )
        assert client.get("/").status_code == 200  # the notice and /stats stay open


def test_header_spec_wins_over_the_process_plan() -> None:
    body = encode_request([Row(PNG, ("liver",))])
    with _serve(faults=FaultPlan(always=503)) as client:
        assert client.post("/score", content=body).status_code == 503
        assert client.post("/score", content=body, headers={"X-Mock-Fault": "none"}).status_code == 200
        bad = client.post("/score", content=body, headers={"X-Mock-Fault": "latency=soon"})
        assert bad.status_code == 400
        assert "X-Mock-Fault" in bad.json()["error"]


@pytest.mark.parametrize("fault", ["wrong-shape", "wrong-count"])
def test_output_faults_break_the_contract_decoder(client: httpx.Client, fault: str) -> None:
    response = client.post(
        "/score", content=encode_request([Row(PNG, ("liver",))] * 2), headers={"X-Mock-Fault": fault}
    )
    assert response.status_code == 200
    with pytest.raises(ContractError):
        decode_2d_response(response.json(), [1, 1])


def test_wrong_shape_halves_2d_masks(client: httpx.Client) -> None:
    response = client.post(
        "/score", content=encode_request([Row(PNG, ("liver",))]), headers={"X-Mock-Fault": "wrong-shape"}
    )
    assert json.loads(response.json()[0]["image_features"])["shape"] == [1, 32, 32]


def test_stats_count_requests_rows_and_outcomes() -> None:
    body = encode_request([Row(PNG, ("liver",))] * 3)
    with _serve() as client:
        client.post("/score", content=body)
        client.post("/score", content=body, headers={"X-Mock-Fault": "always=429"})
        stats = client.get("/stats").json()
        assert client.delete("/stats").json()["requests"] == 0
    assert stats["requests"] == 2
    assert stats["rows"] == 3
    assert stats["outcomes"] == {"200": 1, "429": 1}
    assert stats["in_flight"] == 0
    assert stats["in_flight_max"] == 1
    assert stats["handler_seconds"] > 0


@pytest.mark.parametrize("volume", [NIFTI, mock_samples.nifti_image().to_bytes()], ids=["nii.gz", "nii"])
def test_3d_row_scores_to_a_gzipped_label_map(client: httpx.Client, volume: bytes) -> None:
    response = client.post("/score", content=encode_request([Row(volume, ("liver", "tumor"))]))
    assert response.status_code == 200
    nifti = decode_3d_response(response.json())
    assert nifti[:2] == b"\x1f\x8b"
