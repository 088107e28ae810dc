"""STOW-RS (PS3.18 10.5): POST one Part 10 file to ``{url}/studies`` and read the DICOM JSON answer.

The file is streamed as the one part of a ``multipart/related; type="application/dicom"`` body with
a Content-Length (some servers refuse chunked uploads); no second copy of it is built. Credentials
(a bearer token, re-read from its file on every attempt, or basic auth) go only into the request
headers, never into logs or errors.

Answers (:func:`parse_stow_response` reads the body, :class:`StowSender` decides):

==================  ==============================================================================
200, 202, 409       the instance's entry decides: ReferencedSOPSequence → delivered (WarningReason
                    noted); FailedSOPSequence → its FailureReason, retryable or not by
                    :class:`FailureReason`; a duplicate (0x0111) is already stored → delivered.
                    200 without an entry → delivered; 202/409 without one → not retryable.
401, 403            the credentials were refused: not retryable
400, 404, 406, 413, 415, other 4xx   not retryable
408, 429, 5xx, transport errors       retryable
==================  ==============================================================================
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import structlog
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from config.settings import DicomWebNode
from workers.delivery.base import DeliveryReceipt, public_url
from workers.errors import DeliveryError

__all__ = ["FailureReason", "StowResult", "StowSender", "multipart_body", "parse_stow_response"]

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20
_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_REFERENCED_SOP_SEQUENCE, _FAILED_SOP_SEQUENCE = "00081199", "00081198"
_REFERENCED_SOP_INSTANCE_UID, _FAILURE_REASON, _WARNING_REASON = "00081155", "00081197", "00081196"


class FailureReason(Enum):
    """A STOW FailureReason / WarningReason (PS3.18 Table I.2-1, PS3.4 B.2.3)."""

    DUPLICATE = "duplicate SOP instance (already stored)"
    PROCESSING_FAILURE = "processing failure"
    SOP_CLASS_NOT_SUPPORTED = "SOP class not supported"
    NOT_AUTHORISED = "not authorised"
    OUT_OF_RESOURCES = "refused: out of resources"
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = "data set does not match SOP class"
    TRANSFER_SYNTAX_NOT_SUPPORTED = "transfer syntax not supported"
    CANNOT_UNDERSTAND = "cannot understand"
    COERCION_OF_DATA_ELEMENTS = "coercion of data elements"
    ELEMENTS_DISCARDED = "elements discarded"
    DATA_SET_MISMATCH_WARNING = "data set does not match SOP class (stored anyway)"
    OTHER = "failure"

    @classmethod
    def of(cls, code: int) -> FailureReason:
        if code in _EXACT:
            return _EXACT[code]
        for low, high, reason in _RANGES:
            if low <= code <= high:
                return reason
        return cls.OTHER

    @property
    def retryable(self) -> bool:
        return self in (FailureReason.PROCESSING_FAILURE, FailureReason.OUT_OF_RESOURCES, FailureReason.OTHER)


_EXACT = {
    0x0111: FailureReason.DUPLICATE,
    0x0110: FailureReason.PROCESSING_FAILURE,
    0x0122: FailureReason.SOP_CLASS_NOT_SUPPORTED,
    0x0124: FailureReason.NOT_AUTHORISED,
    0xC122: FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
    0xB000: FailureReason.COERCION_OF_DATA_ELEMENTS,
    0xB006: FailureReason.ELEMENTS_DISCARDED,
    0xB007: FailureReason.DATA_SET_MISMATCH_WARNING,
}
_RANGES = (
    (0xA700, 0xA7FF, FailureReason.OUT_OF_RESOURCES),
    (0xA900, 0xA9FF, FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
    (0xC000, 0xCFFF, FailureReason.CANNOT_UNDERSTAND),
)


@dataclass(frozen=True, slots=True)
class StowResult:
    """What a STOW answer says about one SOP instance (codes are FailureReason / WarningReason)."""

    stored: bool = False
    failure_code: int | None = None
    warning_code: int | None = None


def parse_stow_response(body: bytes, sop_instance_uid: str) -> StowResult | None:
    """The entry for ``sop_instance_uid`` in a DICOM JSON STOW answer; None when it has none."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    datasets = document if isinstance(document, list) else [document]
    for dataset in datasets:
        if not isinstance(dataset, Mapping):
            continue
        for item in _items(dataset, _FAILED_SOP_SEQUENCE):
            if _value(item, _REFERENCED_SOP_INSTANCE_UID) == sop_instance_uid:
                code = _value(item, _FAILURE_REASON)
                return StowResult(failure_code=code if isinstance(code, int) else 0x0110)
        for item in _items(dataset, _REFERENCED_SOP_SEQUENCE):
            if _value(item, _REFERENCED_SOP_INSTANCE_UID) == sop_instance_uid:
                warning = _value(item, _WARNING_REASON)
                return StowResult(stored=True, warning_code=warning if isinstance(warning, int) else None)
    return None


def _items(dataset: Mapping[str, Any], tag: str) -> list[Mapping[str, Any]]:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, Mapping) else None
    return [item for item in values if isinstance(item, Mapping)] if isinstance(values, list) else []


def _value(dataset: Mapping[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, Mapping) else None
    return values[0] if isinstance(values, list) and values else None


def multipart_body(path: Path, boundary: str) -> tuple[int, Iterator[bytes]]:
    """Content length and chunks of a one-part ``multipart/related`` body holding the file's bytes."""
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                yield chunk
        yield tail

    return len(head) + size + len(tail), chunks()


class StowSender:
    def __init__(
        self, name: str, node: DicomWebNode, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.name = name
        self.node = node
        self.url = str(node.url).rstrip("/") + "/studies"
        self._public = public_url(self.url)
        basic = None
        if node.username is not None and node.token is None and node.token_file is None:
            password = node.password.get_secret_value() if node.password is not None else ""
            basic = httpx.BasicAuth(node.username, password)
        self._client = httpx.Client(transport=transport, timeout=node.timeout_s, auth=basic)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> StowSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, path: Path, *, job_id: str | None = None) -> DeliveryReceipt:
        try:
            sop_instance_uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        except (OSError, InvalidDicomError, AttributeError) as exc:
            raise self._error(f"cannot read the file meta of {path.name}: {exc}", False) from exc
        bound = log.bind(destination=self.name, job_id=job_id, sop_instance_uid=sop_instance_uid)
        try:
            detail = self._post(path, sop_instance_uid)
        except DeliveryError as exc:
            bound.warning("stow.failed", reason=exc.reason, retryable=exc.retryable, url=self._public)
            raise
        bound.info("stow.sent", detail=detail, url=self._public)
        return DeliveryReceipt(self.name, sop_instance_uid, detail)

    def probe(self) -> str:
        """QIDO-RS for one study with the same URL root and credentials a STOW would use: reachable and
        accepted, or DeliveryError naming what is wrong (refused credentials, no DICOMweb there...)."""
        url = self.url + "?limit=1"
        started = time.monotonic()
        try:
            response = self._client.get(
                url, headers={"Accept": "application/dicom+json", **self._auth_headers()}
            )
        except httpx.TransportError as exc:
            raise self._error(f"QIDO-RS at {self._public} failed: {type(exc).__name__}: {exc}", True) from exc
        code = response.status_code
        if code in (200, 204):
            return f"QIDO-RS answered {code} in {1000 * (time.monotonic() - started):.0f} ms"
        if code in (401, 403):
            raise self._error(f"{self._public} rejected the credentials ({code})", False)
        raise self._error(
            f"QIDO-RS at {self._public} answered {code} {response.reason_phrase}".rstrip(), code >= 500
        )

    def _post(self, path: Path, sop_instance_uid: str) -> str:
        boundary = uuid.uuid4().hex  # 128 random bits: not expected inside the file
        try:
            length, content = multipart_body(path, boundary)
        except OSError as exc:
            raise self._error(f"cannot read {path.name}: {exc}", False) from exc
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
        }
        headers.update(self._auth_headers())
        try:
            response = self._client.post(self.url, content=content, headers=headers)
        except httpx.TransportError as exc:  # connection refused, timeouts, resets
            raise self._error(f"STOW to {self._public} failed: {type(exc).__name__}: {exc}", True) from exc
        except OSError as exc:  # the file went away while streaming
            raise self._error(f"cannot read {path.name}: {exc}", False) from exc
        return self._judge(response, sop_instance_uid)

    def _auth_headers(self) -> dict[str, str]:
        """The bearer token, its file re-read on every attempt (a rotated token is picked up)."""
        node = self.node
        token = node.token.get_secret_value() if node.token is not None else None
        if node.token_file is not None:
            try:
                token = node.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                reason = f"cannot read the token file {node.token_file}: {exc.strerror}"
                raise self._error(reason, False) from exc
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _judge(self, response: httpx.Response, sop_instance_uid: str) -> str:
        code = response.status_code
        where = f"STOW to {self._public} answered {code} {response.reason_phrase}".rstrip()
        if code in (200, 202, 409):
            result = parse_stow_response(response.content, sop_instance_uid)
            if result is None:
                if code == 200:
                    return f"{where} (no entry for the instance in the answer)"
                raise self._error(f"{where} without naming the instance", False)
            if result.failure_code is not None:
                reason = FailureReason.of(result.failure_code)
                text = f"{reason.value} (0x{result.failure_code:04X})"
                if reason is FailureReason.DUPLICATE:
                    return f"{where}: {text}"
                raise self._error(f"{where}: {text}", reason.retryable)
            if result.warning_code is not None:
                warning = FailureReason.of(result.warning_code)
                return f"{where}: stored with a warning: {warning.value} (0x{result.warning_code:04X})"
            return f"{where}: stored (ReferencedSOPSequence)"
        if code in (401, 403):
            raise self._error(f"STOW server rejected the credentials ({code})", False)
        if code in _RETRYABLE_HTTP or code >= 500:
            raise self._error(where, True)
        raise self._error(where, False)

    def _error(self, reason: str, retryable: bool) -> DeliveryError:
        return DeliveryError(reason, destination=self.name, retryable=retryable)
