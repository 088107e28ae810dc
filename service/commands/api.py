"""``mip-gateway api``: the HTTP API (STOW-RS, jobs, health, metrics) under uvicorn.

Wires the edges from the settings — the job store (migrated), the Celery queue, the intake with its
idle timer (needed for STOW-RS) — binds the socket itself (``--port 0`` picks a free port; the URL
is printed on stdout before serving) and stops gracefully on SIGTERM or SIGINT: uvicorn stops
accepting, lets requests in flight finish (up to 30 s), then the idle timer and the store close.
Refuses to start without API keys unless ``--insecure-no-auth`` is given.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path

import structlog
import uvicorn

from config.settings import get_settings
from service.api.app import create_app
from service.api.auth import NO_KEYS, ApiKeys
from service.completion import CompletionTracker
from service.intake import Intake
from workers.celery_app import create_celery
from workers.storage import DataDir
from workers.store import database_url, open_store
from workers.tasks import CeleryEnqueuer

__all__ = ["run_api"]

log = structlog.get_logger(__name__)

_STALE_PART_S = 24 * 3600  # temp files of STOW requests a crash left behind


def run_api(args: argparse.Namespace) -> int:
    settings = get_settings()
    host = args.bind or settings.api.bind
    port = settings.api.port if args.port is None else args.port
    try:
        keys = ApiKeys.from_settings(settings.api)
    except OSError as exc:
        print(f"mip-gateway api: cannot read api.keys_file: {exc}", file=sys.stderr)
        return 2
    if not keys.configured() and not args.insecure_no_auth:
        print(f"mip-gateway api: {NO_KEYS}", file=sys.stderr)
        return 2
    data = DataDir(settings.data_dir)
    _remove_stale_parts(data)
    store = open_store(database_url(settings), migrate=True)
    intake = Intake(
        data,
        store,
        CeleryEnqueuer(create_celery(settings)),
        CompletionTracker(idle_s=settings.listener.completion_idle_s),
        actor="api",
    )
    app = create_app(
        settings, store=store, intake=intake, enqueue=intake.enqueue, allow_no_auth=args.insecure_no_auth
    )
    try:
        sock = _bind(host, port)
    except OSError as exc:
        store.close()
        print(f"mip-gateway api: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    config = uvicorn.Config(
        app,
        log_config=None,  # records go through service.logs
        access_log=False,  # the app logs one line per request, with its request id
        lifespan="off",
        timeout_graceful_shutdown=30,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    # uvicorn installs its own handlers once it runs; until then ours stop it just the same
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.handle_exit)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    print(f"mip-gateway api listening on {url}", flush=True)
    log.info("api.start", url=url, data_dir=str(settings.data_dir), auth=not args.insecure_no_auth)
    intake.start()
    try:
        server.run(sockets=[sock])
    finally:
        intake.stop()
        sock.close()
        store.close()
        log.info("api.stopped", pending_series=intake.tracker.pending())
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _remove_stale_parts(data: DataDir) -> None:
    folder: Path = data.root / "incoming" / ".stow"
    if not folder.is_dir():
        return
    cutoff = time.time() - _STALE_PART_S
    for path in folder.glob("part-*.part"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass
