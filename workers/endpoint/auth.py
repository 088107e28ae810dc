"""Request headers for an endpoint: the bearer credential, the deployment pin, extra headers.

Keys are read when needed (a rotated secret file is picked up) and never logged. Microsoft Entra
tokens come from ``azure-identity`` (the optional ``mip-gateway[azure]`` extra) and are renewed a few
minutes before they expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from config.settings import EndpointSettings

__all__ = ["EntraTokens", "HeaderSource"]

_RENEW_BEFORE_S = 300.0


class EntraTokens:
    """A cached Entra access token for one scope."""

    def __init__(
        self, scope: str, credential: Any | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        if credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError as exc:  # the extra is optional
                raise RuntimeError(
                    "Entra authentication needs the extra: pip install 'mip-gateway[azure]'"
                ) from exc
            credential = DefaultAzureCredential()
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._token = ""
        self._expires_on = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._clock() >= self._expires_on - _RENEW_BEFORE_S:
                access = self._credential.get_token(self._scope)
                self._token, self._expires_on = access.token, float(access.expires_on)
            return self._token


class HeaderSource:
    """Builds the headers of each request from the endpoint's settings."""

    def __init__(self, settings: EndpointSettings, entra: EntraTokens | None = None) -> None:
        self._settings = settings
        self._entra = entra or (EntraTokens(settings.entra_scope) if settings.entra else None)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self._settings.headers}
        secret = self._entra.token() if self._entra is not None else self._settings.api_key()
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        if self._settings.deployment:
            headers["azureml-model-deployment"] = self._settings.deployment
        return headers
