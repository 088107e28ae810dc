"""STOW-RS sender on httpx.MockTransport: body framing, credentials, and every answer's meaning."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pydicom import dcmread
from pydicom.uid import SegmentationStorage

from config.settings import DicomWebNode
from tests.unit.workers.delivery.seg_files import minimal_seg_file
from workers.delivery import StowSender, sender_for
from workers.delivery.base import public_url
from workers.delivery.stow import StowResult, multipart_body, parse_stow_response
from workers.errors import DeliveryError

TOKEN = "TOKEN-abc-123"
PASSWORD = "PASSWORD-xyz-789"


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return minimal_seg_file(tmp_path_factory.mktemp("seg"))


def _uid(path: Path) -> str:
    return str(dcmread(path).SOPInstanceUID)


def _referenced(uid: str, warning: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [SegmentationStorage]},
        "00081155": {"vr": "UI", "Value": [uid]},
    }
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return {"00081199": {"vr": "SQ", "Value": [item]}}


def _failed(uid: str, reason: int) -> dict[str, Any]:
    item = {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [reason]}}
    return {"00081198": {"vr": "SQ", "Value": [item]}}


class Server:
    """Records requests; answers with ``reply(request, sop_instance_uid)``."""

    def __init__(self, reply: Callable[[httpx.Request, str], httpx.Response]) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append(request)
        self.bodies.append(body)
        uid = re.search(rb"\x08\x00\x18\x00UI..([0-9.]+)", body)
        return self.reply(request, uid.group(1).decode() if uid else "")


def _sender(server: Server, **overrides: Any) -> StowSender:
    values: dict[str, Any] = {"url": "https://pacs.example.org/dicom-web/"}
    return StowSender("web", DicomWebNode(**(values | overrides)), transport=httpx.MockTransport(server))


def _ok(request: httpx.Request, uid: str) -> httpx.Response:
    return httpx.Response(200, json=_referenced(uid))


def test_the_file_is_the_one_part_of_a_multipart_related_body(seg_file: Path) -> None:
    server = Server(_ok)
    receipt = _sender(server).send(seg_file)
    assert (receipt.destination, receipt.sop_instance_uid) == ("web", _uid(seg_file))
    assert receipt.detail.endswith("answered 200 OK: stored (ReferencedSOPSequence)")
    (request,), (body,) = server.requests, server.bodies
    assert request.method == "POST"
    assert str(request.url) == "https://pacs.example.org/dicom-web/studies"
    content_type = request.headers["Content-Type"]
    boundary = re.fullmatch(
        r'multipart/related; type="application/dicom"; boundary=([0-9a-f]{32})', content_type
    )
    assert boundary is not None
    head = f"--{boundary.group(1)}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{boundary.group(1)}--\r\n".encode()
    assert body == head + seg_file.read_bytes() + tail
    assert request.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in request.headers
    assert request.headers["Accept"] == "application/dicom+json"
    assert "Authorization" not in request.headers


def test_the_body_streams_in_chunks(seg_file: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    big.write_bytes(seg_file.read_bytes() + bytes(3 << 20))
    length, chunks = multipart_body(big, "b" * 32)
    parts = list(chunks)
    assert len(parts) > 3  # head, several slices of the file, tail
    assert max(len(part) for part in parts) <= 1 << 20
    assert sum(len(part) for part in parts) == length


def test_a_bearer_token_is_sent_and_its_file_re_read_at_every_send(seg_file: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    server = Server(_ok)
    sender = _sender(server, token_file=token_file)
    sender.send(seg_file)
    token_file.write_text("rotated-token\n")
    sender.send(seg_file)
    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer first-token",
        "Bearer rotated-token",
    ]
    _sender(server, token=TOKEN).send(seg_file)
    assert server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_basic_auth(seg_file: Path) -> None:
    server = Server(_ok)
    _sender(server, username="alice", password=PASSWORD).send(seg_file)
    expected = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert server.requests[0].headers["Authorization"] == f"Basic {expected}"


def _answer(status: int, document: Callable[[str], Any] | None = None, **kwargs: Any) -> Server:
    def reply(request: httpx.Request, uid: str) -> httpx.Response:
        if document is None:
            return httpx.Response(status, **kwargs)
        return httpx.Response(status, json=document(uid), headers={"Content-Type": "application/dicom+json"})

    return Server(reply)


@pytest.mark.parametrize(
    ("server", "detail"),
    [
        (_answer(200, _referenced), "answered 200 OK: stored (ReferencedSOPSequence)"),
        (_answer(200, lambda uid: [_referenced(uid)]), "answered 200 OK: stored (ReferencedSOPSequence)"),
        (_answer(200), "answered 200 OK (no entry for the instance in the answer)"),
        (
            _answer(202, lambda uid: _referenced(uid, warning=0xB000)),
            "answered 202 Accepted: stored with a warning: coercion of data elements (0xB000)",
        ),
        (
            _answer(409, lambda uid: _failed(uid, 0x0111)),
            "answered 409 Conflict: duplicate SOP instance (already stored) (0x0111)",
        ),
    ],
)
def test_answers_that_mean_delivered(seg_file: Path, server: Server, detail: str) -> None:
    receipt = _sender(server).send(seg_file)
    assert receipt.detail == f"STOW to https://pacs.example.org/dicom-web/studies {detail}"
    assert receipt.sop_instance_uid == _uid(seg_file)


@pytest.mark.parametrize(
    ("server", "reason", "retryable"),
    [
        (
            _answer(202, lambda uid: _failed(uid, 0xA700)),
            "answered 202 Accepted: refused: out of resources (0xA700)",
            True,
        ),
        (_answer(409, lambda uid: _failed(uid, 0xA900)), "data set does not match SOP class (0xA900)", False),
        (_answer(409, lambda uid: _failed(uid, 0xC000)), "cannot understand (0xC000)", False),
        (_answer(409, lambda uid: _failed(uid, 0xC122)), "transfer syntax not supported (0xC122)", False),
        (_answer(409, lambda uid: _failed(uid, 0x0110)), "processing failure (0x0110)", True),
        (_answer(409, lambda uid: _failed(uid, 0x0122)), "SOP class not supported (0x0122)", False),
        (
            _answer(200, lambda uid: _failed(uid, 0xA701)),
            "answered 200 OK: refused: out of resources (0xA701)",
            True,
        ),
        (_answer(409), "answered 409 Conflict without naming the instance", False),
        (_answer(401), "STOW server rejected the credentials (401)", False),
        (_answer(403), "STOW server rejected the credentials (403)", False),
        (_answer(404), "answered 404 Not Found", False),
        (_answer(400), "answered 400 Bad Request", False),
        (_answer(413), "answered 413 Request Entity Too Large", False),
        (_answer(415), "answered 415 Unsupported Media Type", False),
        (_answer(408), "answered 408 Request Timeout", True),
        (_answer(429), "answered 429 Too Many Requests", True),
        (_answer(500), "answered 500 Internal Server Error", True),
        (_answer(503), "answered 503 Service Unavailable", True),
        (_answer(507), "answered 507 Insufficient Storage", True),
    ],
)
def test_answers_that_mean_not_delivered(
    seg_file: Path, server: Server, reason: str, retryable: bool
) -> None:
    with pytest.raises(DeliveryError) as caught:
        _sender(server).send(seg_file)
    assert reason in caught.value.reason
    assert caught.value.retryable is retryable
    assert caught.value.destination == "web"


def test_transport_errors_are_retryable(seg_file: Path) -> None:
    def refuse(request: httpx.Request, uid: str) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(DeliveryError, match="ConnectError: \\[Errno 111\\] Connection refused") as caught:
        _sender(Server(refuse)).send(seg_file)
    assert caught.value.retryable is True


def test_credentials_never_reach_errors_or_logs(seg_file: Path) -> None:
    url = f"https://alice:{PASSWORD}@pacs.example.org/dicom-web?access_token={TOKEN}"
    with structlog.testing.capture_logs() as logs:
        for overrides in ({"token": TOKEN}, {"username": "alice", "password": PASSWORD}):
            with pytest.raises(DeliveryError) as caught:
                _sender(_answer(401), url=url, **overrides).send(seg_file, job_id="job-3")
            assert TOKEN not in str(caught.value)
            assert PASSWORD not in str(caught.value)
            assert "rejected the credentials (401)" in str(caught.value)
    assert logs
    assert all(entry["job_id"] == "job-3" for entry in logs)
    assert TOKEN not in repr(logs)
    assert PASSWORD not in repr(logs)


def test_an_unreadable_token_file_is_final(seg_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="cannot read the token file") as caught:
        _sender(Server(_ok), token_file=tmp_path / "missing").send(seg_file)
    assert caught.value.retryable is False


def test_parse_stow_response() -> None:
    uid = "1.2.3"
    assert parse_stow_response(json.dumps(_referenced(uid)).encode(), uid) == StowResult(stored=True)
    assert parse_stow_response(json.dumps(_referenced(uid, 0xB006)).encode(), uid) == StowResult(
        stored=True, warning_code=0xB006
    )
    both = _referenced("9.9") | _failed(uid, 0xA900)
    assert parse_stow_response(json.dumps(both).encode(), uid) == StowResult(failure_code=0xA900)
    assert parse_stow_response(json.dumps(both).encode(), "9.9") == StowResult(stored=True)
    no_reason = {"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}}
    assert parse_stow_response(json.dumps(no_reason).encode(), uid) == StowResult(failure_code=0x0110)
    for garbage in (b"", b"<xml/>", b"[1, 2]", b'{"00081199": {"vr": "SQ"}}', b'{"00081199": 3}'):
        assert parse_stow_response(garbage, uid) is None


def test_public_url_drops_credentials_query_and_fragment() -> None:
    assert public_url("https://u:p@h.example:8443/a/b?token=x#f") == "https://h.example:8443/a/b"
    assert public_url("http://[::1]:8042/dicom-web") == "http://[::1]:8042/dicom-web"


def test_sender_for_picks_stow_for_a_dicomweb_node() -> None:
    node = DicomWebNode.model_validate({"url": "http://pacs:8042/dicom-web"})
    assert isinstance(sender_for("web", node, calling_ae="MIPGW"), StowSender)
