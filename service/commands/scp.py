"""``mip-gateway scp``: the DICOM listener (C-ECHO, C-STORE) with its intake, until SIGTERM or SIGINT.

Wires the edges from the settings — the job store (migrated), the Celery queue (Redis, or the
embedded SQLite broker under the data directory when ``broker_url`` is unset: no worker needs to
run for series to be queued), the intake with its idle timer — then listens. ``--port 0`` picks a
free port; the address is printed on stdout once listening. SIGTERM or SIGINT: stop accepting,
let each association finish the instance in flight (stored and answered), abort the rest, stop the
idle timer, close the store.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from types import FrameType

import structlog
from pydantic import ValidationError

from config.settings import ListenerSettings, Settings, get_settings
from service.commands.wiring import build_intake
from service.scp import DicomListener
from workers.storage import DataDir
from workers.store import database_url, open_store

__all__ = ["build_intake", "run_scp", "settings_for"]

log = structlog.get_logger(__name__)


def settings_for(settings: Settings, *, port: int | None, bind: str | None, ae_title: str | None) -> Settings:
    """The settings with the command line's overrides, validated as the settings are."""
    listener = settings.listener.model_dump()
    if port is not None:
        listener["port"] = port
    if bind is not None:
        listener["bind"] = bind
    update: dict[str, object] = {"listener": ListenerSettings.model_validate(listener)}
    if ae_title is not None:
        if not 1 <= len(ae_title.strip()) <= 16:
            raise ValueError("--ae-title must be 1 to 16 characters")
        update["ae_title"] = ae_title.strip()
    return settings.model_copy(update=update)


def run_scp(args: argparse.Namespace) -> int:
    try:
        settings = settings_for(get_settings(), port=args.port, bind=args.bind, ae_title=args.ae_title)
    except (ValueError, ValidationError) as exc:
        print(f"mip-gateway scp: {exc}", file=sys.stderr)
        return 2
    # pynetdicom narrates every association at INFO; the listener logs its own lines
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    data = DataDir(settings.data_dir)
    store = open_store(database_url(settings), migrate=True)
    intake = build_intake(settings, store, actor="scp")
    listener = DicomListener(settings, intake, data)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        listener.start()
    except (OSError, ValueError) as exc:
        store.close()
        print(
            f"mip-gateway scp: cannot listen on {settings.listener.bind}:{settings.listener.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(
        f"mip-gateway scp {settings.ae_title} listening on {settings.listener.bind}:{listener.port}",
        flush=True,
    )
    intake.start()
    gc.freeze()  # what start-up allocated is never garbage: keep it out of every later collection
    try:
        while not stop.wait(1.0):
            pass
        log.info("scp.stopping")
    finally:
        listener.stop()
        intake.stop()
        store.close()
        log.info("scp.exit", pending_series=intake.tracker.pending())
    return 0
