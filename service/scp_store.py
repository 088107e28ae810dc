"""One C-STORE data set into the spool as it arrives: validated, written durably as Part 10, or refused.

The file is :func:`part10_header` followed by the data set bytes exactly as received (no decoding,
no transcoding). As soon as the fragments received hold the header, its UIDs are checked (grammar,
agreement with the request) — before anything names a path — and the fragments start streaming
into the spool (:class:`service.scp_spool.SpoolWriter`); a refused instance writes nothing and
its remaining fragments are dropped. :meth:`IncomingInstance.finish` fsyncs and renames; only then
may success be answered. This is where the listener's errors become named outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_io.uids import is_valid_uid
from service.scp_dimse import ReceivedInstance
from service.scp_header import HeaderError, HeaderIncompleteError, InstanceHeader, read_header
from service.scp_spool import SpoolWriter
from service.scp_status import InstanceRefusedError, StoreOutcome
from service.spool import SpoolError, StoredInstance
from workers.part10 import part10_header
from workers.storage import DataDir

__all__ = ["IncomingInstance", "StoredReceived"]

MAX_HEADER_BYTES = 16 * 1024 * 1024  # received without a complete header by then: refused


@dataclass(frozen=True, slots=True)
class StoredReceived:
    stored: StoredInstance
    header: InstanceHeader


class IncomingInstance:
    """The spool side of one :class:`ReceivedInstance` (kept in its ``state``)."""

    def __init__(self, data: DataDir, instance: ReceivedInstance, *, calling_ae: str) -> None:
        self.data = data
        self.instance = instance
        self.calling_ae = calling_ae
        self.header: InstanceHeader | None = None
        self.refusal: InstanceRefusedError | None = None
        self._writer: SpoolWriter | None = None

    def take(self, *, last: bool = False) -> None:
        """Write what has arrived; before the header is complete, keep it pending."""
        pending = self.instance.pending
        try:
            if self.refusal is None and self._writer is None:
                self._open(last=last)
            if self._writer is not None:
                for chunk in pending:
                    self._writer.write(chunk)
                pending.clear()
        except InstanceRefusedError as exc:
            self.refusal = exc
        except SpoolError as exc:
            self.refusal = InstanceRefusedError(StoreOutcome.OUT_OF_RESOURCES, str(exc))
        if self.refusal is not None:
            pending.clear()
            self.abandon()

    def finish(self) -> StoredReceived:
        """After the last fragment: fsync and rename; raises InstanceRefusedError."""
        self.take(last=True)
        if self.refusal is not None:
            raise self.refusal
        writer, self._writer = self._writer, None
        if writer is None or self.header is None:
            raise InstanceRefusedError(StoreOutcome.UNREADABLE_DATA_SET, "no data set arrived")
        try:
            stored = writer.commit()
        except SpoolError as exc:
            raise InstanceRefusedError(StoreOutcome.OUT_OF_RESOURCES, str(exc)) from exc
        return StoredReceived(stored, self.header)

    def abandon(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abandon()

    def _open(self, *, last: bool) -> None:
        instance = self.instance
        if instance.affected_sop_class_uid != instance.abstract_syntax:
            raise InstanceRefusedError(
                StoreOutcome.SOP_CLASS_NOT_SUPPORTED,
                f"request SOP class {instance.affected_sop_class_uid!r} on a "
                f"{instance.abstract_syntax} context",
            )
        try:
            header = read_header(instance.pending, instance.transfer_syntax, complete=last)
        except HeaderIncompleteError as exc:
            if not last and instance.size < MAX_HEADER_BYTES:
                return  # wait for more fragments
            raise InstanceRefusedError(StoreOutcome.UNREADABLE_DATA_SET, str(exc)) from exc
        except HeaderError as exc:
            raise InstanceRefusedError(StoreOutcome.UNREADABLE_DATA_SET, str(exc)) from exc
        sop_class = _checked_uid("SOPClassUID", header.sop_class_uid)
        sop_instance = _checked_uid("SOPInstanceUID", header.sop_instance_uid)
        study = _checked_uid("StudyInstanceUID", header.study_instance_uid)
        series = _checked_uid("SeriesInstanceUID", header.series_instance_uid)
        if sop_class != instance.affected_sop_class_uid:
            raise InstanceRefusedError(
                StoreOutcome.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"data set SOP class {sop_class} differs from the request's",
            )
        if sop_instance != instance.affected_sop_instance_uid:
            raise InstanceRefusedError(
                StoreOutcome.SOP_INSTANCE_MISMATCH, "data set SOP Instance UID differs from the request's"
            )
        self.header = header
        self._writer = SpoolWriter(self.data, study, series, sop_instance)
        self._writer.write(part10_header(sop_class, sop_instance, instance.transfer_syntax, self.calling_ae))


def _checked_uid(keyword: str, value: str | None) -> str:
    if value is None:
        raise InstanceRefusedError(StoreOutcome.MISSING_UID, f"{keyword} is missing")
    if not is_valid_uid(value):
        raise InstanceRefusedError(StoreOutcome.INVALID_UID, f"{keyword} is not a valid UID")
    return value
