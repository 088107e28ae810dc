"""The Celery app: queues, reliability settings, and the broker choice.

Queues: ``mipgw.stat`` and ``mipgw.routine`` for inference (a worker consumes them in that order),
``mipgw.delivery`` for sending results, so a slow PACS never holds up inference.

Reliability: acks late and reject on a lost worker (a task killed mid-way is delivered again; tasks
are idempotent), prefetch 1 (a long 3D job never hides queued work from idle workers), and a
visibility timeout far beyond the longest task.

Broker: Redis in production (``MIPGW_BROKER_URL``). Without one, a durable SQLite broker under the
data directory (kombu's SQLAlchemy transport): a single machine needs no server, and queued work
survives a restart because it is rows in a file. That transport forgets messages a killed worker had
taken, so the job store, not the broker, is the record of work: the sweeper re-queues jobs whose
lease ran out (see :mod:`workers.tasks`).
"""

from __future__ import annotations

from celery import Celery

from config.settings import Settings
from workers.jobs import Priority
from workers.storage import DataDir

__all__ = ["DELIVERY_QUEUE", "INFERENCE_QUEUES", "broker_url", "create_celery", "inference_queue"]

INFERENCE_QUEUES = ("mipgw.stat", "mipgw.routine")
DELIVERY_QUEUE = "mipgw.delivery"


def inference_queue(priority: Priority | str) -> str:
    return "mipgw.stat" if Priority(priority) is Priority.STAT else "mipgw.routine"


def broker_url(settings: Settings) -> str:
    if settings.broker_url:
        return settings.broker_url
    return f"sqla+sqlite:///{DataDir(settings.data_dir).database_path('broker.sqlite3')}"


def create_celery(settings: Settings) -> Celery:
    broker = broker_url(settings)
    app = Celery("mipgw", broker=broker, include=["workers.tasks"])
    # Redis takes these; kombu's SQLAlchemy transport hands its options to create_engine instead
    transport_options = (
        {
            "visibility_timeout": settings.visibility_timeout_s,
            # read the queues in the order the worker lists them (stat before routine)
            "queue_order_strategy": "priority",
        }
        if broker.startswith(("redis://", "rediss://"))
        else {}
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="mipgw.routine",
        task_create_missing_queues=True,  # the three queues are declared on first use
        task_routes={
            name: {"queue": DELIVERY_QUEUE} for name in ("mipgw.deliver", "mipgw.pull", "mipgw.sweep")
        },
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_time_limit=max(60.0, settings.visibility_timeout_s - 600),
    )
    return app
