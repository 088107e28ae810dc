"""Liveness and readiness: ``GET /healthz`` (the process answers; no key) and ``GET /readyz``.

Readiness runs every check at once, each with a short timeout, and answers 503 when any fails:

- ``broker``: Redis answers PING; the embedded SQLite broker's file (or its folder, before the first
  message) is writable; any other broker URL accepts a TCP connection;
- ``database``: ``SELECT 1`` on the job store;
- ``spool``: a temp file can be created, written, synced and removed in the incoming area;
- ``endpoint:<name>``: each configured segmentation endpoint's origin answers HTTP at all (any
  status counts: a 401 or 404 still proves the network path and TLS).

:class:`BrokerProbe` also reads queue depths for ``/metrics``.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, text

from config.settings import Settings
from service.api.auth import Scope, require_key
from service.api.problems import problem_responses
from workers.storage import DataDir
from workers.store import Store

__all__ = ["BrokerProbe", "CheckResult", "Readiness", "http_origin_check", "router"]

_TIMEOUT_S = 2.0
_REDIS_PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport keeps priorities 3, 6, 9 in sibling lists


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float


class BrokerProbe:
    """Reachability and queue depths of the Celery broker (Redis, the SQLite file, or anything else)."""

    def __init__(self, url: str, *, timeout_s: float = _TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.scheme = urlsplit(url).scheme
        self._lock = threading.Lock()
        self._redis: Any = None
        self._sqlite: Engine | None = None

    @property
    def sqlite_path(self) -> Path | None:
        if self.scheme != "sqla+sqlite":
            return None
        return Path(self.url.split(":///", 1)[1])

    def check(self) -> str:
        """A short description of what answered; raises on failure."""
        if self.scheme in ("redis", "rediss", "unix"):
            self._client().ping()
            return "redis answered PING"
        path = self.sqlite_path
        if path is not None:
            target = path if path.exists() else path.parent
            if not os.access(target, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
                raise PermissionError(f"{target} is not writable")
            return f"{path.name} writable"
        parts = urlsplit(self.url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"cannot check a {self.scheme} broker without host and port")
        with socket.create_connection((parts.hostname, parts.port), timeout=self.timeout_s):
            return f"{parts.hostname}:{parts.port} accepts connections"

    def queue_depths(self, queues: tuple[str, ...]) -> dict[str, int]:
        """Messages waiting per queue (Redis lists, or visible rows of the SQLite broker)."""
        if self.scheme in ("redis", "rediss", "unix"):
            pipe = self._client().pipeline()
            for queue in queues:
                for key in _redis_keys(queue):
                    pipe.llen(key)
            sizes = pipe.execute()
            per = len(_redis_keys(""))
            return {q: int(sum(sizes[i * per : (i + 1) * per])) for i, q in enumerate(queues)}
        if self.sqlite_path is not None:
            depths = dict.fromkeys(queues, 0)
            if not self.sqlite_path.exists():
                return depths
            statement = text(
                "SELECT q.name, COUNT(m.id) FROM kombu_queue q JOIN kombu_message m ON m.queue_id = q.id"
                " WHERE m.visible GROUP BY q.name"
            )
            with self._sqlite_engine().connect() as connection:
                for name, count in connection.execute(statement):
                    if name in depths:
                        depths[name] = int(count)
            return depths
        raise ValueError(f"queue depth is not available for a {self.scheme} broker")

    def _client(self) -> Any:
        with self._lock:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(
                    self.url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s
                )
            return self._redis

    def _sqlite_engine(self) -> Engine:
        with self._lock:
            if self._sqlite is None:
                self._sqlite = create_engine(
                    f"sqlite+pysqlite:///{self.sqlite_path}", connect_args={"timeout": self.timeout_s}
                )
            return self._sqlite


def _redis_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{_REDIS_PRIORITY_SEP}{step}" for step in (3, 6, 9))]


class Readiness:
    def __init__(self, settings: Settings, store: Store, broker: BrokerProbe) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.data = DataDir(settings.data_dir)

    def checks(self) -> dict[str, Callable[[], str]]:
        checks: dict[str, Callable[[], str]] = {
            "broker": self.broker.check,
            "database": self._database,
            "spool": self._spool,
        }
        for name, endpoint in self.settings.endpoints.items():
            checks[f"endpoint:{name}"] = http_origin_check(str(endpoint.url))
        return checks

    def run(self, deadline_s: float = 2 * _TIMEOUT_S) -> list[CheckResult]:
        """Every check at once; one that has not answered by the deadline counts as failed."""
        checks = self.checks()
        pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="mipgw-ready")
        try:
            futures = {name: pool.submit(_timed, name, check) for name, check in checks.items()}
            wait(futures.values(), timeout=deadline_s)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return [
            future.result()
            if future.done()
            else CheckResult(name, False, f"no answer within {deadline_s:g} s", deadline_s)
            for name, future in futures.items()
        ]

    def _database(self) -> str:
        with self.store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return f"{self.store.dialect} answered SELECT 1"

    def _spool(self) -> str:
        incoming = self.data.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=incoming, prefix=".readyz.", suffix=".part") as fh:
            fh.write(b"ready")
            fh.flush()
            os.fsync(fh.fileno())
        return f"{incoming} writable"


def http_origin_check(url: str, timeout_s: float = _TIMEOUT_S) -> Callable[[], str]:
    """A check that the URL's origin answers HTTP at all (any status proves the path and TLS)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}/"

    def check() -> str:
        response = httpx.get(origin, timeout=timeout_s, follow_redirects=False)
        return f"{origin} answered HTTP {response.status_code}"

    return check


def _timed(name: str, check: Callable[[], str]) -> CheckResult:
    start = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as exc:  # a readiness check reports, it never raises
        detail, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", False
    return CheckResult(name, ok, detail, round(time.perf_counter() - start, 4))


class CheckModel(BaseModel):
    name: str
    ok: bool
    detail: str
    seconds: float


class ReadinessModel(BaseModel):
    status: str
    checks: list[CheckModel]


class Liveness(BaseModel):
    status: str


router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness, summary="the process answers (no key needed)")
def healthz() -> Liveness:
    return Liveness(status="alive")


@router.get(
    "/readyz",
    response_model=ReadinessModel,
    summary="broker, database, spool and endpoints reachable",
    dependencies=[Depends(require_key(Scope.API))],
    responses={
        503: {"model": ReadinessModel, "description": "at least one check failed"},
        **problem_responses(401, 403),
    },
)
def readyz(request: Request) -> JSONResponse:
    results = request.app.state.context.readiness.run()
    ok = all(result.ok for result in results)
    body = ReadinessModel(
        status="ready" if ok else "not ready",
        checks=[CheckModel(name=r.name, ok=r.ok, detail=r.detail, seconds=r.seconds) for r in results],
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
