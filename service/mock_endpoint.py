"""``mip-gateway mock-endpoint``: the MedImageParse stand-in — NOT A MODEL — over HTTP.

It speaks the exact scoring contract (``workers.endpoint.contract``) and segments by thresholding,
so the client, the pipeline and the demo can run end to end without a GPU deployment. Tests and
benchmarks import :class:`MockEndpointServer` (or :func:`create_app`) from here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import structlog

from service.mock import NOTICE, FaultPlan, FaultSpecError, MockEndpointServer, create_app
from service.mock.server import bind_socket, socket_url, uvicorn_server

__all__ = ["KEY_ENV", "FaultPlan", "FaultSpecError", "MockEndpointServer", "create_app", "run_mock_endpoint"]

KEY_ENV = "MIPGW_MOCK_KEY"

log = structlog.get_logger(__name__)


def run_mock_endpoint(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; prints ``mock endpoint listening on http://HOST:PORT`` first."""
    key = args.key or os.environ.get(KEY_ENV) or None
    try:
        faults = FaultPlan.parse(args.fault or "")
        if args.latency_ms is not None:
            faults = faults.with_latency(args.latency_ms)
    except FaultSpecError as exc:
        print(f"mip-gateway mock-endpoint: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"mip-gateway mock-endpoint: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    app = create_app(key=key, faults=faults)
    server = uvicorn_server(app, access_log=bool(getattr(args, "verbose", False)))
    # uvicorn installs its own handlers only once it runs, restores ours when it stops and then
    # re-raises the signal it caught. Ours are its own handler too, so a signal that arrives before
    # it starts still stops it, and the re-raise after a graceful stop exits with status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.handle_exit)
    url = socket_url(sock)
    log.warning(
        "mock endpoint is NOT A MODEL", notice=NOTICE, url=url, auth=key is not None, faults=faults.spec()
    )
    print(f"mock endpoint listening on {url}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
