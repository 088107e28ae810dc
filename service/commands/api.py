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
import sys

import structlog

from config.settings import get_settings
from service.api.app import create_app
from service.commands.wiring import api_auth_problem, api_server, build_intake, remove_stale_stow_parts
from service.mock.server import bind_socket, socket_url
from workers.storage import DataDir
from workers.store import database_url, open_store

__all__ = ["run_api"]

log = structlog.get_logger(__name__)


def run_api(args: argparse.Namespace) -> int:
    settings = get_settings()
    host = args.bind or settings.api.bind
    port = settings.api.port if args.port is None else args.port
    if problem := api_auth_problem(settings, insecure_no_auth=args.insecure_no_auth):
        print(f"mip-gateway api: {problem}", file=sys.stderr)
        return 2
    data = DataDir(settings.data_dir)
    remove_stale_stow_parts(data)
    store = open_store(database_url(settings), migrate=True)
    intake = build_intake(settings, store, actor="api")
    app = create_app(
        settings, store=store, intake=intake, enqueue=intake.enqueue, allow_no_auth=args.insecure_no_auth
    )
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        store.close()
        print(f"mip-gateway api: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    server = api_server(app)
    # uvicorn installs its own handlers once it runs; until then ours stop it just the same
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.handle_exit)
    url = socket_url(sock)
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
