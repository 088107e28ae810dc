"""pynetdicom's association server with the listener's receive path plugged in.

Through pynetdicom's own extension points (``AE.make_server(server_class=..., request_handler=...)``)
each accepted connection gets:

- :class:`ListenerAssociation`: an acceptor whose DIMSE provider is :class:`StoreReceiver`;
- :class:`_Socket`: reads a PDU with ``recv_into`` in a few calls instead of 4 KB ``recv`` calls
  (reserving memory as the bytes arrive, not as the peer's PDU header claims),
  and waits for data in ``select`` (up to 1 ms) instead of sleeping 1 ms between polls, so the next
  request is read as soon as it arrives;
- :class:`_DUL`: a P-DATA-TF PDU is split into its presentation data values as views of the bytes
  received (no copy, no PDU item objects, no per-PDU events); every other PDU is decoded by
  pynetdicom as before;
- its TLS handshake in its own thread (pynetdicom wraps sockets in the accept loop, where one slow
  or plain-TCP client holds up everyone's connection);
- an end hook (:meth:`ConnectionHooks.association_ended`) that runs once the association's
  thread has finished, however it ended;
- a cap on open connections (:meth:`ListenerServer.verify_request`): beyond it a new connection is
  closed in the accept loop, before a thread exists for it.

pynetdicom's per-PDU logging handlers are unbound (they format every PDU even when not logged).
Relies on pynetdicom 3.0 internals (the version is pinned); tests/integration/test_listener.py runs
real dcmtk peers against it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import ssl
import struct
import threading
import uuid
from datetime import datetime
from typing import Any, Protocol

import structlog
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from service.scp_dimse import InstanceSink, StoreReceiver

__all__ = ["ConnectionHooks", "ListenerAssociation", "ListenerServer"]

log = structlog.get_logger(__name__)

_POLL_S = 0.001
_TLS_HANDSHAKE_S = 10.0
_LOG_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT)


def _unbind_log_handlers(target: Association | ThreadedAssociationServer) -> None:
    """Drop pynetdicom's standard logging handlers (bound to servers and associations alike)."""
    for event in _LOG_EVENTS:
        for handler, _ in list(target.get_handlers(event)):  # type: ignore[misc]
            if getattr(handler, "__module__", "") == "pynetdicom._handlers":
                target.unbind(event, handler)


class ConnectionHooks(InstanceSink, Protocol):
    def association_ended(self, assoc: ListenerAssociation) -> None:
        """Called once per connection, after its association thread finished."""
        ...

    def connection_dropped(self, peer: str) -> None:
        """A connection over the cap was closed at once (in the accept loop: must not block)."""
        ...


class ListenerAssociation(Association):
    """An acceptor association with an id for logs and completion, and the fast C-STORE path."""

    def __init__(self, ae: Any, mode: str, sink: InstanceSink) -> None:
        super().__init__(ae, mode)
        self.association_id = uuid.uuid4().hex[:12]
        self.receiver = StoreReceiver(self, sink)
        self.dimse = self.receiver
        self.dul = _DUL(self)
        self.dul._run_loop_delay = 0.0  # the socket's select() waits instead (see _Socket.ready)
        # the timeouts live in the DUL's timers: set them again on the new one
        self.acse_timeout = ae.acse_timeout
        self.connection_timeout = ae.connection_timeout
        self.dimse_timeout = ae.dimse_timeout
        self.network_timeout = ae.network_timeout
        _unbind_log_handlers(self)
        self.admitted = False
        self.accepted = False
        self.released = False
        self.calling_ae = ""
        self.log: Any = log

    @property
    def receiving(self) -> bool:
        """Between a C-STORE request's command and the answer to it."""
        return self.receiver.receiving


class _PDataTF(P_DATA_TF):
    """A received P-DATA-TF whose values are views of the PDU's bytes."""

    def __init__(self, values: list[tuple[int, memoryview]]) -> None:
        super().__init__()
        self._values = values

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        primitive._presentation_data_value_list = self._values  # type: ignore[assignment]
        return primitive


_FIRST_RESERVE = 1 << 20  # bytes reserved for a PDU before more of it has arrived
_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IB")


class _DUL(DULServiceProvider):
    _awaiting_request = True  # no A-ASSOCIATE-RQ PDU yet: the acceptor is waiting for one

    def _read_pdu_data(self) -> None:
        sock = self.socket
        assert isinstance(sock, _Socket)
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError):
            header = bytearray()
        if len(header) < 6:
            self._closed()
            return
        if header[0] != 0x04:
            sock.unread(header)  # anything but P-DATA-TF: pynetdicom's own reader and decoder
            super()._read_pdu_data()
            if sock.peer_closed:  # it has signalled Evt17
                self._wake_acceptor()
            elif header[0] == 0x01:
                self._awaiting_request = False
            return
        _, length = _PDU_HEADER.unpack(header)
        try:
            body = sock.recv(length)
        except (OSError, TimeoutError):
            body = bytearray()
        if len(body) != length:
            self._closed()
            return
        values = _split_pdvs(body)
        if values is None:
            log.warning("scp.invalid_pdu", reason="malformed P-DATA-TF")
            self.event_queue.put("Evt19")  # unrecognised or invalid PDU
            return
        self.event_queue.put("Evt10")
        self._recv_pdu.put(_PDataTF(values))

    def _closed(self) -> None:
        """The peer closed the connection (Evt17). Before any association request, also wake the
        acceptor: pynetdicom's waits for the request until acse_timeout (30 s) regardless, which holds
        the connection's thread and DicomListener.stop() — a TCP health check or port scan would
        delay every shutdown by the grace period. None is what its wait returns on timeout."""
        self.event_queue.put("Evt17")
        self._wake_acceptor()

    def _wake_acceptor(self) -> None:
        if self._awaiting_request:
            self._awaiting_request = False
            self.to_user_queue.put(None)


def _split_pdvs(body: bytearray) -> list[tuple[int, memoryview]] | None:
    """The (context ID, value) items of a P-DATA-TF body, or None when they do not add up."""
    view = memoryview(body)
    values, pos, end = [], 0, len(body)
    while pos < end:
        if pos + 6 > end:
            return None
        item_length, context_id = _PDV_HEADER.unpack_from(body, pos)
        if item_length < 2 or pos + 4 + item_length > end:
            return None
        values.append((context_id, view[pos + 5 : pos + 4 + item_length]))
        pos += 4 + item_length
    return values or None


class _Socket(AssociationSocket):
    _pushed_back = b""
    peer_closed = False  # a read came up short: the peer closed the connection

    def unread(self, data: bytes | bytearray) -> None:
        """Give bytes back: the next ``recv`` returns them first."""
        self._pushed_back = bytes(data) + self._pushed_back

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if self._pushed_back:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], _POLL_S)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        return bool(readable)

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        # The length comes from the peer's PDU header, before anyone is authenticated: reserve memory
        # as the bytes arrive (doubling), never the 4 GiB a 6-byte header can claim.
        buffer = bytearray(min(nr_bytes, _FIRST_RESERVE))
        got = min(len(self._pushed_back), nr_bytes)
        if got:
            buffer[:got] = self._pushed_back[:got]
            self._pushed_back = self._pushed_back[got:]
        while got < nr_bytes:
            if got == len(buffer):
                buffer.extend(bytes(min(len(buffer), nr_bytes - got)))
            with memoryview(buffer) as view:
                count = sock.recv_into(view[got:], len(buffer) - got)
            if not count:
                break
            got += count
        if got < nr_bytes:
            self.peer_closed = True
            del buffer[got:]  # the peer closed: the caller sees the short read
        return buffer


class _RequestHandler(RequestHandler):
    server: ListenerServer

    def handle(self) -> None:
        self.server.track(threading.current_thread())
        if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
            return
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()
        self.server.hooks.association_ended(assoc)

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        sock.settimeout(_TLS_HANDSHAKE_S)
        try:
            sock.do_handshake()
        except (OSError, ValueError) as exc:
            log.warning("scp.tls_handshake_failed", peer=self.client_address[0], error=str(exc))
            with contextlib.suppress(OSError):
                sock.close()
            return False
        sock.settimeout(None)
        return True

    def _create_association(self) -> ListenerAssociation:
        # pynetdicom's RequestHandler._create_association, with the listener's classes
        assoc = ListenerAssociation(self.ae, "acceptor", self.server.hooks)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(_Socket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # shared, not deep-copied (0.18 s per association): negotiation only reads them
        assoc.acceptor.supported_contexts = self.server.contexts
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
        return assoc


class ListenerServer(ThreadedAssociationServer):
    """The association server: our request handler, no per-PDU logging, shut down by the listener."""

    daemon_threads = True  # the listener joins them itself, with a deadline
    block_on_close = False

    def __init__(self, *args: Any, hooks: ConnectionHooks, max_connections: int, **kwargs: Any) -> None:
        self.hooks = hooks
        self.max_connections = max_connections
        self._threads_lock = threading.Lock()
        self._request_threads: set[threading.Thread] = set()
        self._connections = 0  # accepted and not yet finished, counted before their thread starts
        kwargs["request_handler"] = _RequestHandler
        super().__init__(*args, **kwargs)
        _unbind_log_handlers(self)

    def service_actions(self) -> None:
        """Nothing: pynetdicom's runs a full ``gc.collect()`` every 60 polls, a pause of up to a second in
        a process holding pydicom, SQLAlchemy and Celery; the collector's own thresholds suffice."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context:  # handshake later, in the connection's own thread
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """A connection over the cap is closed at once, in the accept loop: a peer opening thousands
        of idle connections costs no threads (each would wait up to the ACSE timeout for its
        association request) and no memory."""
        with self._threads_lock:
            if self._connections >= self.max_connections:
                full = True
            else:
                self._connections += 1
                full = False
        if full:
            self.hooks.connection_dropped(str(client_address[0]))
        return not full

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (the process is out of them): not counted
            with self._threads_lock:
                self._connections -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._threads_lock:
                self._connections -= 1

    def connections(self) -> int:
        with self._threads_lock:
            return self._connections

    def track(self, thread: threading.Thread) -> None:
        with self._threads_lock:
            self._request_threads = {t for t in self._request_threads if t.is_alive()}
            self._request_threads.add(thread)

    def request_threads(self) -> list[threading.Thread]:
        with self._threads_lock:
            return [t for t in self._request_threads if t.is_alive()]

    def shutdown(self) -> None:
        self.stop_accepting()

    def stop_accepting(self) -> None:
        """Leave the accept loop and close the listening socket; running associations go on."""
        socketserver.BaseServer.shutdown(self)  # stop serve_forever (pynetdicom's also edits the AE)
        try:
            assert self.socket is not None
            self.socket.close()
        except OSError:
            pass
