"""What the routes share: the settings and the edges the app was created with (``app.state.context``)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from config.settings import Settings
from service.api.auth import ApiKeys
from service.api.health import Readiness
from service.api.metrics import ApiMetrics
from service.intake import Intake
from service.metrics import ReceiveCounters
from workers.pipeline import Enqueuer
from workers.storage import DataDir
from workers.store import Store

__all__ = ["ApiContext", "get_context"]


@dataclass(frozen=True, slots=True)
class ApiContext:
    settings: Settings
    data: DataDir
    store: Store
    intake: Intake
    enqueue: Enqueuer
    keys: ApiKeys | None  # None: started with --insecure-no-auth
    counters: ReceiveCounters
    readiness: Readiness
    metrics: ApiMetrics
    actor: str = "api"


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context
