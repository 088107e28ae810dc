"""What pynetdicom 3.0 needs adapting for a sender: a named connect failure, TCP_NODELAY, streaming.

- pynetdicom logs and swallows the socket error when it cannot connect; the sockets here keep it
  (per thread: the connecting thread is the association's DUL thread) so that the failure can be
  named ("connection refused", a certificate error, ...). A TLS context gets
  ``sslsocket_class = TLSSocket`` for the same purpose.
- They set TCP_NODELAY: without it every association waits out a 40 ms delayed ACK
  (a 20 KB SEG: 60 ms → 20 ms per send on loopback).
- :func:`streaming_from_file` turns on pynetdicom's process-wide switch that sends a path's data
  set straight from the file (no decode, no re-encode), only while such a send runs.

These hooks (``AE._create_socket``, ``AssociationSocket._create_socket``) are pynetdicom internals:
the unit tests in ``tests/unit/workers/delivery/test_dimse.py`` fail loudly if an upgrade moves them.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.transport import T_CONNECT, AddressInformation, AssociationSocket

__all__ = ["SenderAE", "SenderSocket", "TLSSocket", "streaming_from_file"]

_connect_state = threading.local()  # the connecting thread is pynetdicom's DUL thread


class _RecordsConnectFailure:
    def connect(self, address: Any) -> None:
        try:
            super().connect(address)  # type: ignore[misc]
        except OSError as exc:
            _connect_state.error = exc
            raise
        _connect_state.connected = True


class _TCPSocket(_RecordsConnectFailure, socket.socket):
    pass


class TLSSocket(_RecordsConnectFailure, ssl.SSLSocket):
    pass


class SenderSocket(AssociationSocket):
    """``connected`` and ``connect_error`` tell how the connection attempt ended."""

    connected = False
    connect_error: OSError | None = None

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        plain = super()._create_socket(address)
        timeout = plain.gettimeout()
        sock = _TCPSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self, primitive: T_CONNECT) -> None:
        _connect_state.error, _connect_state.connected = None, False
        super().connect(primitive)
        self.connected, self.connect_error = _connect_state.connected, _connect_state.error


class SenderAE(AE):
    """An AE whose associations use :class:`SenderSocket`; ``socket`` is the last one made."""

    socket: SenderSocket | None = None

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: tuple[ssl.SSLContext, str] | None
    ) -> AssociationSocket:
        self.socket = SenderSocket(assoc, address=address)
        self.socket.tls_args = tls_args
        return self.socket


_streaming_lock = threading.Lock()
_streaming_users = 0
_streaming_before = False


@contextmanager
def streaming_from_file() -> Iterator[None]:
    """pynetdicom's switch (process-wide) to send a path's data set from the file, on while needed."""
    global _streaming_users, _streaming_before
    with _streaming_lock:
        if _streaming_users == 0:
            _streaming_before = _config.STORE_SEND_CHUNKED_DATASET
        _streaming_users += 1
        _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        with _streaming_lock:
            _streaming_users -= 1
            if _streaming_users == 0:
                _config.STORE_SEND_CHUNKED_DATASET = _streaming_before
