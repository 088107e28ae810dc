"""Wiring the pipeline's edges from the settings: store, rules, endpoint clients, senders, webhooks.

One :class:`WorkerContext` per process (endpoint clients and their gates are per process by design).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from config.rules_file import configured_rules_path
from config.settings import Settings
from workers.delivery import sender_for
from workers.delivery.base import Sender
from workers.delivery.webhooks import post_webhook
from workers.endpoint.client import EndpointClient
from workers.errors import DeliveryError
from workers.pipeline import Deps, Enqueuer
from workers.rules_loader import RulesSource
from workers.storage import DataDir
from workers.store import JobView, Store, database_url, open_store, worker_actor

__all__ = ["EndpointRegistry", "WorkerContext", "build_deps", "job_payload"]

log = structlog.get_logger(__name__)


@dataclass
class EndpointRegistry:
    """One client per configured endpoint name, each wired to its fallback."""

    settings: Settings
    _clients: dict[str, EndpointClient] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, name: str) -> EndpointClient:
        with self._lock:
            return self._client(name, ())

    def _client(self, name: str, seen: tuple[str, ...]) -> EndpointClient:
        if name in self._clients:
            return self._clients[name]
        if name not in self.settings.endpoints:
            raise ValueError(f"endpoint {name!r} is not configured (MIPGW_ENDPOINTS__{name.upper()}__URL)")
        endpoint = self.settings.endpoints[name]
        fallback = None
        if endpoint.fallback and endpoint.fallback not in seen:
            fallback = self._client(endpoint.fallback, (*seen, name))
        client = EndpointClient(name, endpoint, fallback=fallback)
        self._clients[name] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def job_payload(job: JobView) -> dict[str, object]:
    """What webhooks say about a job: UIDs, state, rule, error; no patient data."""
    return {
        "job_id": job.id,
        "state": str(job.state),
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
        "rule": job.rule,
        "error": job.error,
        "error_stage": str(job.error_stage) if job.error_stage else None,
        "seg_path": job.seg_path,
    }


def _notifier(settings: Settings) -> Callable[[JobView], None]:
    def notify(job: JobView) -> None:
        for hook in settings.webhooks:
            if str(job.state) in hook.events:
                try:
                    post_webhook(hook, str(job.state), job_payload(job))
                except DeliveryError as exc:  # a notification must never fail the job
                    log.warning("webhook.failed", job_id=job.id, reason=exc.reason)

    return notify


def _senders(settings: Settings) -> Callable[[str], Sender]:
    def sender(name: str) -> Sender:
        if name not in settings.destinations:
            raise DeliveryError("not configured", destination=name, retryable=False)
        return sender_for(name, settings.destinations[name], calling_ae=settings.ae_title)

    return sender


def build_deps(
    settings: Settings,
    store: Store,
    enqueue: Enqueuer,
    *,
    actor: str | None = None,
    rules: RulesSource | None = None,
) -> Deps:
    return Deps(
        settings=settings,
        data=DataDir(settings.data_dir),
        store=store,
        rules=rules or RulesSource(configured_rules_path(settings), settings=settings),
        endpoint=EndpointRegistry(settings),
        sender=_senders(settings),
        enqueue=enqueue,
        actor=actor or worker_actor(),
        notify=_notifier(settings),
    )


@dataclass
class WorkerContext:
    """The process's store and deps, opened on first use."""

    settings: Settings
    enqueue: Enqueuer
    _deps: Deps | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def deps(self) -> Deps:
        with self._lock:
            if self._deps is None:
                store = open_store(database_url(self.settings), migrate=True)
                self._deps = build_deps(self.settings, store, self.enqueue)
            return self._deps
