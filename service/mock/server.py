"""Running the mock endpoint under uvicorn: on a socket we bind ourselves, in a thread or in front.

Binding first lets ``--port 0`` work: the OS picks the port, we know it before uvicorn starts, and
the socket is already listening, so a client that connects as soon as it reads the URL is queued
rather than refused.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn
from fastapi import FastAPI

from service.mock.app import create_app
from service.mock.faults import FaultPlan

__all__ = ["MockEndpointServer", "bind_socket", "socket_url", "uvicorn_server"]

_BACKLOG = 128


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the OS picks)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: FastAPI, *, access_log: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_config=None,  # records go to whatever the process configured (service.logs), on stderr
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=5,
        backlog=_BACKLOG,
    )
    return uvicorn.Server(config)


class MockEndpointServer:
    """The mock endpoint on 127.0.0.1 (an OS-picked port) in a background thread.

    ::

        with MockEndpointServer(key="k", faults=FaultPlan(latency_ms=50)) as mock:
            httpx.post(mock.score_url, ...)
    """

    def __init__(
        self,
        *,
        key: str | None = None,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._startup_timeout = startup_timeout
        self.app = create_app(key=key, faults=faults)
        self.server = uvicorn_server(self.app)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def score_url(self) -> str:
        return f"{self.url}/score"

    @property
    def stats_url(self) -> str:
        return f"{self.url}/stats"

    def stats(self) -> dict[str, Any]:
        """What ``GET /stats`` would answer, without a request of its own."""
        snapshot: dict[str, Any] = self.app.state.mock.stats.snapshot()
        return snapshot

    def __enter__(self) -> Self:
        self._sock = bind_socket(self._host, 0)
        self.url = socket_url(self._sock)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="mock-endpoint", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"mock endpoint did not start on {self.url}")
            time.sleep(0.005)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
