"""``mip-gateway worker``: a Celery worker on the gateway's queues, with the sweeper beside it."""

from __future__ import annotations

import argparse
import socket
import threading

import structlog
from celery.signals import worker_ready, worker_shutting_down

from config.settings import get_settings
from service.parent_death import stop_with_parent
from workers.celery_app import DELIVERY_QUEUE, INFERENCE_QUEUES, create_celery

__all__ = ["run_worker"]

log = structlog.get_logger(__name__)


def run_worker(args: argparse.Namespace) -> int:
    if stop_with_parent():
        log.debug("worker.stops_with_parent")
    settings = get_settings()
    app = create_celery(settings)
    queues = {
        "all": [*INFERENCE_QUEUES, DELIVERY_QUEUE],
        "inference": list(INFERENCE_QUEUES),
        "delivery": [DELIVERY_QUEUE],
    }[args.queues]
    stop = threading.Event()

    def sweeper(**_: object) -> None:
        # after the pool has forked: the sweeper's store connection stays in this process
        from workers.sweeper import sweep
        from workers.tasks import worker_context

        def loop() -> None:
            while not stop.is_set():
                try:
                    sweep(worker_context().deps())
                except Exception:  # the sweeper must outlive a bad minute
                    log.exception("sweep.failed")
                stop.wait(settings.sweep_interval_s)

        threading.Thread(target=loop, name="mipgw-sweeper", daemon=True).start()

    worker_ready.connect(sweeper, weak=False)
    worker_shutting_down.connect(lambda **_: stop.set(), weak=False)
    name = args.name or f"mipgw@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            f"--concurrency={args.concurrency}",
            f"--hostname={name}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
