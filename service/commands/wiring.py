"""Edges the long-running commands (``scp``, ``api``, ``serve``) wire the same way from the settings.

One intake per process: ``serve`` hands the same one to the listener and the API, so both share the
store, the completion tracker and the Celery enqueuer.
"""

from __future__ import annotations

import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from config.rules_file import configured_rules_path
from config.settings import Settings
from service.api.auth import NO_KEYS, ApiKeys
from service.completion import CompletionTracker
from service.idle_policy import RuleIdlePolicy
from service.intake import Intake
from workers.celery_app import create_celery
from workers.storage import DataDir
from workers.store import Store
from workers.tasks import CeleryEnqueuer

__all__ = ["api_auth_problem", "api_config", "api_server", "build_intake", "remove_stale_stow_parts"]

_STALE_PART_S = 24 * 3600  # temp files of STOW requests a crash left behind


def build_intake(settings: Settings, store: Store, *, actor: str) -> Intake:
    """The intake the listener and the API hand received series to: store, queue, idle timers.

    The rules are read here too: a rule may set its own idle timer (``completion_idle_s``)."""
    data = DataDir(settings.data_dir)
    policy = RuleIdlePolicy(configured_rules_path(settings), data)
    return Intake(
        data,
        store,
        CeleryEnqueuer(create_celery(settings)),
        CompletionTracker(idle_s=settings.listener.completion_idle_s, policy=policy),
        actor=actor,
    )


def api_auth_problem(settings: Settings, *, insecure_no_auth: bool) -> str | None:
    """Why the API must not start (keys unreadable, or none and no ``--insecure-no-auth``), or None."""
    try:
        keys = ApiKeys.from_settings(settings.api)
    except OSError as exc:
        return f"cannot read api.keys_file: {exc}"
    if not keys.configured() and not insecure_no_auth:
        return NO_KEYS
    return None


def api_config(app: FastAPI) -> uvicorn.Config:
    """uvicorn's configuration for the gateway's API on a socket the caller binds."""
    return uvicorn.Config(
        app,
        log_config=None,  # records go through service.logs
        access_log=False,  # the app logs one line per request, with its request id
        lifespan="off",
        timeout_graceful_shutdown=30,  # requests in flight (STOW uploads) get this long to finish
        proxy_headers=False,
    )


def api_server(app: FastAPI) -> uvicorn.Server:
    """uvicorn for the gateway's API (``server.run(sockets=[sock])``)."""
    return uvicorn.Server(api_config(app))


def remove_stale_stow_parts(data: DataDir) -> None:
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
