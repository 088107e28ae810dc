"""The HTTP API: STOW-RS (streamed), jobs and their SEGs, health, metrics — see :mod:`service.api.app`."""

from service.api.app import create_app
from service.api.auth import NoApiKeysError

__all__ = ["NoApiKeysError", "create_app"]
