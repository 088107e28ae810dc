"""Building the API for tests: a SQLite store, an inline queue, and (for real HTTP) uvicorn in a thread."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pydicom
import uvicorn
from fastapi import FastAPI
from pydicom.dataset import Dataset

from config.settings import Settings
from service.api import create_app
from service.completion import CompletionTracker
from service.intake import Intake
from service.metrics import ReceiveCounters
from tests.helpers import InlineQueue
from workers.storage import DataDir
from workers.store import Store, open_store

KEY = "test-key"
STOW_KEY = "test-stow-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BOUNDARY = "mipgw-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass
class ApiUnderTest:
    app: FastAPI
    settings: Settings
    store: Store
    intake: Intake
    queue: InlineQueue
    counters: ReceiveCounters

    @property
    def data(self) -> DataDir:
        return DataDir(self.settings.data_dir)


def make_api(
    tmp_path: Path,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
    allow_no_auth: bool = False,
    **overrides: Any,
) -> ApiUnderTest:
    if settings is None:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "api": {"keys": [KEY], "stow_keys": [STOW_KEY]},
            "listener": {"spool_reserve_bytes": 0},
        }
        settings = Settings(**(values | overrides))
    store = store or open_store(f"sqlite+pysqlite:///{tmp_path / 'jobs.sqlite3'}", migrate=True)
    queue = InlineQueue()
    intake = Intake(DataDir(settings.data_dir), store, queue, CompletionTracker(), actor="api")
    counters = ReceiveCounters()
    app = create_app(
        settings, store=store, intake=intake, enqueue=queue, counters=counters, allow_no_auth=allow_no_auth
    )
    return ApiUnderTest(app, settings, store, intake, queue, counters)


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: Iterable[bytes | tuple[str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A STOW-RS body; a part is its bytes (application/dicom) or (content type or None, bytes)."""
    out = bytearray()
    for part in parts:
        media, octets = part if isinstance(part, tuple) else ("application/dicom", part)
        header = f"Content-Type: {media}\r\n" if media else ""
        out += f"--{boundary}\r\n{header}\r\n".encode() + octets + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


class AsgiClient:
    """Requests to the app in process, each on its own event loop (no server, no sockets)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
                return await http.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


class ApiServer:
    """The app under uvicorn on 127.0.0.1 (a port the OS picks), in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="api-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.005)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()
