"""Bearer API keys: ``Authorization: Bearer <key>`` on every route but ``/healthz``.

Two kinds of key, from the settings:

- ``api.keys`` and the lines of ``api.keys_file`` open every route (jobs, retries, metrics, readiness,
  STOW-RS). The file is read again when its modification time changes, so a rotated key takes
  effect without a restart;
- ``api.stow_keys`` open the STOW-RS route only (a PACS or workflow engine that sends studies needs
  nothing else). Elsewhere such a key gets 403.

No key configured at all: :class:`NoApiKeysError` when the app is created, unless the operator starts
it with ``--insecure-no-auth`` (``create_app(..., allow_no_auth=True)``); then every route is open and
the start is logged as a warning. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.settings import ApiSettings
from service.api.problems import ForbiddenError, UnauthorizedError

__all__ = ["NO_KEYS", "ApiKeys", "NoApiKeysError", "Scope", "bearer_scheme", "require_key"]

NO_KEYS = (
    "no API key configured (api.keys, api.keys_file or api.stow_keys): refusing to serve an open API; "
    "configure keys, or start with --insecure-no-auth on a trusted network"
)


class NoApiKeysError(ValueError):
    """The API would be open to anyone: configure keys or pass --insecure-no-auth."""


class Scope(StrEnum):
    API = "api"  # every route
    STOW = "stow"  # the STOW-RS route


class ApiKeys:
    def __init__(
        self, keys: tuple[str, ...] = (), *, stow_keys: tuple[str, ...] = (), keys_file: Path | None = None
    ) -> None:
        self._keys = tuple(k for k in keys if k)
        self._stow_keys = tuple(k for k in stow_keys if k)
        self._keys_file = keys_file
        self._file_keys: tuple[str, ...] = ()
        self._file_stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if keys_file is not None:
            self._reload()  # a missing file fails here, at start, not at the first request

    @classmethod
    def from_settings(cls, api: ApiSettings) -> ApiKeys:
        return cls(
            tuple(k.get_secret_value().strip() for k in api.keys),
            stow_keys=tuple(k.get_secret_value().strip() for k in api.stow_keys),
            keys_file=api.keys_file,
        )

    def configured(self) -> bool:
        return bool(self._keys or self._stow_keys or self._current_file_keys())

    def check(self, token: str | None, scope: Scope) -> None:
        """Return if ``token`` opens ``scope``; raise UnauthorizedError or ForbiddenError otherwise."""
        if not token:
            raise UnauthorizedError("send 'Authorization: Bearer <key>'")
        if _matches(token, (*self._keys, *self._current_file_keys())):
            return
        if _matches(token, self._stow_keys):
            if scope is Scope.STOW:
                return
            raise ForbiddenError("this key may only store instances (STOW-RS)")
        raise UnauthorizedError("the key is not known")

    def _current_file_keys(self) -> tuple[str, ...]:
        if self._keys_file is not None:
            try:
                stat = os.stat(self._keys_file)
                stamp = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamp = None  # the file went away: keep the keys it last held
            if stamp is not None and stamp != self._file_stamp:
                self._reload()
        return self._file_keys

    def _reload(self) -> None:
        assert self._keys_file is not None
        with self._lock:
            stat = os.stat(self._keys_file)
            text = self._keys_file.read_text(encoding="utf-8")
            self._file_keys = tuple(
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            )
            self._file_stamp = (stat.st_mtime_ns, stat.st_size)


def _matches(token: str, keys: tuple[str, ...]) -> bool:
    given = token.encode()
    found = False
    for key in keys:  # no early exit: the time taken does not tell which key came close
        found |= hmac.compare_digest(given, key.encode())
    return found


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="an API key from api.keys / api.keys_file (api.stow_keys: the STOW-RS route only)",
)


def require_key(scope: Scope) -> Callable[..., None]:
    """A route dependency: the request's bearer key must open ``scope``."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    ) -> None:
        keys: ApiKeys | None = request.app.state.context.keys
        if keys is None:  # started with --insecure-no-auth
            return
        keys.check(credentials.credentials if credentials is not None else None, scope)

    return dependency
