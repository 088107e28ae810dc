"""C-STORE SCU: one association per file, every outcome named (:mod:`workers.delivery.dimse_status`).

The file is not decoded: its file meta names the SOP class, instance and transfer syntax, and when
the peer accepts that transfer syntax pynetdicom streams the data set from the file as it is. Only
when the peer accepts nothing but another uncompressed syntax is the file read with pydicom and
re-encoded by pynetdicom.

The sockets (:mod:`workers.delivery.dimse_transport`) name connection failures and set TCP_NODELAY.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import structlog
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from config.settings import DicomNode
from workers.delivery.base import DeliveryReceipt
from workers.delivery.dimse_status import (
    ConnectionOutcome,
    ContextResult,
    Rejection,
    StatusCategory,
    StoreStatus,
)
from workers.delivery.dimse_transport import SenderAE, SenderSocket, TLSSocket, streaming_from_file
from workers.dicom_identity import identify
from workers.dimse_reactor import pause_safely
from workers.errors import DeliveryError

__all__ = ["DimseSender", "proposed_transfer_syntaxes"]

log = structlog.get_logger(__name__)


def proposed_transfer_syntaxes(file_syntax: UID) -> list[UID]:
    """The file's own syntax first (sent as stored), then Explicit and Implicit VR Little Endian
    (the latter is the default every SCP accepts)."""
    return list(dict.fromkeys((file_syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian)))


class DimseSender:
    def __init__(self, name: str, node: DicomNode, *, calling_ae: str) -> None:
        self.name = name
        self.node = node
        self.calling_ae = node.calling_ae_title or calling_ae
        self._peer = f"{node.ae_title}@{node.host}:{node.port}"

    def close(self) -> None:
        """Nothing to release: each send opens and releases its own association."""

    def __enter__(self) -> DimseSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, path: Path, *, job_id: str | None = None) -> DeliveryReceipt:
        sop_class, sop_instance_uid, syntax = self._file_meta(path)
        bound = log.bind(destination=self.name, job_id=job_id, sop_instance_uid=sop_instance_uid)
        try:
            detail = self._deliver(path, sop_class, syntax)
        except DeliveryError as exc:
            bound.warning("dicom.store.failed", reason=exc.reason, retryable=exc.retryable, peer=self._peer)
            raise
        bound.info("dicom.store.sent", detail=detail, peer=self._peer)
        return DeliveryReceipt(self.name, sop_instance_uid, detail)

    def _file_meta(self, path: Path) -> tuple[UID, str, UID]:
        try:
            meta = read_file_meta_info(path)
            return (
                UID(meta.MediaStorageSOPClassUID),
                str(meta.MediaStorageSOPInstanceUID),
                UID(meta.TransferSyntaxUID),
            )
        except (OSError, InvalidDicomError, AttributeError) as exc:
            raise self._error(f"cannot read the file meta of {path.name}: {exc}", retryable=False) from exc

    def echo(self) -> str:
        """C-ECHO the node as a delivery would reach it (same AE titles, TLS, timeouts); what it said,
        or DeliveryError with the same named reasons as a failed C-STORE."""
        started = time.monotonic()
        assoc = self._associate(UID(Verification), [ImplicitVRLittleEndian])
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        if "Status" not in status:
            raise self._error(f"{ConnectionOutcome.ABORTED.value} during C-ECHO ({self._peer})", True)
        code = int(status.Status)
        if code != 0x0000:
            raise self._error(f"C-ECHO answered 0x{code:04X} ({self._peer})", False)
        return f"C-ECHO success in {1000 * (time.monotonic() - started):.0f} ms"

    def _deliver(self, path: Path, sop_class: UID, syntax: UID) -> str:
        assoc = self._associate(sop_class, proposed_transfer_syntaxes(syntax))
        try:
            status = self._store(assoc, path, sop_class, syntax)
        finally:
            if assoc.is_established:
                assoc.release()
        return self._judge(status)

    def _associate(self, sop_class: UID, syntaxes: list[UID]) -> Association:
        node = self.node
        ae = identify(SenderAE(ae_title=self.calling_ae))
        for proposed in syntaxes:
            ae.add_requested_context(sop_class, proposed)  # one context each: the peer may take several
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = node.timeout_s
        tls_args = self._tls_args()
        started = time.monotonic()
        try:
            assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls_args)
        except OSError as exc:  # the host name is resolved before pynetdicom's own error handling
            outcome = ConnectionOutcome.of_connect_error(exc)
            raise self._error(f"{outcome.value} ({self._peer}): {exc}", outcome.retryable) from exc
        if not assoc.is_established:
            raise self._association_error(assoc, ae.socket, sop_class, time.monotonic() - started)
        return pause_safely(assoc)

    def _tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        node = self.node
        if not node.tls:
            return None
        try:  # built per attempt, so renewed certificate files are picked up
            context = ssl.create_default_context(cafile=node.tls_ca_file)
            if node.tls_cert_file is not None:
                context.load_cert_chain(node.tls_cert_file, node.tls_key_file)
        except (OSError, ValueError) as exc:
            raise self._error(f"cannot load the TLS files: {exc}", retryable=False) from exc
        context.sslsocket_class = TLSSocket
        return context, node.host

    def _association_error(
        self, assoc: Association, sock: SenderSocket | None, sop_class: UID, elapsed: float
    ) -> DeliveryError:
        if sock is not None and not sock.connected:
            exc = sock.connect_error
            outcome = ConnectionOutcome.of_connect_error(exc) if exc else ConnectionOutcome.NETWORK_ERROR
            return self._error(f"{outcome.value} ({self._peer}): {exc or 'no detail'}", outcome.retryable)
        answer = assoc.acceptor.primitive
        if assoc.is_rejected and answer is not None:
            rejection = Rejection(
                int(answer.result or 0), int(answer.result_source or 0), int(answer.diagnostic or 0)
            )
            return self._error(f"{rejection.describe()} ({self._peer})", rejection.retryable)
        if answer is not None and answer.result == 0:  # accepted, but none of our contexts
            reasons = sorted({ContextResult.describe_code(cx.result or 0) for cx in assoc.rejected_contexts})
            outcome = ConnectionOutcome.NO_ACCEPTED_CONTEXT
            why = ", ".join(reasons) or "none accepted"
            return self._error(
                f"{outcome.value} for {sop_class.name} ({self._peer}): {why}", outcome.retryable
            )
        if answer is None and elapsed >= self.node.timeout_s:
            outcome = ConnectionOutcome.NO_ASSOCIATION_RESPONSE
            return self._error(f"{outcome.value} within {self.node.timeout_s:g} s ({self._peer})", True)
        return self._error(f"{ConnectionOutcome.ABORTED.value} while associating ({self._peer})", True)

    def _store(self, assoc: Association, path: Path, sop_class: UID, syntax: UID) -> Dataset:
        accepted = {
            cx.transfer_syntax[0] for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class
        }
        if syntax not in accepted and (syntax.is_compressed or all(ts.is_compressed for ts in accepted)):
            offered = ", ".join(sorted(ts.name for ts in accepted)) or "nothing"
            outcome = ConnectionOutcome.NO_ACCEPTED_CONTEXT
            raise self._error(
                f"{outcome.value}: the file is {syntax.name}, {self._peer} accepted {offered}", False
            )
        started = time.monotonic()
        try:
            if syntax in accepted:
                with streaming_from_file():
                    status = assoc.send_c_store(path)
            else:  # pynetdicom re-encodes into the accepted uncompressed syntax
                status = assoc.send_c_store(dcmread(path))
        except (OSError, ValueError, AttributeError, InvalidDicomError) as exc:  # unreadable, unencodable
            raise self._error(f"cannot send {path.name}: {exc}", False) from exc
        if "Status" in status:
            return status
        if time.monotonic() - started >= self.node.timeout_s:
            outcome = ConnectionOutcome.NO_STORE_RESPONSE
            raise self._error(f"{outcome.value} within {self.node.timeout_s:g} s ({self._peer})", True)
        raise self._error(f"{ConnectionOutcome.ABORTED.value} during C-STORE ({self._peer})", True)

    def _judge(self, status: Dataset) -> str:
        """The receipt's detail for success and warnings; DeliveryError for failures."""
        code = int(status.Status)
        named = StoreStatus.of(code)
        comment = str(status.get("ErrorComment", "") or "")[:64]
        text = f"{named.value} (0x{code:04X})" + (f": {comment}" if comment else "")
        if named.category is StatusCategory.FAILURE:
            raise self._error(f"C-STORE failed with {text} ({self._peer})", named.retryable)
        if named.category is StatusCategory.WARNING:
            return f"C-STORE delivered with a warning: {text}"
        return f"C-STORE {text}"

    def _error(self, reason: str, retryable: bool) -> DeliveryError:
        return DeliveryError(reason, destination=self.name, retryable=retryable)
