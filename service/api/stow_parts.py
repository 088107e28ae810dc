"""One STOW-RS part, once its bytes are in a temp file: read, check, spool, hand to the intake.

Failure reasons are :class:`FailureReason` (FailureReason (0008,1197), PS3.18 Table I.2-2), each
with its meaning; 0xA901 for an instance of another study is the code Microsoft's DICOM service uses
for the same case. docs/conformance.md renders the table from them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import cast

import structlog

from dicom_io.errors import DicomIOError, InvalidInstanceError, NotDicomError
from dicom_io.reading import read_instance
from service.completion import facts_from_header
from service.intake import Intake
from service.metrics import ReceiveCounters
from service.spool import SpoolError, free_bytes, store_instance
from workers.jobs import Route
from workers.storage import DataDir

__all__ = [
    "FailureReason",
    "PartOutcome",
    "PartSink",
    "cut_off",
    "ingest_part",
    "refused_media_type",
]

log = structlog.get_logger(__name__)

_COPY_CHUNK = 1024 * 1024


class FailureReason(IntEnum):
    PROCESSING_FAILURE = 0x0110
    OUT_OF_RESOURCES = 0xA700
    INVALID_INSTANCE = 0xA900
    STUDY_MISMATCH = 0xA901
    CANNOT_UNDERSTAND = 0xC000

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    FailureReason.PROCESSING_FAILURE: "stored, but the intake could not take it (job store down): resend",
    FailureReason.OUT_OF_RESOURCES: "the spool could not store it (disk full, I/O error, below the reserve)",
    FailureReason.INVALID_INSTANCE: (
        "DICOM, but unusable: missing or malformed UIDs, an impossible pixel module, pixel data cut short"
    ),
    FailureReason.STUDY_MISMATCH: "`/studies/{study}`: the instance belongs to another study",
    FailureReason.CANNOT_UNDERSTAND: "not DICOM, a part of another media type, or a part cut off",
}


@dataclass(frozen=True, slots=True)
class PartOutcome:
    index: int  # 0-based position in the request
    size: int
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    failure: FailureReason | None = None
    reason: str = ""  # for the log; never echoes header values other than UIDs
    media_type_refused: bool = False

    @property
    def stored(self) -> bool:
        return self.failure is None


@dataclass(frozen=True, slots=True)
class PartSink:
    """Where a request's parts go."""

    data: DataDir
    intake: Intake
    counters: ReceiveCounters
    request_id: str  # the "association" the intake groups the request's instances by
    expected_study: str | None = None
    reserve_bytes: int = 0


def ingest_part(sink: PartSink, index: int, path: Path, size: int) -> PartOutcome:
    """Blocking; runs in a worker thread. The temp file at ``path`` is the caller's to remove."""
    try:
        instance = read_instance(path)
    except NotDicomError as exc:
        return _failed(index, size, FailureReason.CANNOT_UNDERSTAND, exc.reason)
    except InvalidInstanceError as exc:
        uid = exc.sop_instance_uid or ""
        return _failed(index, size, FailureReason.INVALID_INSTANCE, exc.reason, sop_instance_uid=uid)
    except DicomIOError as exc:
        return _failed(index, size, FailureReason.CANNOT_UNDERSTAND, exc.reason)
    except Exception as exc:  # adversarial bytes may break the parser in ways it does not name
        return _failed(index, size, FailureReason.CANNOT_UNDERSTAND, f"unreadable ({type(exc).__name__})")
    ok = PartOutcome(
        index,
        size,
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_instance_uid,
        study_instance_uid=instance.study_instance_uid,
        series_instance_uid=instance.series_instance_uid,
    )
    if sink.expected_study is not None and instance.study_instance_uid != sink.expected_study:
        return replace(
            ok, failure=FailureReason.STUDY_MISMATCH, reason="the instance belongs to another study"
        )
    try:
        if sink.reserve_bytes and free_bytes(sink.data) < sink.reserve_bytes + size:
            return replace(ok, failure=FailureReason.OUT_OF_RESOURCES, reason="the spool is at its reserve")
        # store_instance iterates its chunks once: the file streams through in 1 MiB pieces
        chunks = cast("list[bytes]", _file_chunks(path))
        stored = store_instance(
            sink.data,
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid,
            chunks,
        )
    except (SpoolError, OSError) as exc:
        return replace(ok, failure=FailureReason.OUT_OF_RESOURCES, reason=str(exc))
    sink.counters.received(Route.STOW, None, stored.size)
    facts = facts_from_header(instance.header, route=Route.STOW, calling_ae=None, association=sink.request_id)
    try:
        sink.intake.received(facts)
    except Exception as exc:  # the file is safe in the spool; a resend completes the hand-over
        log.error("stow.intake_failed", sop_instance_uid=instance.sop_instance_uid, error=str(exc)[:300])
        return replace(ok, failure=FailureReason.PROCESSING_FAILURE, reason="the intake could not take it")
    log.debug(
        "stow.stored",
        study_instance_uid=instance.study_instance_uid,
        series_instance_uid=instance.series_instance_uid,
        sop_instance_uid=instance.sop_instance_uid,
        bytes=stored.size,
        repeated=stored.repeated,
    )
    return ok


def refused_media_type(index: int, size: int, media_type: str) -> PartOutcome:
    reason = f"part media type {media_type[:60]!r} is not application/dicom"
    return PartOutcome(
        index, size, failure=FailureReason.CANNOT_UNDERSTAND, reason=reason, media_type_refused=True
    )


def cut_off(index: int, size: int) -> PartOutcome:
    reason = "the body ended inside the part, before its closing boundary"
    return PartOutcome(index, size, failure=FailureReason.CANNOT_UNDERSTAND, reason=reason)


def _failed(
    index: int, size: int, failure: FailureReason, reason: str, *, sop_instance_uid: str = ""
) -> PartOutcome:
    return PartOutcome(index, size, sop_instance_uid=sop_instance_uid, failure=failure, reason=reason)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(_COPY_CHUNK):
            yield chunk
