"""C-STORE requests assembled from P-DATA fragments and answered without pydicom: the receive fast path.

pynetdicom's stock receive path decodes every command set with pydicom, builds primitives and
events, copies each data set into a ``BytesIO`` and hands it to another thread that polls every
millisecond; its answer is encoded with pydicom again. That per-instance work, not the socket,
limits it (performance.md §5). :class:`StoreReceiver` replaces pynetdicom's DIMSE provider for an
accepted association and takes over C-STORE requests only:

- the command set (group 0000, Implicit VR Little Endian) is parsed by :func:`parse_command`;
- each data set fragment is handed to the :class:`InstanceSink` as it arrives (it streams them into
  the spool), never joined or copied into a ``BytesIO``;
- after the last fragment the sink finishes the instance — in the DUL thread, so the answer goes
  out without a thread hand-off — and the C-STORE-RSP is built from a template.

Every other message (C-ECHO, anything unexpected) goes through pynetdicom's own provider and its
event handlers unchanged. Association negotiation, release, abort, timers and TLS stay pynetdicom's.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from service.scp_status import StoreOutcome

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = [
    "Fragment",
    "InstanceSink",
    "ReceiveStats",
    "ReceivedInstance",
    "StoreReceiver",
    "encode_store_response",
    "parse_command",
]

log = structlog.get_logger(__name__)

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
AFFECTED_SOP_CLASS_UID = 0x00000002
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
DATA_SET_TYPE = 0x00000800
AFFECTED_SOP_INSTANCE_UID = 0x00001000
MOVE_ORIGINATOR_AE_TITLE = 0x00001030

Fragment = bytes | memoryview  # a presentation data value as received (views of the PDU's bytes)

_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
_LAST_COMMAND_FRAGMENT = b"\x03"


def parse_command(encoded: bytes) -> dict[int, bytes]:
    """The elements of a command set (Implicit VR Little Endian, PS3.7 §6.3.1) by tag."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(encoded)
    while pos < end:
        if pos + 8 > end:
            raise ValueError("command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(encoded, pos)
        pos += 8
        if group != 0x0000 or pos + length > end:
            raise ValueError(f"malformed command set element ({group:04X},{element:04X})")
        elements[element] = encoded[pos : pos + length]
        pos += length
    return elements


def _us(elements: dict[int, bytes], tag: int) -> int | None:
    value = elements.get(tag)
    return _US.unpack(value)[0] if value is not None and len(value) == 2 else None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\0 ").lstrip(" ")


def _optional_text(value: bytes | None) -> str | None:
    return (_text(value) or None) if value is not None else None


def encode_store_response(
    sop_class_uid: bytes, sop_instance_uid: bytes, message_id: int, status: int, comment: str | None = None
) -> bytes:
    """A C-STORE-RSP command set; the UIDs are the request's raw (even-length) values, echoed."""
    parts = [
        (0x0002, sop_class_uid),
        (0x0100, _US.pack(C_STORE_RSP)),
        (0x0120, _US.pack(message_id)),
        (0x0800, _US.pack(NO_DATA_SET)),
        (0x0900, _US.pack(status)),
    ]
    if comment and status:  # Error Comment (0000,0902) LO, failures only
        text = comment.encode("ascii", "replace")[:64]
        parts.append((0x0902, text + b" " if len(text) % 2 else text))
    parts.append((0x1000, sop_instance_uid))
    body = b"".join(_ELEMENT.pack(0x0000, element, len(value)) + value for element, value in parts)
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _p_data(context_id: int, pdv: bytes) -> P_DATA:
    """A P-DATA primitive with one presentation data value (pynetdicom wants each as a list)."""
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, pdv]]  # type: ignore[list-item]
    return primitive


@dataclass(slots=True)
class ReceivedInstance:
    """One C-STORE request as received: its command fields, context and data set fragments."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    message_id: int
    raw_sop_class_uid: bytes
    raw_sop_instance_uid: bytes
    pending: list[Fragment] = field(default_factory=list)  # fragments the sink has not taken yet
    size: int = 0  # data set bytes received so far
    state: Any = None  # the sink's own record of this instance
    move_originator: str | None = None  # the AE whose C-MOVE this C-STORE is a sub-operation of


@dataclass(slots=True)
class ReceiveStats:
    """One association's totals, for its closing log line."""

    instances: int = 0
    bytes: int = 0
    failures: int = 0
    started: float = field(default_factory=time.monotonic)


class InstanceSink(Protocol):
    def accepting(self) -> bool:
        """False while shutting down: the association is aborted instead of receiving more."""
        ...

    def fragment(self, assoc: Association, instance: ReceivedInstance) -> None:
        """A fragment was added to ``instance.pending``: take what can be taken. Never raises."""
        ...

    def store(self, assoc: Association, instance: ReceivedInstance) -> tuple[StoreOutcome, str | None]:
        """The last fragment arrived: store durably and enqueue; the outcome and a failure comment.
        Never raises."""
        ...

    def abandon(self, instance: ReceivedInstance) -> None:
        """The association ended inside this instance: drop whatever was written of it."""
        ...


class StoreReceiver(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with C-STORE requests taken over (see the module docstring)."""

    def __init__(self, assoc: Association, sink: InstanceSink) -> None:
        super().__init__(assoc)
        self._sink = sink
        self._command: list[Fragment] = []
        self._incoming: ReceivedInstance | None = None
        self._stock = False  # a message pynetdicom's provider is assembling
        self._discard = False  # the rest of a message refused by aborting
        self._contexts: dict[int, tuple[str, str]] | None = None
        self.receiving = False  # between a C-STORE request's command and its answer
        self.stats = ReceiveStats()

    def receive_primitive(self, primitive: P_DATA) -> None:
        data: Fragment
        for context_id, data in primitive.presentation_data_value_list:
            if self._stock:
                self._to_stock(context_id, data)
            elif data[0] & 1:
                if self._incoming is not None:
                    self._protocol_error("a command arrived inside a data set")
                    return
                self._command.append(data[1:])
                if data[0] & 2:
                    self._command_complete(context_id)
            elif self._discard:
                self._discard = not data[0] & 2
            elif self._incoming is not None:
                fragment = data[1:]
                self._incoming.pending.append(fragment)
                self._incoming.size += len(fragment)
                self._sink.fragment(self.assoc, self._incoming)
                if data[0] & 2:
                    self._data_set_complete()
            else:
                self._protocol_error("a data set fragment arrived without its command")

    def _to_stock(self, context_id: int, data: Fragment) -> None:
        super().receive_primitive(_p_data(context_id, bytes(data)))
        self._stock = self.message is not None

    def _command_complete(self, context_id: int) -> None:
        encoded = b"".join(self._command)
        self._command = []
        try:
            command = parse_command(encoded)
        except ValueError as exc:
            self._protocol_error(str(exc))
            return
        if _us(command, COMMAND_FIELD) != C_STORE_RQ or _us(command, DATA_SET_TYPE) in (None, NO_DATA_SET):
            self._to_stock(context_id, _LAST_COMMAND_FRAGMENT + encoded)
            return
        context = self._context(context_id)
        message_id = _us(command, MESSAGE_ID)
        if context is None or message_id is None:
            self._protocol_error(f"C-STORE request on context {context_id} without an accepted context")
            return
        if not self._sink.accepting():
            self._discard = True
            self.assoc.abort(block=False)
            return
        raw_class = command.get(AFFECTED_SOP_CLASS_UID, b"")
        raw_instance = command.get(AFFECTED_SOP_INSTANCE_UID, b"")
        self.receiving = True
        self._incoming = ReceivedInstance(
            context_id,
            *context,
            _text(raw_class),
            _text(raw_instance),
            message_id,
            raw_class,
            raw_instance,
            move_originator=_optional_text(command.get(MOVE_ORIGINATOR_AE_TITLE)),
        )

    def _data_set_complete(self) -> None:
        instance, self._incoming = self._incoming, None
        assert instance is not None
        try:
            outcome, comment = self._sink.store(self.assoc, instance)
            if self.assoc.is_established and not self.assoc.is_aborted:
                response = encode_store_response(
                    instance.raw_sop_class_uid,
                    instance.raw_sop_instance_uid,
                    instance.message_id,
                    outcome.status,
                    comment,
                )
                self.dul.send_pdu(_p_data(instance.context_id, _LAST_COMMAND_FRAGMENT + response))
        finally:
            self.receiving = False
        if not self._sink.accepting():
            self.assoc.abort(block=False)

    def _context(self, context_id: int) -> tuple[str, str] | None:
        """(abstract syntax, transfer syntax) of an accepted presentation context."""
        if self._contexts is None:
            self._contexts = {
                int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in self.assoc.accepted_contexts
                if cx.context_id is not None and cx.abstract_syntax and cx.transfer_syntax
            }
        return self._contexts.get(context_id)

    def abandon(self) -> None:
        """The association is over: an instance still arriving is dropped (never acknowledged)."""
        instance, self._incoming = self._incoming, None
        self.receiving = False
        if instance is not None:
            self._sink.abandon(instance)

    def _protocol_error(self, reason: str) -> None:
        """A malformed or out-of-order message: abort, as pynetdicom does (Evt19, A-P-ABORT)."""
        log.warning("scp.protocol_error", reason=reason)
        self.abandon()
        self.dul.event_queue.put("Evt19")
